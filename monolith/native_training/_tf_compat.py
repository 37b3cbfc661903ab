"""The one place where monolith-tf touches private TensorFlow APIs.

TensorFlow has no public way to ask "is the graph being built right now going
to be compiled by XLA?" (`tf.function(jit_compile=True)`,
`tf.xla.experimental.compile`, TPU rewrites). The combiners need the answer:
the fastest CPU kernels (`SegmentSum`, `RaggedTensorToTensor`) have no XLA
kernel, so under XLA another formulation is used.

`tf.function(jit_compile=True)` traces its Python function inside an
`XLAControlFlowContext`; `control_flow_util.GraphOrParentsInXlaContext` finds it
on the graph being built or on any graph it is nested in. If a future
TensorFlow moves that helper, `in_xla_context` answers `True` whenever a graph
is being built, so the caller picks the formulation that compiles everywhere
(correct, only slower); eager execution is never compiled, so it answers
`False` there.
"""

import tensorflow as tf

# Private API, isolated here on purpose.
# pylint: disable=g-direct-tensorflow-import,g-import-not-at-top
try:
  from tensorflow.python.framework import ops as _ops
  from tensorflow.python.ops import control_flow_util as _cf_util
  _graph_in_xla_context = _cf_util.GraphOrParentsInXlaContext
  _get_default_graph = _ops.get_default_graph
except (ImportError, AttributeError):  # pragma: no cover - depends on TF.
  _graph_in_xla_context = None
  _get_default_graph = None
# pylint: enable=g-direct-tensorflow-import,g-import-not-at-top


def xla_detection_available() -> bool:
  """Whether `in_xla_context` can really tell (else it assumes XLA)."""
  return _graph_in_xla_context is not None


def in_xla_context() -> bool:
  """Returns whether ops created now will be compiled by XLA.

  Returns:
    `False` in eager mode; in graph mode, whether the graph being built (or a
    graph it is nested in) is an XLA compilation context. When the private
    TensorFlow helper is unavailable, `True` in graph mode (conservative).
  """
  if tf.executing_eagerly():
    return False
  if _graph_in_xla_context is None:  # pragma: no cover - depends on TF.
    return True
  try:
    return bool(_graph_in_xla_context(_get_default_graph()))
  except Exception:  # pylint: disable=broad-except  # pragma: no cover
    return True
