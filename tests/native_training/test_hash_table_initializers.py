"""Tests of new-entry initialization: `hash_table_initializers` and slot init.

Initializer values (HASH_TABLE_SPEC Part B section 3) and optimizer slot
initial values (section 1.2) are checked through the real table:
`assign_add` / `apply_gradients` / `assign` on new ids, then `lookup` and
`export_entries()`. random_uniform is a pure function of (seed, id) (Part
A.4): checked for range, moments, and independence of batch order, batch
contents and the table object.
"""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from monolith.native_training import entry
from monolith.native_training import hash_table_initializers
from monolith.native_training import hash_table_ops
from monolith.native_training.runtime.hash_table import embedding_hash_table_pb2 as pb
from tests.native_training import hash_table_reference as ref_lib


def _segment(dim, initializer, optimizer=None):
  return entry.CombineAsSegment(dim, initializer, optimizer or
                                entry.SgdOptimizer(), entry.Fp32Compressor())


def _table_config(segments) -> pb.EmbeddingHashTableConfig:
  config = pb.EmbeddingHashTableConfig()
  config.cuckoo.SetInParent()
  config.entry_config.segments.extend(segments)
  return config


def _table(config, seed: int = 0) -> hash_table_ops.HashTable:
  lrs = [0.1] * len(config.entry_config.segments)
  return hash_table_ops.hash_table_from_config(entry.HashTableConfigInstance(
      config, lrs),
                                               seed=seed)


def _initial(table, ids) -> np.ndarray:
  """Inserts `ids` by adding zeros (Init, then + 0) and looks them up."""
  ids = np.asarray(ids, np.int64)
  table.assign_add(ids, np.zeros([len(ids), table.dim_size], np.float32))
  return np.asarray(table.lookup(ids))


class ConstantInitializerTest(tf.test.TestCase):

  def test_zeros_ones_constants(self):
    config = _table_config([
        _segment(2, entry.ZerosInitializer()),
        _segment(3, entry.OnesInitializer()),
        _segment(4, entry.ConstantsInitializer(-0.25)),
        _segment(1, entry.ConstantsInitializer(None)),  # proto default 0
    ])
    expected = np.concatenate([
        ref_lib.initial_weights(s.init_config, s.dim_size)
        for s in config.entry_config.segments
    ])
    self.assertAllEqual(expected, [0, 0, 1, 1, 1, -.25, -.25, -.25, -.25, 0])
    table = _table(config)
    self.assertAllEqual(table.lookup([9]), np.zeros([1, 10]))
    self.assertEqual(int(table.size()), 0)  # lookup inserts nothing
    self.assertAllEqual(_initial(table, [9, 10]), [expected, expected])
    # assign_add on a new id: initializer value + value (B.5.2).
    table.assign_add([11], np.full([1, 10], 2.0, np.float32))
    self.assertAllEqual(table.lookup([11]), [expected + 2.0])
    # apply_gradients on a new id: init, then the step (sgd, lr 0.1).
    grads = np.linspace(-1, 1, 10, dtype=np.float32)[None, :]
    table.apply_gradients([12], grads, 0)
    self.assertAllClose(table.lookup([12]),
                        expected[None, :] - np.float32(0.1) * grads)
    # assign on a new id overwrites the initializer value.
    table.assign([13], np.full([1, 10], 7.0, np.float32))
    self.assertAllEqual(table.lookup([13]), np.full([1, 10], 7.0))
    self.assertEqual(int(table.size()), 5)


class RandomUniformTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("proto_defaults", None, None, -0.05, 0.05),
      ("custom", -0.3, 0.7, -0.3, 0.7),
  )
  def test_range_and_moments(self, minval, maxval, low, high):
    n, dim = 4096, 8
    config = _table_config(
        [_segment(dim, entry.RandomUniformInitializer(minval, maxval))])
    values = _initial(_table(config, seed=11), np.arange(n) * 7919 + 3)
    low, high = np.float32(low), np.float32(high)
    self.assertGreaterEqual(values.min(), low)
    self.assertLess(values.max(), high)
    count = values.size
    width = float(high) - float(low)
    mean_sd = width / np.sqrt(12 * count)
    self.assertLess(abs(values.mean() - (low + high) / 2), 5 * mean_sd)
    self.assertAllClose(values.var(), width**2 / 12, rtol=0.05)
    # Close to uniform: each tenth of the range holds ~10%.
    hist = np.histogram(values, bins=10, range=(low, high))[0] / count
    self.assertAllClose(hist, np.full(10, 0.1), atol=0.01)
    # Columns are not correlated, ids get distinct vectors.
    corr = np.corrcoef(values[:, 0], values[:, 1])[0, 1]
    self.assertLess(abs(corr), 0.08)
    self.assertLen(np.unique(values, axis=0), n)

  def test_pure_function_of_seed_and_id(self):
    """The same id gets the same vector in another table with the same seed,
    whatever the batch order and the other ids in the batch; another seed
    gives other values."""
    config = _table_config([
        _segment(5, entry.RandomUniformInitializer(-1.0, 1.0)),
        _segment(5, entry.RandomUniformInitializer(-1.0, 1.0)),
    ])
    ids = np.arange(1, 41, dtype=np.int64) * 1000003
    first = _initial(_table(config, seed=7), ids)

    other = _table(config, seed=7)
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(ids)
    _initial(other, np.concatenate([shuffled[:15], [5, 6, 7]]))
    # Insert the rest through apply_gradients with zero grads (sgd).
    rest = np.concatenate([[8, 9], shuffled[15:]])
    other.apply_gradients(rest, np.zeros([len(rest), 10], np.float32), 0)
    self.assertAllEqual(np.asarray(other.lookup(ids)), first)

    different = _initial(_table(config, seed=8), ids)
    self.assertFalse(np.any(different == first))
    # The two segments are independent streams, not copies.
    self.assertFalse(np.any(first[:, :5] == first[:, 5:]))

  def test_same_values_in_a_graph(self):
    config = _table_config(
        [_segment(3, entry.RandomUniformInitializer(-1.0, 1.0))])
    ids = [4, 8, 15, 16, 23, 42]
    eager = _initial(_table(config, seed=2), ids)
    with tf.Graph().as_default():
      table = _table(config, seed=2)
      looked_up = table.assign_add(ids, tf.zeros([6, 3])).lookup(ids)
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        graph = sess.run(looked_up)
    self.assertAllEqual(graph, eager)

  def test_uniform_bits(self):
    """The [0, 1) source: multiples of 2^-24, deterministic per key."""
    ids = tf.constant([1, 2, 3, -5], tf.int64)
    bits = hash_table_initializers.uniform_bits(ids, seed=1, stream=0,
                                                width=64).numpy()
    self.assertTrue(np.all((bits >= 0) & (bits < 1)))
    self.assertAllEqual(bits * 2**24, np.floor(bits * 2**24))
    again = hash_table_initializers.uniform_bits(ids[::-1], 1, 0, 64).numpy()
    self.assertAllEqual(again[::-1], bits)
    self.assertFalse(
        np.any(
            hash_table_initializers.uniform_bits(ids, 1, 1, 64).numpy() ==
            bits))


class SlotInitTest(tf.test.TestCase):

  def test_slots_come_from_the_optimizer_config(self):
    """Slots of a new id (inserted by assign) hold the optimizer's initial
    values, whatever the initializer."""
    optimizers = [
        entry.SgdOptimizer(),
        entry.AdagradOptimizer(initial_accumulator_value=0.37),
        entry.AdagradOptimizer(),  # proto default iav 0.1
        entry.FtrlOptimizer(initial_accumulator_value=0.2),
        entry.AdadeltaOptimizer(),
        entry.AdamOptimizer(beta1=0.8, beta2=0.95),
        entry.AdamOptimizer(),
        entry.AmsgradOptimizer(beta1=0.7, beta2=0.9),
        entry.MomentumOptimizer(),
        entry.MovingAverageOptimizer(),
        entry.RmspropOptimizer(),
        entry.RmspropV2Optimizer(),
        entry.AdaGradWithGroupLassoOptimizer(initial_accumulator_value=0.3),
        entry.FTRLWithGroupSparsityOptimizer(initial_accumulator_value=0.15),
        entry.DynamicWdAdagradOptimizer(initial_accumulator_value=0.4,
                                        enable_dynamic_wd=False,
                                        flip_direction=False),
        entry.BatchSoftmaxOptimizer(),
    ]
    segments = [
        _segment(1 if isinstance(o, entry.BatchSoftmaxOptimizer) else 3,
                 entry.ConstantsInitializer(5.0), o) for o in optimizers
    ]
    config = _table_config(segments)
    table = _table(config)
    ref = ref_lib.ReferenceTable(config)
    dim = table.dim_size
    values = np.arange(2 * dim, dtype=np.float32).reshape([2, dim])
    table.assign([3, 4], values)
    ref.assign([3, 4], values)
    ids, weights, slots = ref_lib.sorted_export(table.export_entries())
    self.assertAllEqual(ids, [3, 4])
    self.assertAllEqual(weights, values)
    self.assertCountEqual(slots.keys(), ref.slot_keys())
    for key, rows in slots.items():
      self.assertAllEqual(rows, ref.slot(key, ids), msg=str(key))
      self.assertEqual(rows.dtype,
                       np.int64 if key[1] == "global_step" else np.float32)
    # Spot checks written out.
    self.assertAllClose(slots[(1, "norm")], np.full([2, 3], 0.37))
    self.assertAllClose(slots[(2, "norm")], np.full([2, 3], 0.1))
    self.assertAllClose(slots[(5, "beta1_power")], [[0.8], [0.8]])
    self.assertAllClose(slots[(5, "beta2_power")], [[0.95], [0.95]])
    self.assertAllClose(slots[(3, "zero")], np.zeros([2, 3]))
    self.assertAllClose(slots[(12, "grad_square_sum")], [[0.3], [0.3]])


class InitializerErrorTest(tf.test.TestCase):

  def test_no_member(self):
    with self.assertRaisesRegex(ValueError, "no initializer is set"):
      hash_table_initializers.initializer_for(pb.InitializerConfig())
    segment = pb.EntryConfig.Segment(dim_size=2)
    segment.init_config.SetInParent()
    segment.opt_config.sgd.SetInParent()
    with self.assertRaisesRegex(ValueError, "segment 0 init_config"):
      _table(_table_config([segment]))

  def test_missing_init_config(self):
    segment = pb.EntryConfig.Segment(dim_size=2)
    segment.opt_config.sgd.SetInParent()
    with self.assertRaisesRegex(ValueError, "no init_config"):
      _table(_table_config([segment]))


if __name__ == "__main__":
  tf.test.main()
