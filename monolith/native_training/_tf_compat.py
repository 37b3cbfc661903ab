"""The one place where monolith-tf touches private TensorFlow APIs.

TensorFlow has no public way to ask "is the graph being built right now going
to be compiled by XLA?" (`tf.function(jit_compile=True)`,
`tf.xla.experimental.compile`, TPU rewrites). The combiners need the answer:
the fastest CPU kernels (`SegmentSum`, `RaggedTensorToTensor`) have no XLA
kernel, so under XLA another formulation is used.

`tf.function(jit_compile=True)` traces its Python function inside an
`XLAControlFlowContext`; `control_flow_util.GraphOrParentsInXlaContext` finds it
on the graph being built or on any graph it is nested in. If a future
TensorFlow moves that helper, `xla_context_state` answers `None` ("cannot
tell") whenever a graph is being built, and `in_xla_context` answers `True`
there, so the caller picks the formulation that compiles everywhere (correct,
only slower); eager execution is never compiled, so both answer `False`
there.

Neither is there a public way to read the device scope (`tf.device`) that
eager ops run under; `eager_device_name` reads it from the eager context
(`None` when that moves).
"""

from typing import Optional

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

try:
  from tensorflow.python.eager import context as _eager_context
  _eager_context_fn = _eager_context.context
except (ImportError, AttributeError):  # pragma: no cover - depends on TF.
  _eager_context_fn = None
# pylint: enable=g-direct-tensorflow-import,g-import-not-at-top


def xla_detection_available() -> bool:
  """Whether `in_xla_context` can really tell (else it assumes XLA)."""
  return _graph_in_xla_context is not None


def xla_context_state() -> Optional[bool]:
  """Returns whether ops created now will be compiled by XLA, if known.

  Returns:
    `False` in eager mode; in graph mode, whether the graph being built (or a
    graph it is nested in) is an XLA compilation context, or `None` when the
    private TensorFlow helper is unavailable (cannot tell).
  """
  if tf.executing_eagerly():
    return False
  if _graph_in_xla_context is None:
    return None
  try:
    return bool(_graph_in_xla_context(_get_default_graph()))
  except Exception:  # pylint: disable=broad-except  # pragma: no cover
    return None


def in_xla_context() -> bool:
  """Returns whether ops created now will be compiled by XLA.

  Returns:
    `False` in eager mode; in graph mode, whether the graph being built (or a
    graph it is nested in) is an XLA compilation context. When the private
    TensorFlow helper is unavailable, `True` in graph mode (conservative).
  """
  state = xla_context_state()
  return True if state is None else state


def eager_device_name() -> Optional[str]:
  """The device scope eager ops run under now ("" for none), if readable.

  Returns:
    The `tf.device` scope of the eager context, e.g.
    "/job:localhost/replica:0/task:0/device:CPU:0", "" when no device is
    requested, or `None` when TensorFlow's private eager context is
    unavailable.
  """
  if _eager_context_fn is None:  # pragma: no cover - depends on TF.
    return None
  try:
    return _eager_context_fn().device_name or ""
  except Exception:  # pylint: disable=broad-except  # pragma: no cover
    return None
