"""Tests of the hash table's optimizer rules (`hash_table_optimizers`).

Every `OptimizerConfig` member runs through the real table (entry config ->
`hash_table_from_config` -> `apply_gradients`) and its weights AND slots
(`export_entries()`) are compared with the NumPy reference in
`hash_table_reference.py`, which is written from HASH_TABLE_SPEC.md Part B
section 2 with Part A.4's differences. Also covered: export -> import ->
continue equals the uninterrupted table bit for bit, per-segment learning
rates (with a `PolynomialDecay` on the global step, eagerly and in a TF1
graph), dedup (summed) vs sequential steps, stochastic rounding to the fp16
grid, a zero learning rate, and config errors.
"""

from typing import Optional, Sequence

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from monolith.native_training import entry
from monolith.native_training import hash_table_ops
from monolith.native_training import hash_table_optimizers
from monolith.native_training import learning_rate_functions
from monolith.native_training.runtime.hash_table import embedding_hash_table_pb2 as pb
from tests.native_training import hash_table_reference as ref_lib

_RTOL, _ATOL = 1e-5, 1e-6
_DIMS = (1, 7, 8, 17)
_LRS = (0.05, 0.2, 0.01, 0.1)
# Distinct ids per step; ids 1..3 get random weights by `assign` first.
_STEP_IDS = ([1, 2, 3, 4, 5, 6], [2, 4, 6, 7, 8], [1, 3, 5, 7, 9,
                                                   10], [2, 3, 8, 9, 11, 1])
_STEP_GS = (2, 5, 6, 11)
_ROW_SCALES = (0.02, 0.3, 1.0, 2.5, 0.1, 5.0)


def _dwd(**kwargs) -> pb.OptimizerConfig:
  """A dynamic_wd_adagrad config with the unsupported flags off."""
  return entry.DynamicWdAdagradOptimizer(enable_dynamic_wd=False,
                                         flip_direction=False,
                                         **kwargs).as_proto()


def _sr(optimizer) -> entry.Optimizer:
  return entry.StochasticRoundingFloat16OptimizerWrapper(optimizer)


def _segment(dim: int, optimizer, initializer=None):
  return entry.CombineAsSegment(dim, initializer or
                                entry.ConstantsInitializer(0.03), optimizer,
                                entry.Fp32Compressor())


def _table_config(segments) -> pb.EmbeddingHashTableConfig:
  config = pb.EmbeddingHashTableConfig()
  config.cuckoo.SetInParent()
  config.entry_config.segments.extend(segments)
  return config


def _table(config, lrs, seed: int = 0) -> hash_table_ops.HashTable:
  return hash_table_ops.hash_table_from_config(entry.HashTableConfigInstance(
      config, list(lrs)),
                                               seed=seed)


def _grads(rng, n: int, dim: int) -> np.ndarray:
  """Random gradient rows with very different scales (so sparsifying
  optimizers zero some groups and keep others)."""
  scales = np.resize(np.asarray(_ROW_SCALES, np.float32), n)
  rng.shuffle(scales)
  return (rng.standard_normal([n, dim]) * scales[:, None]).astype(np.float32)


def _export(table):
  return ref_lib.sorted_export(table.export_entries())


def _dims_for(optimizer, dims: Sequence[int]) -> Sequence[int]:
  """batch_softmax needs d = 1: two 1-dim segments instead of `dims`."""
  config = (optimizer if isinstance(optimizer, pb.OptimizerConfig) else
            optimizer.as_proto())
  return (1, 1) if config.WhichOneof("type") == "batch_softmax" else dims


class _Case(tf.test.TestCase, parameterized.TestCase):
  """Comparison helpers."""

  def assert_matches_reference(self, table, ref, rtol=_RTOL, atol=_ATOL):
    ids, weights, slots = _export(table)
    self.assertAllEqual(ids, sorted(ref.w))
    self.assertAllClose(weights, ref.weights(ids), rtol=rtol, atol=atol)
    self.assertCountEqual(slots.keys(), ref.slot_keys())
    for key, rows in slots.items():
      expected = ref.slot(key, ids)
      if rows.dtype == np.int64:
        self.assertAllEqual(rows, expected, msg=str(key))
      else:
        self.assertAllClose(rows, expected, rtol=rtol, atol=atol, msg=str(key))

  def assert_tables_equal(self, a, b):
    ids_a, w_a, s_a = _export(a)
    ids_b, w_b, s_b = _export(b)
    self.assertAllEqual(ids_a, ids_b)
    self.assertAllEqual(w_a, w_b)
    self.assertCountEqual(s_a.keys(), s_b.keys())
    for key in s_a:
      self.assertAllEqual(s_a[key], s_b[key], msg=str(key))


_CASES = (
    ("sgd", entry.SgdOptimizer(), None),
    ("adagrad", entry.AdagradOptimizer(initial_accumulator_value=0.2), None),
    ("adagrad_wdf",
     entry.AdagradOptimizer(initial_accumulator_value=0.1,
                            weight_decay_factor=0.3), None),
    ("ftrl_l1",
     entry.FtrlOptimizer(initial_accumulator_value=0.1,
                         l1_regularization=0.3), "per_dim"),
    ("ftrl_l1_l2_beta",
     entry.FtrlOptimizer(initial_accumulator_value=0.05,
                         beta=1.0,
                         l1_regularization=0.1,
                         l2_regularization=0.5), "per_dim"),
    ("adadelta", entry.AdadeltaOptimizer(weight_decay_factor=0.1), None),
    ("adam", entry.AdamOptimizer(), None),
    ("adam_nesterov", entry.AdamOptimizer(use_nesterov=True), None),
    ("adam_wdf",
     entry.AdamOptimizer(weight_decay_factor=0.2, beta2=0.999,
                         epsilon=1e-3), None),
    ("amsgrad", entry.AmsgradOptimizer(beta1=0.8), None),
    ("amsgrad_nesterov", entry.AmsgradOptimizer(use_nesterov=True), None),
    ("momentum", entry.MomentumOptimizer(), None),
    ("momentum_nesterov",
     entry.MomentumOptimizer(use_nesterov=True, momentum=0.8), None),
    ("momentum_wdf", entry.MomentumOptimizer(weight_decay_factor=0.3), None),
    ("moving_average", entry.MovingAverageOptimizer(momentum=0.7), None),
    ("rmsprop",
     entry.RmspropOptimizer(learning_rate=0.03, weight_decay_factor=0.1), None),
    ("rmspropv2", entry.RmspropV2Optimizer(weight_decay_factor=0.1,
                                           momentum=0.8), None),
    ("group_adagrad",
     entry.AdaGradWithGroupLassoOptimizer(initial_accumulator_value=0.1,
                                          beta=0.5,
                                          l2_regularization=1.0,
                                          weight_decay_factor=0.1), "group"),
    ("group_ftrl",
     entry.FTRLWithGroupSparsityOptimizer(initial_accumulator_value=0.05,
                                          beta=1.0,
                                          l1_regularization=1.0,
                                          l2_regularization=0.2), "group"),
    ("dynamic_wd_adagrad_decoupled",
     _dwd(initial_accumulator_value=0.1,
          weight_decay_factor=0.2,
          decouple_weight_decay=True), None),
    ("dynamic_wd_adagrad_coupled",
     _dwd(initial_accumulator_value=0.1,
          weight_decay_factor=0.2,
          decouple_weight_decay=False), None),
    ("batch_softmax", entry.BatchSoftmaxOptimizer(), None),
)


class OptimizerRuleTest(_Case):

  def _train(self, optimizer, restore_at: Optional[int] = None):
    """4 steps on dims 1/7/8/17 (one segment each, its own lr), alternating
    sequential and dedup steps (distinct ids, so both mean one step per
    id), checked against the reference after the first, the restore and the
    last step.

    With `restore_at`, before that step the state moves into a new table
    (export_entries -> import_entries) that continues the training.

    Returns:
      `(table, dims)`.
    """
    dims = _dims_for(optimizer, _DIMS)
    config = _table_config([_segment(d, optimizer) for d in dims])
    lrs = _LRS[:len(dims)]
    dim = sum(dims)
    rng = np.random.default_rng(7)
    table = _table(config, lrs)
    ref = ref_lib.ReferenceTable(config)
    start = rng.uniform(-0.5, 0.5, [3, dim]).astype(np.float32)
    table.assign([1, 2, 3], start)
    ref.assign([1, 2, 3], start)
    for step, (ids, gs) in enumerate(zip(_STEP_IDS, _STEP_GS)):
      if step == restore_at:
        state = table.export_entries()
        table = _table(config, lrs)
        table.import_entries(state["ids"], state["weights"], state["slots"],
                             state["timestamps"])
      grads = _grads(rng, len(ids), dim)
      dedup = step % 2 == 1
      table.apply_gradients(ids, grads, gs, enable_dedup=dedup)
      ref.apply(ids, grads, lrs, gs, dedup=dedup)
      if step in (0, len(_STEP_IDS) - 1) or step == restore_at:
        self.assert_matches_reference(table, ref)
    return table, dims

  @parameterized.named_parameters(*_CASES)
  def test_rule_matches_reference_fresh_and_restored(self, optimizer, sparsity):
    """Fresh entries, then a restored table continuing (vs the reference
    that never stopped)."""
    table, dims = self._train(optimizer, restore_at=2)
    weights = _export(table)[1]
    self.assertTrue(np.all(np.isfinite(weights)))
    if sparsity == "per_dim":
      zero = weights == 0
    elif sparsity == "group":
      zero = np.concatenate([
          np.all(weights[:, o:o + d] == 0, axis=1)
          for o, d in zip(np.cumsum((0,) + dims[:-1]), dims)
      ])
    else:
      return
    # The regularizer must zero some entries and keep others.
    self.assertTrue(np.any(zero), "nothing was zeroed")
    self.assertFalse(np.all(zero), "everything was zeroed")

  @parameterized.named_parameters(
      ("adam", entry.AdamOptimizer(beta1=0.8, beta2=0.95), 2),
      ("amsgrad", entry.AmsgradOptimizer(beta1=0.8, beta2=0.95), 1),
      ("group_adagrad",
       entry.AdaGradWithGroupLassoOptimizer(l2_regularization=1.0), 2),
      ("batch_softmax", entry.BatchSoftmaxOptimizer(), 1),
  )
  def test_restored_table_equals_uninterrupted_bit_for_bit(
      self, optimizer, restore_at):
    """Export/import between steps changes nothing, bit for bit (adam and
    amsgrad keep their own beta powers, unlike monolith's restore)."""
    self.assert_tables_equal(
        self._train(optimizer, restore_at)[0],
        self._train(optimizer)[0])

  def test_ftrl_uses_sign_of_z_for_l1(self):
    """One dim with |z| > l1 > 0: standard shrinkage gives
    w = lr (sign(z) l1 - z) / (sqrt(n) + beta + l2 lr) for both signs of z
    (monolith's signbit form gives lr (l1 - z) / ... for z < 0)."""
    optimizer = entry.FtrlOptimizer(initial_accumulator_value=1.0,
                                    l1_regularization=0.5)
    config = _table_config([_segment(1, optimizer, entry.ZerosInitializer())])
    table = _table(config, [0.1])
    table.apply_gradients([4], [[-2.0]], 0, enable_dedup=True)
    # n = 1 + 4 = 5; sigma w = 0; z = -2 (< -l1): w = 0.1 (-0.5 + 2) / sqrt(5).
    expected = np.float32(0.1) * np.float32(1.5) / np.sqrt(np.float32(5))
    self.assertAllClose(table.lookup([4]), [[expected]], rtol=1e-6)
    table.apply_gradients([5], [[2.0]], 0, enable_dedup=True)
    self.assertAllClose(table.lookup([5]), [[-expected]], rtol=1e-6)

  @parameterized.named_parameters(
      ("rmsprop", entry.RmspropOptimizer(learning_rate=0.03), True),
      ("moving_average", entry.MovingAverageOptimizer(momentum=0.6), True),
      ("rmspropv2", entry.RmspropV2Optimizer(learning_rate=0.03), False),
  )
  def test_lr_tensor_use(self, optimizer, ignores_lr):
    """rmsprop v1 reads the proto learning_rate, moving_average no lr at all:
    changing the lr tensor does not change them (it does change v2)."""
    config = _table_config([_segment(7, optimizer)])
    results = []
    for lr in (0.5, 0.001):
      table = _table(config, [lr])
      ref = ref_lib.ReferenceTable(config)
      rng_step = np.random.default_rng(11)
      for gs in range(3):
        grads = _grads(rng_step, 4, 7)
        table.apply_gradients([1, 2, 3, 4], grads, gs)
        ref.apply([1, 2, 3, 4], grads, [lr], gs)
      self.assert_matches_reference(table, ref)
      results.append(_export(table)[1])
    if ignores_lr:
      self.assertAllEqual(results[0], results[1])
    else:
      self.assertGreater(np.max(np.abs(results[0] - results[1])), 1e-3)


class LearningRateTest(_Case):

  def _mixed_config(self):
    return _table_config([
        _segment(
            3,
            entry.AdagradOptimizer(initial_accumulator_value=0.2,
                                   weight_decay_factor=0.1)),
        _segment(5, entry.AdamOptimizer(beta1=0.85)),
        _segment(2, entry.FtrlOptimizer(l1_regularization=0.05)),
    ])

  def test_mixed_segments_per_segment_lr_eager(self):
    """[adagrad d=3, adam d=5, ftrl d=2], each with its own lr; adam's is a
    PolynomialDecay on the global step, assigned between steps."""
    config = self._mixed_config()
    global_step = tf.compat.v1.train.get_or_create_global_step()
    decay = learning_rate_functions.PolynomialDecay(0.2,
                                                    decay_steps=4,
                                                    end_learning_rate=0.01)
    table = _table(config, [0.1, decay, 0.05])
    ref = ref_lib.ReferenceTable(config)
    rng = np.random.default_rng(5)
    for step, ids in zip((0, 2, 3, 6), _STEP_IDS):
      global_step.assign(step)
      grads = _grads(rng, len(ids), 10)
      table.apply_gradients(ids, grads, global_step)
      lrs = [0.1, ref_lib.polynomial_decay(step, 0.2, 4, 0.01), 0.05]
      ref.apply(ids, grads, lrs, step)
      self.assert_matches_reference(table, ref)

  def test_mixed_segments_per_segment_lr_graph(self):
    """The same in a TF1 graph: one apply op run repeatedly in a Session."""
    config = self._mixed_config()
    ref = ref_lib.ReferenceTable(config)
    rng = np.random.default_rng(5)
    with tf.Graph().as_default():
      global_step = tf.compat.v1.train.get_or_create_global_step()
      decay = learning_rate_functions.PolynomialDecay(0.2,
                                                      decay_steps=4,
                                                      end_learning_rate=0.01)
      table = _table(config, [0.1, decay, 0.05])
      ids_ph = tf.compat.v1.placeholder(tf.int64, [None])
      grads_ph = tf.compat.v1.placeholder(tf.float32, [None, 10])
      step_ph = tf.compat.v1.placeholder(tf.int64, [])
      set_step = global_step.assign(step_ph)
      applied = table.apply_gradients(ids_ph, grads_ph, global_step).as_op()
      export = table.export_entries()
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        for step, ids in zip((0, 2, 3, 6), _STEP_IDS):
          grads = _grads(rng, len(ids), 10)
          sess.run(set_step, {step_ph: step})
          sess.run(applied, {ids_ph: ids, grads_ph: grads})
          lrs = [0.1, ref_lib.polynomial_decay(step, 0.2, 4, 0.01), 0.05]
          ref.apply(ids, grads, lrs, step)
        exported = sess.run(export)
    ids, weights, slots = ref_lib.sorted_export(exported)
    self.assertAllEqual(ids, sorted(ref.w))
    self.assertAllClose(weights, ref.weights(ids), rtol=_RTOL, atol=_ATOL)
    for key, rows in slots.items():
      self.assertAllClose(rows, ref.slot(key, ids), rtol=_RTOL, atol=_ATOL)


class DedupTest(_Case):

  @parameterized.named_parameters(
      ("adagrad", entry.AdagradOptimizer(initial_accumulator_value=0.05)),
      ("adam", entry.AdamOptimizer()),
  )
  def test_dedup_sums_sequential_steps(self, optimizer):
    """Duplicate ids: enable_dedup=True sums the gradients (one step),
    False takes one sequential step per occurrence; they differ."""
    config = _table_config([_segment(1, optimizer), _segment(7, optimizer)])
    rng = np.random.default_rng(9)
    batches = ([5, 6, 5, 7, 5, 6, 8], [6, 6, 9, 5])
    grads = [_grads(rng, len(ids), 8) for ids in batches]
    results = {}
    for dedup in (False, True):
      table = _table(config, [0.1, 0.3])
      ref = ref_lib.ReferenceTable(config)
      for gs, (ids, g) in enumerate(zip(batches, grads)):
        table.apply_gradients(ids, g, gs, enable_dedup=dedup)
        ref.apply(ids, g, [0.1, 0.3], gs, dedup=dedup)
        self.assert_matches_reference(table, ref)
      results[dedup] = _export(table)[1]
    self.assertGreater(np.max(np.abs(results[True] - results[False])), 1e-3)


class StochasticRoundingTest(_Case):

  def test_fp16_grid_neighbours_and_unbiased(self):
    """Many ids in one binade: every result is a float16 neighbour of the
    float32 result, and the rounding error averages to zero."""
    n, dim = 1024, 16
    config = _table_config([_segment(dim, _sr(entry.SgdOptimizer()))])
    table = _table(config, [1.0], seed=3)
    ids = np.arange(100, 100 + n)
    rng = np.random.default_rng(1)
    grid = np.float32(2.0**-10)
    start = (1.25 + grid * rng.integers(0, 512, [n, dim])).astype(np.float32)
    table.assign(ids, start)
    current = start
    for gs in (1, 2):
      grads = rng.uniform(-0.2, 0.2, [n, dim]).astype(np.float32)
      expected = current - grads  # the float32 sgd result, lr = 1
      table.apply_gradients(ids, grads, gs, enable_dedup=gs == 1)
      got = np.asarray(table.lookup(ids))
      self.assertTrue(np.all(ref_lib.on_fp16_grid(got)))
      self.assertTrue(np.all(ref_lib.is_stochastic_rounding_of(got, expected)))
      off_grid = ~ref_lib.on_fp16_grid(expected)
      self.assertGreater(np.mean(off_grid), 0.9)
      error = np.sum(got.astype(np.float64) - expected)
      sigma = np.sqrt(np.sum(ref_lib.rounding_variance(expected)))
      self.assertLess(abs(error), 5 * sigma)
      # P(up) = the position between the neighbours, in every quarter of
      # the interval (round-to-nearest would give 0 or 1 per quarter).
      down, upper = ref_lib.fp16_neighbours(expected)
      frac = ((expected - down) / np.where(off_grid, upper - down, 1.0))
      went_up = got > expected
      for q in range(4):
        sel = off_grid & (frac >= q / 4) & (frac < (q + 1) / 4)
        p = frac[sel].astype(np.float64)
        bound = 5 * np.sqrt(np.sum(p * (1 - p)))
        self.assertLess(abs(np.sum(went_up[sel]) - np.sum(p)),
                        bound,
                        msg=f"quarter {q}")
      current = got

  def test_small_updates_accumulate_at_a_fixed_global_step(self):
    """Each call draws afresh, even when global_step does not move (as in
    monolith's tests): 20 updates of 0.1 ulp move ids by about 2 ulps on
    average, spread out, not 0 or 20 ulps per id."""
    n = 2000
    config = _table_config([_segment(1, _sr(entry.SgdOptimizer()))])
    table = _table(config, [1.0], seed=5)
    ids = np.arange(n)
    table.assign(ids, np.ones([n, 1], np.float32))
    ulp = np.float32(2.0**-10)  # The float16 spacing in [1, 2).
    for _ in range(20):
      table.apply_gradients(ids, np.full([n, 1], -0.1 * ulp, np.float32), 0)
    moved = np.round((np.asarray(table.lookup(ids))[:, 0] - 1.0) / ulp)
    self.assertAllInRange(moved, 0, 20)
    self.assertLess(np.mean((moved == 0) | (moved == 20)), 0.5)
    self.assertNear(float(np.mean(moved)), 2.0, 0.5)

  @parameterized.named_parameters(
      ("first", 0),
      ("second", 1),
  )
  def test_rounds_only_its_own_segment(self, sr_index):
    """2 segments, one SR-wrapped: the other one (weights and slots) and
    every optimizer slot follow the float32 reference exactly."""
    optimizers = [
        entry.AdamOptimizer(),
        entry.AdagradOptimizer(initial_accumulator_value=0.1)
    ]
    optimizers[sr_index] = _sr(optimizers[sr_index])
    dims = (3, 5)
    config = _table_config([_segment(d, o) for d, o in zip(dims, optimizers)])
    table = _table(config, [0.01, 0.02], seed=5)
    ref = ref_lib.ReferenceTable(config)
    rng = np.random.default_rng(2)
    ids = list(range(1, 65))
    start = rng.uniform(-1, 1, [len(ids), 8]).astype(np.float32)
    table.assign(ids, start)
    ref.assign(ids, start)
    sr_cols = slice(0, 3) if sr_index == 0 else slice(3, 8)
    other = slice(3, 8) if sr_index == 0 else slice(0, 3)
    for gs in range(3):
      grads = _grads(rng, len(ids), 8)
      table.apply_gradients(ids, grads, gs)
      ref.apply(ids, grads, [0.01, 0.02], gs)
      got_ids, got, slots = _export(table)
      want = ref.weights(got_ids)
      self.assertTrue(np.all(ref_lib.on_fp16_grid(got[:, sr_cols])))
      self.assertTrue(
          np.all(
              ref_lib.is_stochastic_rounding_of(got[:, sr_cols],
                                                want[:, sr_cols])))
      self.assertAllClose(got[:, other], want[:, other], rtol=1e-6, atol=0)
      self.assertFalse(np.all(ref_lib.on_fp16_grid(got[:, other])))
      for key, rows in slots.items():
        self.assertAllClose(rows,
                            ref.slot(key, got_ids),
                            rtol=_RTOL,
                            atol=_ATOL)
      # Continue from the table's (rounded) state.
      ref.load(got_ids, got, slots)

  def test_batch_softmax_sees_global_step_zero(self):
    """Under SR the wrapped optimizer is called without global_step."""
    config = _table_config([
        _segment(1, _sr(entry.BatchSoftmaxOptimizer())),
        _segment(1, entry.BatchSoftmaxOptimizer())
    ])
    table = _table(config, [0.25, 0.25])
    table.assign([1, 2], [[2.0, 2.0], [-3.0, -3.0]])
    table.apply_gradients([1, 2], [[0.0, 0.0], [0.0, 0.0]], 7)
    ids, weights, slots = _export(table)
    self.assertAllEqual(slots[(0, "global_step")], [[0], [0]])
    self.assertAllEqual(slots[(1, "global_step")], [[7], [7]])
    # SR segment: B = 0.75 B + 0.25 (0 - 0), on the fp16 grid (exact here).
    self.assertAllEqual(weights[:, 0], [1.5, -2.25])
    # Plain segment: B = 0.75 B + 0.25 (7 - 0).
    self.assertAllClose(weights[:, 1], [3.25, -0.5])
    del ids


# (name, optimizer, weights stay unchanged at lr = 0)
_ZERO_LR_CASES = (
    ("sgd", entry.SgdOptimizer(), True),
    ("adagrad_iav0", entry.AdagradOptimizer(initial_accumulator_value=0.0),
     True),
    ("ftrl", entry.FtrlOptimizer(l1_regularization=0.01), True),
    ("ftrl_iav0_beta0",
     entry.FtrlOptimizer(initial_accumulator_value=0.0, beta=0.0), True),
    ("adadelta", entry.AdadeltaOptimizer(), True),
    ("adam", entry.AdamOptimizer(use_nesterov=True), True),
    ("amsgrad", entry.AmsgradOptimizer(), True),
    ("momentum", entry.MomentumOptimizer(use_nesterov=True), True),
    ("moving_average", entry.MovingAverageOptimizer(), False),
    ("rmsprop", entry.RmspropOptimizer(learning_rate=0.05), False),
    ("rmspropv2", entry.RmspropV2Optimizer(), True),
    ("group_adagrad",
     entry.AdaGradWithGroupLassoOptimizer(l2_regularization=0.1), True),
    ("group_adagrad_iav0_beta0",
     entry.AdaGradWithGroupLassoOptimizer(initial_accumulator_value=0.0,
                                          beta=0.0,
                                          l2_regularization=0.1), True),
    ("group_ftrl", entry.FTRLWithGroupSparsityOptimizer(l1_regularization=0.1),
     True),
    ("group_ftrl_beta0", entry.FTRLWithGroupSparsityOptimizer(beta=0.0), True),
    ("dynamic_wd_adagrad_decoupled",
     _dwd(weight_decay_factor=0.1, decouple_weight_decay=True), True),
    ("dynamic_wd_adagrad_coupled",
     _dwd(weight_decay_factor=0.1, decouple_weight_decay=False), True),
    ("batch_softmax", entry.BatchSoftmaxOptimizer(), True),
)


class ZeroLearningRateTest(_Case):

  def test_zero_lr_is_finite(self):
    """lr = 0 (e.g. warmup step 0) for every member, as 1-dim and 5-dim
    segments of one table: no NaN/inf, the reference's values, and weights
    unchanged unless the rule ignores the lr tensor (moving_average,
    rmsprop v1)."""
    segments, names, unchanged = [], [], []
    for name, optimizer, same in _ZERO_LR_CASES:
      for dim in _dims_for(optimizer, (1, 5)):
        segments.append(_segment(dim, optimizer))
        names.append(f"{name} d={dim}")
        unchanged.append(same)
    config = _table_config(segments)
    lrs = [0.0] * len(segments)
    table = _table(config, lrs)
    ref = ref_lib.ReferenceTable(config)
    dim = ref.dim
    rng = np.random.default_rng(4)
    start = rng.uniform(-1, 1, [2, dim]).astype(np.float32)
    table.assign([1, 2], start)
    ref.assign([1, 2], start)
    before = np.concatenate([start, np.full([2, dim], 0.03, np.float32)])
    for gs in (1, 2):
      grads = _grads(rng, 4, dim)
      grads[2] = 0.0  # id 3: zero gradient on a fresh entry
      table.apply_gradients([1, 2, 3, 4], grads, gs)
      ref.apply([1, 2, 3, 4], grads, lrs, gs)
    ids, weights, slots = _export(table)
    self.assertAllEqual(ids, [1, 2, 3, 4])
    self.assertTrue(np.all(np.isfinite(weights)))
    for key, rows in slots.items():
      self.assertTrue(np.all(np.isfinite(rows)), msg=names[key[0]])
    self.assert_matches_reference(table, ref)
    for k, seg in enumerate(ref.segments):
      cols = slice(seg.offset, seg.offset + seg.dim)
      if unchanged[k]:
        self.assertAllEqual(weights[:, cols], before[:, cols], msg=names[k])
      else:
        self.assertGreater(np.max(np.abs(weights[:, cols] - before[:, cols])),
                           1e-3,
                           msg=names[k])

  def test_zero_gradient_with_empty_accumulator_is_finite(self):
    """lr > 0, no accumulator yet and a zero gradient (all of id 1, dim 0 of
    every id): the 0/0 of monolith's formula becomes no step (FTRL-style
    rules set w from z, which stays 0)."""
    optimizers = (
        ("adagrad", entry.AdagradOptimizer(initial_accumulator_value=0.0)),
        ("group_adagrad",
         entry.AdaGradWithGroupLassoOptimizer(initial_accumulator_value=0.0,
                                              beta=0.0)),
        ("group_ftrl", entry.FTRLWithGroupSparsityOptimizer(beta=0.0)),
        ("adam_eps0",
         pb.OptimizerConfig(adam=pb.AdamOptimizerConfig(epsilon=0.0))),
        ("adadelta_eps0",
         pb.OptimizerConfig(adadelta=pb.AdadeltaOptimizerConfig(epsilon=0.0))),
        ("dynamic_wd_adagrad",
         _dwd(initial_accumulator_value=0.0, decouple_weight_decay=True)),
    )
    config = _table_config([_segment(4, o) for _, o in optimizers])
    lrs = [0.1] * len(optimizers)
    table = _table(config, lrs)
    ref = ref_lib.ReferenceTable(config)
    grads = np.zeros([3, 4 * len(optimizers)], np.float32)
    grads[1] = np.tile([0.0, 0.5, -1.0, 2.0], len(optimizers))
    for gs in (1, 2):
      table.apply_gradients([1, 2, 3], grads, gs)
      ref.apply([1, 2, 3], grads, lrs, gs)
    weights = _export(table)[1]
    self.assertTrue(np.all(np.isfinite(weights)))
    self.assert_matches_reference(table, ref)
    for k, (name, _) in enumerate(optimizers):
      untouched = 0.0 if "ftrl" in name else 0.03
      self.assertAllEqual(weights[0, 4 * k:4 * k + 4],
                          np.full([4], untouched, np.float32),
                          msg=name)


class RuleSelectionErrorTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("no_member", pb.OptimizerConfig(), "no optimizer is set"),
      ("dc", pb.OptimizerConfig(dc=pb.DcOptimizerConfig()), "'dc'"),
      ("enable_dynamic_wd",
       entry.DynamicWdAdagradOptimizer(
           enable_dynamic_wd=True,
           flip_direction=False).as_proto(), "enable_dynamic_wd"),
      ("flip_direction",
       entry.DynamicWdAdagradOptimizer(
           enable_dynamic_wd=False,
           flip_direction=True).as_proto(), "flip_direction"),
      ("dynamic_wd_python_defaults",
       entry.DynamicWdAdagradOptimizer().as_proto(), "enable_dynamic_wd"),
  )
  def test_rule_for_rejects(self, opt_config, message):
    with self.assertRaisesRegex(ValueError, message):
      hash_table_optimizers.rule_for(opt_config)
    segment = pb.EntryConfig.Segment(dim_size=2)
    segment.init_config.zeros.SetInParent()
    segment.opt_config.CopyFrom(opt_config)
    with self.assertRaisesRegex(ValueError, "segment 0.*" + message):
      _table(_table_config([segment]), [0.1])

  def test_every_member_but_dc_has_a_rule(self):
    members = [
        f.name
        for f in pb.OptimizerConfig.DESCRIPTOR.oneofs_by_name["type"].fields
    ]
    self.assertCountEqual(
        set(members) - {"dc"}, hash_table_optimizers.RULES.keys())
    for member in members:
      if member == "dc":
        continue
      config = pb.OptimizerConfig()
      getattr(config, member).SetInParent()
      name, _, rule = hash_table_optimizers.rule_for(config)
      self.assertEqual(name, member)
      self.assertIs(rule, hash_table_optimizers.RULES[member])


if __name__ == "__main__":
  tf.test.main()
