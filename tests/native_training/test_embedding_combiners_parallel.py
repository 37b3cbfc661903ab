"""Tests of the CPU formulations that use several threads for large batches.

On a machine with 2 CPUs or more:

* pooling takes the "halves" branch of `embedding_combiner_ops._cpu_pool` for
  large batches: each half of the rows gets its own row ids
  (`RaggedTensorToSparse`) and segment kernel, and the two results are joined;
* FirstN gathers large outputs from the embedding plus a zero row instead of
  `RaggedTensorToTensor`.

These tests force those branches on small batches (thresholds patched to 0)
and check outputs and gradients against the NumPy references -- with the cut
between the halves next to empty rows, rows longer than n, empty batches -- in
every execution mode; and they check batches large enough to take them
unforced.
"""

from unittest import mock

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from monolith.native_training import embedding_combiner_ops as combiner_ops
from monolith.native_training import embedding_combiners as ec
from tests.native_training import combiner_reference as cref

_POOLING = ("sum", "mean", "sqrtn")
_MODES = ("eager", "function", "graph")
# Row lengths around the cut (row nrows // 2): empty halves, empty rows on
# either side of it, one or two rows, trailing empty rows.
_LAYOUTS = {
    "empty_batch": [],
    "no_ids": [0, 0, 0],
    "one_row": [4],
    "two_rows": [3, 2],
    "first_half_empty": [0, 0, 3, 1],
    "second_half_empty": [2, 3, 0, 0],
    "empty_rows_at_the_cut": [2, 0, 0, 0, 1],
    "all_in_the_last_row": [0, 0, 0, 0, 7],
    "all_in_the_first_row": [7, 0, 0, 0, 0],
    "mixed": [0, 6, 1, 0, 3, 2, 0, 5, 0, 0],
}


def _splits_dtype(layout):
  """int32 / int64 row splits, alternating over the layouts."""
  return (tf.int32, tf.int64)[tuple(_LAYOUTS).index(layout) % 2]


def _forced(always, cpus=2):
  """Patches the thresholds (0: always halves / gather) and the CPU count."""
  threshold = 0 if always else 1 << 62
  return mock.patch.multiple(combiner_ops,
                             _MIN_PARALLEL_WORK=threshold,
                             _FIRST_N_GATHER_MIN_BYTES=threshold,
                             _cpu_count=lambda: cpus)


class ParallelHalvesTest(tf.test.TestCase, parameterized.TestCase):
  """Outputs and gradients of the halves branch vs NumPy."""

  def setUp(self):
    super().setUp()
    if tf.config.list_logical_devices("GPU"):
      self.skipTest("CPU formulation only")

  @parameterized.product(kind=_POOLING, mode=_MODES, layout=tuple(_LAYOUTS))
  def test_matches_numpy(self, kind, mode, layout):
    lengths = _LAYOUTS[layout]
    splits_dtype = _splits_dtype(layout)
    rng = np.random.default_rng(len(layout))
    emb = cref.round_to(rng.standard_normal((sum(lengths), cref.DIM)),
                        tf.float32)
    want = cref.np_combine(kind, lengths, emb)
    cot = rng.standard_normal(want.shape)
    with _forced(always=True):
      out, grad = cref.run_combiner(mode, cref.plain_combine(kind), lengths,
                                    emb, cot, tf.float32, splits_dtype)
    cref.assert_matches_numpy(self, kind, lengths, emb, cot, out, grad)

  @parameterized.product(kind=_POOLING,
                         mode=_MODES,
                         dtype=(tf.float16, tf.float64))
  def test_weights_and_dtypes(self, kind, mode, dtype):
    lengths = _LAYOUTS["mixed"]
    rng = np.random.default_rng(9)
    emb = cref.round_to(rng.standard_normal((sum(lengths), cref.DIM)), dtype)
    weights = cref.round_to(rng.uniform(0.5, 2.0, sum(lengths)), dtype)
    want = cref.np_combine(kind, lengths, emb, weights)
    cot = cref.round_to(rng.standard_normal(want.shape), dtype)
    with _forced(always=True):
      out, grad = cref.run_combiner(mode,
                                    cref.weighted_combine(kind),
                                    lengths,
                                    emb,
                                    cot,
                                    dtype,
                                    weights=weights)
    tol = cref.tolerance(dtype)
    self.assertAllClose(out, want, rtol=tol, atol=tol)
    self.assertAllClose(grad,
                        cref.np_grad(kind, lengths, emb, cot, weights),
                        rtol=tol,
                        atol=tol)

  @parameterized.parameters(*_MODES)
  def test_large_batch_takes_halves_unforced(self, mode):
    """A batch above the threshold, as the benchmark's: both branches agree."""
    rng = np.random.default_rng(17)
    lengths = rng.integers(0, 41, 2048)
    lengths[-3:] = 0
    dim = 48
    self.assertGreaterEqual(lengths.sum() * (dim + 24),
                            combiner_ops._MIN_PARALLEL_WORK)  # pylint: disable=protected-access
    emb = cref.round_to(rng.standard_normal((lengths.sum(), dim)), tf.float32)
    cot = rng.standard_normal((len(lengths), dim))
    with mock.patch.object(combiner_ops, "_cpu_count", lambda: 2), \
        mock.patch.object(cref, "DIM", dim):
      out, grad = cref.run_combiner(mode, cref.plain_combine("mean"), lengths,
                                    emb, cot, tf.float32)
    self.assertAllClose(out,
                        cref.np_combine("mean", lengths, emb),
                        rtol=1e-5,
                        atol=1e-5)
    self.assertAllClose(grad,
                        cref.np_grad("mean", lengths, emb, cot),
                        rtol=1e-5,
                        atol=1e-5)

  def _op_counts(self, cpus):
    spec = (tf.RaggedTensorSpec([None, None], tf.int64,
                                1), tf.TensorSpec([None, 4]))
    with _forced(always=True, cpus=cpus):
      graph = tf.function(ec.ReduceSum().combine).get_concrete_function(
          *spec).graph.as_graph_def()
    types = [n.op for n in graph.node]
    for fn in graph.library.function:
      types += [n.op for n in fn.node_def]
    return types

  def test_branches_in_the_graph(self):
    """Halves: a Cond over whole (1 kernel) and halves (2 kernels)."""
    with_halves = self._op_counts(cpus=2)
    self.assertEqual(with_halves.count("SegmentSum"), 3)
    self.assertEqual(with_halves.count("RaggedTensorToSparse"), 3)
    self.assertTrue({"If", "StatelessIf"} & set(with_halves))
    single_cpu = self._op_counts(cpus=1)
    self.assertEqual(single_cpu.count("SegmentSum"), 1)
    self.assertNotIn("StatelessIf", single_cpu)


class FirstNGatherTest(tf.test.TestCase, parameterized.TestCase):
  """FirstN's gather branch (large outputs) vs NumPy."""

  def setUp(self):
    super().setUp()
    if tf.config.list_logical_devices("GPU"):
      self.skipTest("CPU formulation only")

  @parameterized.product(kind=("first1", "first3"),
                         mode=_MODES,
                         layout=tuple(_LAYOUTS))
  def test_matches_numpy(self, kind, mode, layout):
    lengths = _LAYOUTS[layout]
    splits_dtype = _splits_dtype(layout)
    rng = np.random.default_rng(len(layout) + 1)
    emb = cref.round_to(rng.standard_normal((sum(lengths), cref.DIM)),
                        tf.float32)
    want = cref.np_combine(kind, lengths, emb)
    cot = cref.round_to(rng.standard_normal(want.shape), tf.float32)
    with _forced(always=True):
      out, grad = cref.run_combiner(mode, cref.plain_combine(kind), lengths,
                                    emb, cot, tf.float32, splits_dtype)
    self.assertEqual(out.shape, want.shape)
    self.assertAllEqual(out, want)  # Copies: exact.
    self.assertAllEqual(grad, cref.np_grad(kind, lengths, emb, cot))

  @parameterized.product(mode=_MODES, dtype=(tf.float16, tf.float64))
  def test_dtypes_and_non_finite_values_stay_in_their_slot(self, mode, dtype):
    lengths = _LAYOUTS["mixed"]
    rng = np.random.default_rng(3)
    emb = cref.round_to(rng.standard_normal((sum(lengths), cref.DIM)), dtype)
    emb[0] = np.inf  # Row 1's first id; padding must not pick it up.
    emb[-1] = np.nan
    want = cref.np_combine("first3", lengths, emb)
    cot = cref.round_to(rng.standard_normal(want.shape), dtype)
    with _forced(always=True):
      out, _ = cref.run_combiner(mode, cref.plain_combine("first3"), lengths,
                                 emb, cot, dtype)
    self.assertAllEqual(out, want)

  @parameterized.parameters(*_MODES)
  def test_large_output_takes_gather_unforced(self, mode):
    """A 34 MB output (>= 32 MiB) with the default threshold."""
    rng = np.random.default_rng(23)
    lengths = rng.integers(0, 41, 2048)
    lengths[-2:] = 0
    dim, n = 64, 64
    self.assertGreaterEqual(
        len(lengths) * n * dim * 4, combiner_ops._FIRST_N_GATHER_MIN_BYTES)  # pylint: disable=protected-access
    emb = cref.round_to(rng.standard_normal((lengths.sum(), dim)), tf.float32)
    cot = cref.round_to(rng.standard_normal((len(lengths), n, dim)), tf.float32)
    with mock.patch.object(combiner_ops, "_cpu_count", lambda: 2), \
        mock.patch.object(cref, "DIM", dim):
      out, grad = cref.run_combiner(mode, cref.plain_combine(f"first{n}"),
                                    lengths, emb, cot, tf.float32)
    self.assertAllEqual(out, cref.np_combine(f"first{n}", lengths, emb))
    self.assertAllEqual(grad, cref.np_grad(f"first{n}", lengths, emb, cot))


if __name__ == "__main__":
  tf.test.main()
