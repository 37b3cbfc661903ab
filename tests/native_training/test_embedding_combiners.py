"""Tests of monolith.native_training.embedding_combiners.

Every expectation comes from a NumPy float64 reference on random ragged inputs
with empty rows (leading, inner and trailing), plus the literal cases of
monolith's own `embedding_combiners_test.py`. The main matrix is
combiner x embedding dtype x execution mode (eager, tf.function with unknown
shapes, tf.function(jit_compile=True), TF1 graph + Session), each checking the
output and the gradient w.r.t. the embedding.

GPU-only tests (class `GpuTest`) are skipped when no GPU is visible.
"""

import collections
import os
import subprocess
import sys
from unittest import mock

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from monolith.native_training import _tf_compat
from monolith.native_training import embedding_combiner_ops as combiner_ops
from monolith.native_training import embedding_combiners as ec
from tests.native_training import combiner_reference as cref


def _configure_two_logical_cpus():
  """Splits the CPU into 2 logical devices for the MirroredStrategy test.

  Only possible before TensorFlow initializes its devices; returns whether
  two logical CPUs are (or will be) available.
  """
  cpu = tf.config.list_physical_devices("CPU")[0]
  try:
    configured = tf.config.get_logical_device_configuration(cpu)
    if configured is None or len(configured) < 2:
      tf.config.set_logical_device_configuration(
          cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    return True
  except RuntimeError:  # Devices already initialized by another test module.
    return False


_TWO_CPUS_CONFIGURED = _configure_two_logical_cpus()

_COMBINERS = ("sum", "mean", "sqrtn", "first3")
# The kernel each combiner's CPU formulation is built around.
_CPU_KERNEL = {
    "sum": "SegmentSum",
    "mean": "SegmentMean",
    "sqrtn": "SegmentSum",
    "first3": "RaggedTensorToTensor",
}
# Ops without an XLA kernel.
_NO_XLA_KERNEL = ("SegmentSum", "SegmentMean",
                  "SparseSegmentSqrtNWithNumSegments", "RaggedTensorToTensor",
                  "RaggedTensorToSparse")
_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
_MODES = ("eager", "function", "xla", "graph")
_DIM = cref.DIM


def _matrix():
  """combiner x dtype x mode; int32 / int64 row splits alternate."""
  cases = []
  for ki, kind in enumerate(_COMBINERS):
    for di, dtype in enumerate(_DTYPES):
      for mi, mode in enumerate(_MODES):
        splits_dtype = (tf.int32, tf.int64)[(ki + di + mi) % 2]
        cases.append((f"_{kind}_{dtype.name}_{mode}_{splits_dtype.name}", kind,
                      dtype, mode, splits_dtype))
  return cases


class CombinerTest(tf.test.TestCase, parameterized.TestCase):
  """Results and gradients vs NumPy, and monolith's literal cases."""

  def _random_case(self, kind, dtype, seed, nrows=9, max_len=6, dim=_DIM):
    rng = np.random.default_rng(seed)
    lengths = cref.random_lengths(rng, nrows, max_len)
    emb = cref.round_to(rng.standard_normal((int(lengths.sum()), dim)), dtype)
    out_shape = cref.np_combine(kind, lengths, emb).shape
    cot = cref.round_to(rng.standard_normal(out_shape), dtype)
    return lengths, emb, cot

  @parameterized.named_parameters(*_matrix())
  def test_matches_numpy(self, kind, dtype, mode, splits_dtype):
    lengths, emb, cot = self._random_case(kind, dtype, seed=len(kind))
    out, grad = cref.run_combiner(mode, cref.plain_combine(kind), lengths, emb,
                                  cot, dtype, splits_dtype)
    tol = cref.tolerance(dtype)
    self.assertAllClose(out,
                        cref.np_combine(kind, lengths, emb),
                        rtol=tol,
                        atol=tol)
    self.assertAllClose(grad,
                        cref.np_grad(kind, lengths, emb, cot),
                        rtol=tol,
                        atol=tol)
    self.assertFalse(np.isnan(out).any())

  @parameterized.product(kind=_COMBINERS,
                         mode=_MODES,
                         lengths=([0, 0, 0], [], [0, 3, 0]))
  def test_empty_rows_and_batches(self, kind, mode, lengths):
    rng = np.random.default_rng(3)
    emb = rng.standard_normal((sum(lengths), _DIM))
    ref = cref.np_combine(kind, lengths, emb)
    cot = rng.standard_normal(ref.shape)
    out, grad = cref.run_combiner(mode, cref.plain_combine(kind), lengths, emb,
                                  cot, tf.float32)
    cref.assert_matches_numpy(self, kind, lengths, emb, cot, out, grad)

  @parameterized.product(kind=_COMBINERS, splits_dtype=(tf.int32, tf.int64))
  def test_unknown_embedding_dim_in_graph_mode(self, kind, splits_dtype):
    lengths, emb, cot = self._random_case(kind, tf.float32, seed=7)
    out, grad = cref.run_combiner("graph",
                                  cref.plain_combine(kind),
                                  lengths,
                                  emb,
                                  cot,
                                  tf.float32,
                                  splits_dtype,
                                  unknown_dim=True)
    self.assertAllClose(out, cref.np_combine(kind, lengths, emb), atol=1e-5)
    self.assertAllClose(grad, cref.np_grad(kind, lengths, emb, cot), atol=1e-5)

  @parameterized.product(kind=("sum", "mean", "sqrtn"),
                         mode=_MODES,
                         ragged_weights=(False, True))
  def test_weights(self, kind, mode, ragged_weights):
    lengths, emb, cot = self._random_case(kind, tf.float32, seed=11)
    rng = np.random.default_rng(5)
    weights = rng.uniform(-1, 2, size=len(emb)).astype(np.float32)
    weights = weights.astype(np.float64)
    # A non-empty row whose weights sum to 0 (mean: 0 / 0) and one with all
    # weights 0 (sqrtn: 0 / 0).
    splits = np.concatenate([[0], np.cumsum(lengths)])
    first_long = int(np.argmax(lengths >= 2))
    weights[splits[first_long]:splits[first_long] + 2] = [1.5, -1.5]
    weights[splits[first_long] + 2:splits[first_long + 1]] = 0
    nonempty = [r for r in range(len(lengths)) if lengths[r] and r != 1]
    weights[splits[nonempty[-1]]:splits[nonempty[-1] + 1]] = 0
    out, grad = cref.run_combiner(mode,
                                  cref.weighted_combine(kind),
                                  lengths,
                                  emb,
                                  cot,
                                  tf.float32,
                                  weights=weights,
                                  ragged_weights=ragged_weights)
    self.assertAllClose(out,
                        cref.np_combine(kind, lengths, emb, weights),
                        rtol=1e-5,
                        atol=1e-5)
    self.assertAllClose(grad,
                        cref.np_grad(kind, lengths, emb, cot, weights),
                        rtol=1e-5,
                        atol=1e-5)
    self.assertFalse(np.isnan(out).any())

  @parameterized.product(kind=_COMBINERS, xla=(False, True))
  def test_gradient_check(self, kind, xla):
    lengths, emb, _ = self._random_case(kind,
                                        tf.float64,
                                        seed=13,
                                        nrows=5,
                                        dim=2)
    splits = tf.constant(np.concatenate([[0], np.cumsum(lengths)]))
    combiner = cref.make_combiner(kind)

    def f(e):
      key = tf.RaggedTensor.from_row_splits(tf.range(tf.shape(e)[0]), splits)
      return combiner.combine(key, e)

    if xla:
      f = tf.function(f, jit_compile=True)
    theoretical, numerical = tf.test.compute_gradient(f, [tf.constant(emb)])
    self.assertAllClose(theoretical[0], numerical[0], rtol=1e-6, atol=1e-6)

  @parameterized.product(kind=("sum", "mean", "sqrtn"))
  def test_weighted_gradient_check(self, kind):
    lengths, emb, _ = self._random_case(kind,
                                        tf.float64,
                                        seed=17,
                                        nrows=5,
                                        dim=2)
    splits = tf.constant(np.concatenate([[0], np.cumsum(lengths)]))
    weights = tf.constant(np.random.default_rng(1).uniform(0.5, 2, len(emb)))
    combiner = cref.make_combiner(kind)

    def f(e, w):
      key = tf.RaggedTensor.from_row_splits(tf.range(tf.shape(e)[0]), splits)
      return combiner.combine(key, e, weights=w)

    theoretical, numerical = tf.test.compute_gradient(
        f, [tf.constant(emb), weights])
    for t, n in zip(theoretical, numerical):
      self.assertAllClose(t, n, rtol=1e-6, atol=1e-6)

  @parameterized.parameters(*_COMBINERS)
  def test_xla_with_static_shapes(self, kind):
    """jit_compile traced with concrete shapes (FirstN's gather formulation)."""
    for lengths in ([0, 0, 0], [], [0, 3, 0], [2], [0, 5, 1, 0]):
      rng = np.random.default_rng(len(lengths))
      emb = rng.standard_normal((sum(lengths), _DIM))
      ref = cref.np_combine(kind, lengths, emb)
      cot = rng.standard_normal(ref.shape)
      combiner = cref.make_combiner(kind)

      @tf.function(jit_compile=True)
      def f(key, e, c):
        with tf.GradientTape() as tape:
          tape.watch(e)
          out = combiner.combine(key, e)  # pylint: disable=cell-var-from-loop
          loss = tf.reduce_sum(out * c)
        return out, tape.gradient(loss, e)

      key = tf.RaggedTensor.from_row_lengths(
          tf.range(sum(lengths), dtype=tf.int64), lengths)
      out, grad = f(key, tf.constant(emb), tf.constant(cot))
      self.assertAllClose(out, ref)
      self.assertAllClose(grad, cref.np_grad(kind, lengths, emb, cot))

  @parameterized.product(kind=_COMBINERS, splits_dtype=(tf.int32, tf.int64))
  def test_portable_formulation_on_cpu(self, kind, splits_dtype):
    """The portable (XLA) formulation outside XLA gives the same results."""
    lengths, emb, cot = self._random_case(kind, tf.float32, seed=19)
    combiner = cref.make_combiner(kind, portable=True)
    for mode in ("eager", "function", "graph"):
      out, grad = cref.run_combiner(mode,
                                    lambda k, e, w: combiner.combine(k, e),
                                    lengths, emb, cot, tf.float32, splits_dtype)
      self.assertAllClose(out, cref.np_combine(kind, lengths, emb), atol=1e-5)
      self.assertAllClose(grad,
                          cref.np_grad(kind, lengths, emb, cot),
                          atol=1e-5)

  @parameterized.product(kind=_COMBINERS, splits_dtype=(tf.int32, tf.int64))
  def test_gpu_formulation_on_cpu(self, kind, splits_dtype):
    """The GPU formulation (forced on the CPU) gives the same results."""
    lengths, emb, cot = self._random_case(kind, tf.float32, seed=21)
    with mock.patch.object(combiner_ops, "_gpu_available", lambda: True):
      for mode in ("eager", "function", "graph"):
        out, grad = cref.run_combiner(mode, cref.plain_combine(kind), lengths,
                                      emb, cot, tf.float32, splits_dtype)
        self.assertAllClose(out, cref.np_combine(kind, lengths, emb), atol=1e-5)
        self.assertAllClose(grad,
                            cref.np_grad(kind, lengths, emb, cot),
                            atol=1e-5)

  # monolith's embedding_combiners_test.py cases.

  def test_reduce_sum(self):
    key = tf.RaggedTensor.from_row_lengths([1, 2, 3], [1, 2])
    emb = [[1.0], [2.0], [3.0]]
    self.assertAllEqual(ec.ReduceSum().combine(key, emb), [[1.0], [5.0]])

  def test_first_n(self):
    key = tf.RaggedTensor.from_row_lengths([1, 2, 3, 4, 5, 6], [1, 2, 3])
    emb = [[1.0], [2.0], [3.0], [4.0], [5.0], [6.0]]
    self.assertAllEqual(
        ec.FirstN(2).combine(key, emb),
        [[[1.0], [0.0]], [[2.0], [3.0]], [[4.0], [5.0]]])

  def test_unknown_shape(self):
    with tf.Graph().as_default():
      key = tf.compat.v1.ragged.placeholder(tf.int64, 1, [])
      emb = tf.compat.v1.placeholder(tf.float32, [None, 6])
      self.assertEqual(
          ec.FirstN(2).combine(key, emb).shape.as_list(), [None, 2, 6])
      for combiner in (ec.ReduceSum(), ec.ReduceMean(), ec.ReduceSqrtN()):
        self.assertEqual(combiner.combine(key, emb).shape.as_list(), [None, 6])
      out, lengths = ec.FirstN(2).combine_with_lengths(key, emb)
      self.assertEqual(out.shape.as_list(), [None, 2, 6])
      self.assertEqual(lengths.shape.as_list(), [None])

  def test_function_with_ragged_signature(self):
    spec = tf.RaggedTensorSpec([None, None], tf.int64, 1)

    @tf.function(input_signature=[spec, tf.TensorSpec([None, 6])])
    def f(key, emb):
      out = ec.FirstN(2).combine(key, emb)
      self.assertEqual(out.shape.as_list(), [None, 2, 6])
      return out

    key = tf.RaggedTensor.from_row_lengths(tf.range(3, dtype=tf.int64),
                                           [1, 2, 0])
    out = f(key, tf.ones([3, 6]))
    self.assertAllEqual(out[:, :, 0], [[1, 0], [1, 1], [0, 0]])

  # API.

  def test_max_seq_length(self):
    self.assertEqual(ec.ReduceSum().max_seq_length, 0)
    self.assertEqual(ec.ReduceMean().max_seq_length, 0)
    self.assertEqual(ec.ReduceSqrtN().max_seq_length, 0)
    self.assertEqual(ec.FirstN(7).max_seq_length, 7)
    self.assertEqual(ec.FirstN(np.int64(3)).max_seq_length, 3)
    with self.assertRaises(TypeError):
      ec.Combiner(0)  # pylint: disable=abstract-class-instantiated

  def test_subclass(self):

    class Max(ec.Combiner):

      def __init__(self):
        super().__init__(0)

      def combine(self, key, embedding, name=None):
        return tf.reduce_max(tf.RaggedTensor.from_row_splits(
            embedding, key.row_splits),
                             axis=1)

    key = tf.RaggedTensor.from_row_lengths([1, 2, 3], [1, 2])
    self.assertAllEqual(Max().combine(key, [[1.0], [3.0], [2.0]]),
                        [[1.0], [3.0]])

  def test_combine_with_lengths(self):
    key = tf.RaggedTensor.from_row_lengths(tf.range(7), [0, 1, 4, 2, 0])
    emb = tf.reshape(tf.range(7, dtype=tf.float32), [7, 1])
    out, lengths = ec.FirstN(2).combine_with_lengths(key, emb)
    self.assertAllEqual(out, ec.FirstN(2).combine(key, emb))
    self.assertAllEqual(lengths, [0, 1, 2, 2, 0])
    self.assertEqual(lengths.dtype, tf.int64)

  def test_inputs_as_lists_and_numpy(self):
    key = tf.RaggedTensor.from_row_lengths([1, 2, 3], [1, 0, 2])
    for emb in ([[1.0], [2.0],
                 [4.0]], np.array([[1.0], [2.0],
                                   [4.0]]), tf.Variable([[1.0], [2.0], [4.0]])):
      self.assertAllClose(ec.ReduceMean().combine(key, emb), [[1], [0], [3]])
      self.assertAllClose(
          ec.ReduceSum().combine(key, emb, weights=[1.0, 1.0, 0.5]),
          [[1], [0], [4]])
    out = ec.ReduceSum().combine(key, np.array([[1.0], [2.0], [4.0]]))
    self.assertEqual(out.dtype, tf.float64)

  def test_gradient_through_variable(self):
    key = tf.RaggedTensor.from_row_lengths([1, 2, 3], [1, 0, 2])
    var = tf.Variable([[1.0], [2.0], [4.0]])
    for combiner, expected in ((ec.ReduceMean(), [[1], [0.5], [0.5]]),
                               (ec.FirstN(1), [[1], [1], [0]])):
      with tf.GradientTape() as tape:
        loss = tf.reduce_sum(combiner.combine(key, var))
      self.assertAllClose(tape.gradient(loss, var), expected)

  @parameterized.parameters(*_COMBINERS)
  def test_graph_mode_with_variables(self, kind):
    """TF1 graph: key and embedding read from variables, tf.gradients."""
    lengths, emb, cot = self._random_case(kind, tf.float32, seed=41)
    splits = np.concatenate([[0], np.cumsum(lengths)])
    for xla in (False, True):
      with tf.Graph().as_default():
        splits_var = tf.compat.v1.Variable(splits, use_resource=True)
        ids_var = tf.compat.v1.Variable(np.arange(len(emb)), use_resource=True)
        emb_var = tf.compat.v1.Variable(emb.astype(np.float32),
                                        use_resource=True)

        def f():
          key = tf.RaggedTensor.from_row_splits(ids_var.read_value(),
                                                splits_var.read_value(),
                                                validate=False)
          out = cref.make_combiner(kind).combine(key, emb_var)
          return out, tf.gradients(tf.reduce_sum(out * cot), emb_var)[0]

        if xla:
          out, grad = tf.function(f, jit_compile=True)()
        else:
          out, grad = f()
        with tf.compat.v1.Session() as sess:
          sess.run(tf.compat.v1.global_variables_initializer())
          out, grad = sess.run([out, grad])
      self.assertAllClose(out, cref.np_combine(kind, lengths, emb), atol=1e-5)
      self.assertAllClose(grad,
                          cref.np_grad(kind, lengths, emb, cot),
                          atol=1e-5)

  def test_name_scope(self):
    with tf.Graph().as_default():
      key = tf.compat.v1.ragged.placeholder(tf.int64, 1, [])
      emb = tf.compat.v1.placeholder(tf.float32, [None, 3])
      self.assertTrue(ec.ReduceSum().combine(key,
                                             emb).name.startswith("ReduceSum/"))
      self.assertTrue(ec.ReduceMean().combine(
          key, emb).name.startswith("ReduceMean/"))
      self.assertTrue(ec.ReduceSqrtN().combine(
          key, emb).name.startswith("ReduceSqrtN/"))
      self.assertTrue(ec.FirstN(2).combine(key, emb).name.startswith("FirstN/"))
      self.assertTrue(
          ec.FirstN(2).combine(key, emb, name="seq").name.startswith("seq/"))
      self.assertTrue(ec.ReduceSum().combine(key, emb,
                                             "pool").name.startswith("pool/"))

  def test_first_n_memory_is_bounded_by_the_output(self):
    """4096 rows, one of 300,000 ids, dim 64: no [nrows, 300000, dim]."""
    nrows, long_len, dim, n = 4096, 300_000, 64, 2
    lengths = np.ones(nrows, np.int64)
    lengths[17] = long_len
    lengths[-1] = 0
    nvals = int(lengths.sum())
    emb = tf.random.stateless_normal([nvals, dim], seed=[1, 2])
    key = tf.RaggedTensor.from_row_lengths(tf.range(nvals, dtype=tf.int64),
                                           lengths)
    splits = np.concatenate([[0], np.cumsum(lengths)])
    cot = tf.ones([nrows, n, dim])
    for fn in (ec.FirstN(n).combine,
               tf.function(ec.FirstN(n).combine, jit_compile=True)):
      with tf.GradientTape() as tape:
        tape.watch(emb)
        out = fn(key, emb)
        loss = tf.reduce_sum(out * cot)
      grad = tape.gradient(loss, emb)
      self.assertEqual(out.shape, (nrows, n, dim))
      emb_np = emb.numpy()
      self.assertAllEqual(out[17], emb_np[splits[17]:splits[17] + 2])
      self.assertAllEqual(out[16, 0], emb_np[splits[16]])
      self.assertAllEqual(out[16, 1], np.zeros(dim))
      self.assertAllEqual(out[-1], np.zeros((n, dim)))
      grad_rows = tf.reduce_sum(grad, axis=1).numpy()
      self.assertEqual(grad_rows[splits[17] + 1], dim)
      self.assertEqual(grad_rows[splits[17] + 2:splits[18]].sum(), 0)
      self.assertEqual(grad_rows.sum(), dim * (nrows - 2 + 2))

  # Formulation choice.

  def test_xla_context_detection(self):
    self.assertTrue(_tf_compat.xla_detection_available())
    self.assertFalse(_tf_compat.in_xla_context())
    seen = {}

    def probe(name):
      seen[name] = _tf_compat.in_xla_context()
      return tf.constant(1.0)

    tf.function(lambda: probe("function"))()
    tf.function(lambda: probe("xla"), jit_compile=True)()
    tf.function(lambda: tf.function(lambda: probe("nested"))(),
                jit_compile=True)()
    with tf.Graph().as_default():
      probe("graph")
    self.assertEqual(seen, {
        "function": False,
        "xla": True,
        "nested": True,
        "graph": False
    })

  def test_xla_detection_fallback_keeps_run_time_checks(self):
    """Without the private helper: portable ops, run-time checks kept."""
    with mock.patch.object(_tf_compat, "_graph_in_xla_context", None):
      self.assertFalse(_tf_compat.xla_context_state())
      self.assertFalse(_tf_compat.in_xla_context())
      with tf.Graph().as_default():
        self.assertIsNone(_tf_compat.xla_context_state())
        self.assertTrue(_tf_compat.in_xla_context())
      for kind in _COMBINERS:
        lengths, emb, cot = self._random_case(kind, tf.float32, seed=43)
        for mode in ("function", "graph", "xla"):
          out, grad = cref.run_combiner(mode, cref.plain_combine(kind), lengths,
                                        emb, cot, tf.float32)
          self.assertAllClose(out,
                              cref.np_combine(kind, lengths, emb),
                              atol=1e-5)
          self.assertAllClose(grad,
                              cref.np_grad(kind, lengths, emb, cot),
                              atol=1e-5)
        types = self._op_types(cref.make_combiner(kind), jit_compile=False)
        self.assertIn("Assert", types)
        self.assertNoneIn(_NO_XLA_KERNEL, types)
        for mode in ("function", "graph"):
          with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                      "one row per id"):
            cref.run_combiner(mode, cref.plain_combine(kind), lengths, emb[:-1],
                              cot, tf.float32)

  def assertNoneIn(self, members, container):  # pylint: disable=invalid-name
    self.assertEqual(sorted(set(members) & set(container)), [])

  def _op_types(self, combiner, jit_compile, backward=True, dim=4):
    spec = tf.RaggedTensorSpec([None, None], tf.int64, 1)

    def f(key, emb):
      if not backward:
        return combiner.combine(key, emb)
      with tf.GradientTape() as tape:
        tape.watch(emb)
        out = combiner.combine(key, emb)
      return out, tape.gradient(out, emb)

    graph_def = tf.function(f, jit_compile=jit_compile).get_concrete_function(
        spec, tf.TensorSpec([None, dim])).graph.as_graph_def()
    types = [node.op for node in graph_def.node]
    for fn in graph_def.library.function:
      types += [node.op for node in fn.node_def]
    return types

  @parameterized.parameters(*_COMBINERS)
  def test_xla_formulation_avoids_ops_without_xla_kernel(self, kind):
    types = self._op_types(cref.make_combiner(kind), jit_compile=True)
    self.assertNoneIn(_NO_XLA_KERNEL, types)
    self.assertNotIn("Assert", types)  # XLA ignores it, with a warning.
    if tf.config.list_logical_devices("GPU"):
      return
    types = self._op_types(cref.make_combiner(kind), jit_compile=False)
    self.assertIn(_CPU_KERNEL[kind], types)
    self.assertIn("Assert", types)

  @parameterized.parameters(*_COMBINERS)
  def test_portable_formulation_has_xla_kernels_only(self, kind):
    """portable=True / portable_formulation(): compiles anywhere, later."""
    for portable in (True, False):
      combiner = cref.make_combiner(kind, portable=portable)
      self.assertEqual(combiner.portable, portable)
      if portable:
        types = self._op_types(combiner, jit_compile=False)
      else:
        with ec.portable_formulation():
          types = self._op_types(combiner, jit_compile=False)
      self.assertNoneIn(_NO_XLA_KERNEL, types)
      self.assertIn("Assert", types)  # Checks outside XLA.
    # The context manager ends with its block.
    types = self._op_types(cref.make_combiner(kind), jit_compile=False)
    if not tf.config.list_logical_devices("GPU"):
      self.assertIn(_CPU_KERNEL[kind], types)

  @parameterized.parameters(*_COMBINERS)
  def test_portable_must_be_a_bool(self, kind):
    with self.assertRaisesRegex(TypeError, "portable must be a bool"):
      cref.make_combiner(kind, portable="yes")

  def test_mean_forward_costs_no_more_than_sum(self):
    """CPU: SegmentMean divides as it reduces; the rest is the sum's."""
    if tf.config.list_logical_devices("GPU"):
      self.skipTest("CPU formulation")
    mean = collections.Counter(
        self._op_types(ec.ReduceMean(), False, backward=False))
    total = collections.Counter(
        self._op_types(ec.ReduceSum(), False, backward=False))
    # One SegmentMean where the sum has a SegmentSum (one for the whole batch,
    # one per half of the rows for large batches), nothing else.
    kernels = total["SegmentSum"]
    self.assertGreaterEqual(kernels, 1)
    self.assertEqual(mean - total, {"SegmentMean": kernels})
    self.assertEqual(total - mean, {"SegmentSum": kernels})

  def test_sqrtn_forward_is_the_sum_and_one_scaling(self):
    """CPU: SegmentSum, then one [nrows, dim] Mul by rsqrt(row length)."""
    if tf.config.list_logical_devices("GPU"):
      self.skipTest("CPU formulation")
    sqrtn = collections.Counter(
        self._op_types(ec.ReduceSqrtN(), False, backward=False))
    total = collections.Counter(
        self._op_types(ec.ReduceSum(), False, backward=False))
    self.assertEqual(total - sqrtn, {})
    extra = sqrtn - total
    # One scaling per SegmentSum (whole batch, or each half of the rows).
    self.assertEqual(extra["Mul"], total["SegmentSum"])
    self.assertEqual(extra["Rsqrt"], total["SegmentSum"])
    self.assertNoneIn(["RealDiv", "SparseSegmentSqrtNWithNumSegments"], extra)

  def test_select_formulation(self):
    """The decision table (no GPU needed to test the GPU branches)."""

    def no_call():
      raise AssertionError("GPU visibility asked although the device is known")

    cpu, gpu, xla = combiner_ops.CPU, combiner_ops.GPU, combiner_ops.XLA  # pylint: disable=protected-access
    select = combiner_ops._select_formulation  # pylint: disable=protected-access
    cases = [
        # in_xla, portable, device type, GPU visible -> kind, checks
        ((True, False, None, no_call), (xla, False)),
        ((True, True, "GPU", no_call), (xla, False)),
        ((None, False, "CPU", no_call), (xla, True)),  # Cannot tell.
        ((False, True, "CPU", no_call), (xla, True)),
        ((False, False, "CPU", no_call), (cpu, True)),  # Pinned to the CPU.
        ((False, False, "GPU", no_call), (gpu, True)),
        ((False, False, "TPU", no_call), (xla, True)),
        ((False, False, None, lambda: True), (gpu, True)),
        ((False, False, None, lambda: False), (cpu, True)),
    ]
    for args, (kind, checks) in cases:
      form = select(*args)
      self.assertEqual((form.kind, form.checks), (kind, checks), args)

  @parameterized.parameters(*_COMBINERS)
  def test_placement_decides_the_formulation(self, kind):
    """On a (pretend) GPU machine, ops pinned to a CPU get the CPU ops."""
    with mock.patch.object(combiner_ops, "_gpu_available", lambda: True):
      with tf.Graph().as_default():
        key = tf.compat.v1.ragged.placeholder(tf.int64, 1, [])
        emb = tf.compat.v1.placeholder(tf.float32, [None, 4])
        with tf.device("/CPU:0"):
          pinned = cref.make_combiner(kind).combine(key, emb, name="pinned")
          tf.gradients(pinned, emb)
        free = cref.make_combiner(kind).combine(key, emb, name="free")
        tf.gradients(free, emb)
        ops = tf.compat.v1.get_default_graph().get_operations()
      pinned_types = [op.type for op in ops if "pinned" in op.name]
      free_types = [op.type for op in ops if "free" in op.name]
      self.assertIn(_CPU_KERNEL[kind], pinned_types)
      self.assertIn("RaggedTensorToSparse", pinned_types)
      self.assertNotIn("RaggedTensorToSparse", free_types)
      self.assertNotIn("RaggedTensorToTensor", free_types)
      # Eager: the device scope of the eager context.
      chosen = []
      select = combiner_ops._select_formulation  # pylint: disable=protected-access

      def spy(*args):
        chosen.append(select(*args).kind)
        return select(*args)

      key = tf.RaggedTensor.from_row_lengths(tf.range(3), [2, 1])
      with mock.patch.object(combiner_ops, "_select_formulation", spy):
        with tf.device("/CPU:0"):
          cref.make_combiner(kind).combine(key, tf.ones([3, 2]))
        cref.make_combiner(kind).combine(key, tf.ones([3, 2]))
      self.assertEqual(chosen, [combiner_ops.CPU, combiner_ops.GPU])  # pylint: disable=protected-access

  @parameterized.parameters(*_COMBINERS)
  def test_row_ids_do_not_depend_on_the_longest_row(self, kind):
    """value_rowids() builds a [nrows, longest row] mask; ours is O(ids)."""
    types = self._op_types(cref.make_combiner(kind), jit_compile=False)
    self.assertNotIn("SequenceMask", types)
    self.assertNotIn("Tile", types)
    self.assertNotIn("BroadcastTo", types)

  # Bad input.

  @parameterized.parameters(0, -1, 2.0, "2", None, True)
  def test_first_n_bad_seq_length(self, seq_length):
    with self.assertRaisesRegex(ValueError, "seq_length"):
      ec.FirstN(seq_length)

  @parameterized.parameters(*_COMBINERS)
  def test_key_not_ragged(self, kind):
    combiner = cref.make_combiner(kind)
    for key in (tf.constant([[1, 2]]), [[1, 2]], tf.sparse.from_dense([[1,
                                                                        2]])):
      with self.assertRaisesRegex(TypeError, "RaggedTensor"):
        combiner.combine(key, [[1.0], [2.0]])

  @parameterized.parameters(*_COMBINERS)
  def test_bad_ranks(self, kind):
    combiner = cref.make_combiner(kind)
    key2 = tf.RaggedTensor.from_nested_row_lengths([1, 2], [[2], [1, 1]])
    with self.assertRaisesRegex(ValueError, "ragged_rank"):
      combiner.combine(key2, [[1.0], [2.0]])
    key = tf.RaggedTensor.from_row_lengths([1, 2], [1, 1])
    with self.assertRaisesRegex(ValueError, "rank 2"):
      combiner.combine(key, [1.0, 2.0])
    with self.assertRaisesRegex(ValueError, "rank 2"):
      combiner.combine(key, tf.ones([2, 1, 1]))
    with self.assertRaisesRegex(TypeError, "float"):
      combiner.combine(key, tf.constant([[1], [2]]))

  @parameterized.parameters(*_COMBINERS)
  def test_embedding_rows_mismatch_static(self, kind):
    key = tf.RaggedTensor.from_row_lengths([1, 2, 3], [1, 2])
    with self.assertRaisesRegex(ValueError, r"2 rows.*3 ids"):
      cref.make_combiner(kind).combine(key, [[1.0], [2.0]])

  @parameterized.product(kind=_COMBINERS, mode=("function", "graph"))
  def test_embedding_rows_mismatch_at_run_time(self, kind, mode):
    lengths, emb, cot = self._random_case(kind, tf.float32, seed=23)
    with self.assertRaisesRegex(
        tf.errors.InvalidArgumentError,
        r"one row per id.*embedding rows:\] \[%d\].*number of ids:\] \[%d\]" %
        (len(emb) - 1, len(emb))):
      cref.run_combiner(mode, cref.plain_combine(kind), lengths, emb[:-1], cot,
                        tf.float32)

  @parameterized.product(kind=("sum", "mean", "sqrtn"))
  def test_weights_mismatch(self, kind):
    combiner = cref.make_combiner(kind)
    key = tf.RaggedTensor.from_row_lengths([1, 2, 3], [1, 2])
    emb = [[1.0], [2.0], [3.0]]
    with self.assertRaisesRegex(ValueError, "weights"):
      combiner.combine(key, emb, weights=[1.0, 2.0])
    with self.assertRaisesRegex(ValueError, "weights"):
      combiner.combine(key, emb, weights=[[1.0, 2.0, 3.0]])
    other = tf.RaggedTensor.from_row_lengths([1.0, 2.0, 3.0], [2, 1])
    with self.assertRaisesRegex(ValueError, "partition"):
      combiner.combine(key, emb, weights=other)
    other = tf.RaggedTensor.from_row_lengths([1.0, 2.0, 3.0], [2, 1, 0])
    with self.assertRaisesRegex(ValueError, "partition"):
      combiner.combine(key, emb, weights=other)
    with self.assertRaisesRegex(TypeError, "weights"):
      combiner.combine(key, emb, weights=tf.constant([1, 2, 3]))

  @parameterized.product(kind=("sum", "mean", "sqrtn"),
                         ragged_weights=(False, True))
  def test_weights_mismatch_at_run_time(self, kind, ragged_weights):
    lengths, emb, cot = self._random_case(kind, tf.float32, seed=29)
    weights = np.ones(len(emb) - 1)
    if ragged_weights:
      lengths = lengths.copy()
      lengths[1] -= 1
    else:
      weights = np.ones(len(emb) + 1)

    def combine(key, e, w):
      if ragged_weights:
        splits = np.concatenate([[0], np.cumsum(lengths)])
        w = tf.RaggedTensor.from_row_splits(w,
                                            tf.cast(splits,
                                                    key.row_splits.dtype),
                                            validate=False)
      return cref.make_combiner(kind).combine(key, e, weights=w)

    full_lengths = self._random_case(kind, tf.float32, seed=29)[0]
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "weights"):
      cref.run_combiner("function",
                        combine,
                        full_lengths,
                        emb,
                        cot,
                        tf.float32,
                        weights=weights)


class _Pooler(tf.Module):
  """A module whose tf.function pools rows of its table with every combiner."""

  def __init__(self, table, portable):
    super().__init__()
    self.table = tf.Variable(table)
    self._combiners = [
        cref.make_combiner(k, portable=portable) for k in _COMBINERS
    ]

  @tf.function(input_signature=[tf.RaggedTensorSpec([None, None], tf.int64, 1)])
  def __call__(self, ids):
    emb = tf.gather(self.table, ids.values)
    return [c.combine(ids, emb) for c in self._combiners]


class PortableTest(tf.test.TestCase, parameterized.TestCase):
  """Graphs traced outside XLA, compiled by XLA later."""

  def _check_compiled(self, call, var, lengths, ids):
    """Calls `call(key)` under jit_compile; checks outputs and gradients.

    Args:
      call: `call(key)` returns the outputs of the combiners of `_COMBINERS`,
        pooling rows `key.values` of `var`.
      var: the table variable.
      lengths: row lengths of `key`.
      ids: the ids of `key`.
    """
    key = tf.RaggedTensor.from_row_lengths(tf.constant(ids), lengths)

    @tf.function(jit_compile=True)
    def compiled(key):
      with tf.GradientTape() as tape:
        outs = call(key)
        loss = tf.add_n([tf.reduce_sum(o) for o in outs])
      return outs, tf.convert_to_tensor(tape.gradient(loss, var))

    outs, grad = compiled(key)
    table = var.numpy()
    emb = table[ids]
    want_grad = np.zeros_like(table)
    for kind, out in zip(_COMBINERS, outs):
      self.assertAllClose(out, cref.np_combine(kind, lengths, emb), atol=1e-5)
      np.add.at(want_grad, ids,
                cref.np_grad(kind, lengths, emb, np.ones(out.shape)))
    self.assertAllClose(grad, want_grad, atol=1e-5)

  def _case(self):
    rng = np.random.default_rng(47)
    table = rng.standard_normal((20, _DIM)).astype(np.float32)
    lengths = [2, 0, 5, 1, 0]
    ids = rng.integers(0, 20, size=sum(lengths))
    return table, lengths, ids

  @parameterized.parameters("argument", "context")
  def test_saved_model_compiled_after_loading(self, how):
    """Exported outside XLA (here: on a CPU), compiled after loading."""
    table, lengths, ids = self._case()
    path = os.path.join(self.get_temp_dir(), how)
    if how == "argument":
      tf.saved_model.save(_Pooler(table, portable=True), path)
    else:
      with ec.portable_formulation():
        tf.saved_model.save(_Pooler(table, portable=False), path)
    loaded = tf.saved_model.load(path)
    self._check_compiled(loaded, loaded.table, lengths, ids)

  def test_function_traced_outside_xla_then_compiled(self):
    table, lengths, ids = self._case()
    combiners = [cref.make_combiner(k, portable=True) for k in _COMBINERS]
    var = tf.Variable(table)

    @tf.function
    def pool(key):
      emb = tf.gather(var, key.values)
      return [c.combine(key, emb) for c in combiners]

    key = tf.RaggedTensor.from_row_lengths(tf.constant(ids), lengths)
    pool(key)  # Traced (and run) outside XLA first.
    self._check_compiled(pool, var, lengths, ids)


def _mirrored_check():
  """Returns (replica results, single-device results) of every combiner."""
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  rng = np.random.default_rng(31)
  lengths = cref.random_lengths(rng, nrows=12)
  emb = rng.standard_normal((int(lengths.sum()), _DIM)).astype(np.float32)
  key = tf.RaggedTensor.from_row_lengths(tf.range(len(emb), dtype=tf.int64),
                                         lengths)
  emb = tf.constant(emb)

  def step(key, emb):
    results = []
    for kind in _COMBINERS:
      with tf.GradientTape() as tape:
        tape.watch(emb)
        out = cref.make_combiner(kind).combine(key, emb)
        loss = tf.reduce_sum(out * out)
      results += [out, tape.gradient(loss, emb)]
    return results

  @tf.function
  def replicated():
    return strategy.run(step, args=(key, emb))

  per_replica = [[r.numpy()
                  for r in strategy.experimental_local_results(x)]
                 for x in replicated()]
  single = [x.numpy() for x in tf.function(step)(key, emb)]
  return per_replica, single


class MirroredStrategyTest(tf.test.TestCase):

  def test_two_replicas_match_single_device(self):
    if (not _TWO_CPUS_CONFIGURED or
        len(tf.config.list_logical_devices("CPU")) < 2):
      # TensorFlow was initialized before this module could split the CPU:
      # run the check in a fresh interpreter.
      proc = subprocess.run([sys.executable, __file__, "--mirrored"],
                            capture_output=True,
                            text=True,
                            check=False)
      self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
      return
    per_replica, single = _mirrored_check()
    for replicas, expected in zip(per_replica, single):
      self.assertLen(replicas, 2)
      for r in replicas:
        self.assertAllClose(r, expected, rtol=1e-6, atol=1e-6)


@parameterized.parameters(*_COMBINERS)
class GpuTest(tf.test.TestCase, parameterized.TestCase):
  """GPU-only: every op on /GPU:0 (soft placement off), results as on CPU."""

  def setUp(self):
    super().setUp()
    if not tf.config.list_logical_devices("GPU"):
      self.skipTest("GPU-only test: no GPU visible")

  def _run(self, kind, device):
    rng = np.random.default_rng(37)
    lengths = cref.random_lengths(rng, nrows=64, max_len=40)
    emb = rng.standard_normal((int(lengths.sum()), 16)).astype(np.float32)
    with tf.device(device):
      key = tf.RaggedTensor.from_row_lengths(tf.range(len(emb), dtype=tf.int64),
                                             lengths)
      emb = tf.constant(emb)
      combiner = cref.make_combiner(kind)

      @tf.function
      def step(key, emb):
        with tf.GradientTape() as tape:
          tape.watch(emb)
          out = combiner.combine(key, emb)
          loss = tf.reduce_sum(out * out)
        return out, tape.gradient(loss, emb)

      out, grad = step(key, emb)
    return out, grad

  def test_on_gpu_matches_cpu(self, kind):
    soft = tf.config.get_soft_device_placement()
    tf.config.set_soft_device_placement(False)
    try:
      out, grad = self._run(kind, "/GPU:0")
      self.assertIn("GPU:0", out.device)
      self.assertIn("GPU:0", grad.device)
      eager_key = tf.RaggedTensor.from_row_lengths(tf.range(3), [1, 0, 2])
      with tf.device("/GPU:0"):
        eager = cref.make_combiner(kind).combine(eager_key, tf.ones([3, 2]))
      self.assertIn("GPU:0", eager.device)
    finally:
      tf.config.set_soft_device_placement(soft)
    cpu_out, cpu_grad = self._run(kind, "/CPU:0")
    self.assertAllClose(out, cpu_out, rtol=1e-5, atol=1e-5)
    self.assertAllClose(grad, cpu_grad, rtol=1e-5, atol=1e-5)


if __name__ == "__main__":
  if sys.argv[1:] == ["--mirrored"]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if len(tf.config.list_logical_devices("CPU")) < 2:
      sys.exit("could not configure two logical CPUs")
    replicated_results, single_results = _mirrored_check()
    for replicas_, expected_ in zip(replicated_results, single_results):
      assert len(replicas_) == 2
      for r_ in replicas_:
        np.testing.assert_allclose(r_, expected_, rtol=1e-6, atol=1e-6)
    print("ok")
  else:
    tf.test.main()
