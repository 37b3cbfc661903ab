"""Tests of monolith.native_training.hash_filter_ops (occurrence thresholds).

The references implement HASH_TABLE_SPEC Part B section 5.3 in plain Python:
an exact per-id counter dict, consulted only for ids not in the table,
`prev` = count before adding, filtered iff `prev < thr`, `thr <= 0` never
filters, counts saturate at 15.
"""

import collections
import os
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from monolith.native_training import entry
from monolith.native_training import hash_filter_ops
from monolith.native_training import hash_table_ops
from monolith.native_training.runtime.hash_table import embedding_hash_table_pb2

_LR = 0.1


def _fid(slot: int, local: int) -> int:
  """A fid-v2 id of `slot`."""
  return (slot << 48) | local


def _config(default=0, per_slot=None):
  config = embedding_hash_table_pb2.SlotOccurrenceThresholdConfig(
      default_occurrence_threshold=default)
  for slot, threshold in (per_slot or {}).items():
    config.slot_occurrence_thresholds.add(slot=slot,
                                          occurrence_threshold=threshold)
  return config


def _sgd_table(hash_filter, dim=1, name=""):
  """zeros initializer, SGD with learning rate `_LR`."""
  segment = entry.CombineAsSegment(dim, entry.ZerosInitializer(),
                                   entry.SgdOptimizer(learning_rate=_LR),
                                   entry.Fp32Compressor())
  table_config = entry.build_embedding_hash_table_config([segment])
  instance = entry.HashTableConfigInstance(table_config, [_LR])
  return hash_table_ops.hash_table_from_config(instance,
                                               hash_filter=hash_filter,
                                               name_suffix=name)


class ExactFilterReference:
  """monolith's rule with one exact, saturating counter per id."""

  def __init__(self, threshold_of):
    self.threshold_of = threshold_of
    self.counts = collections.Counter()

  def check(self, id_, count):
    """Admission of a new id seen `count` times in one check."""
    threshold = self.threshold_of(id_)
    if threshold <= 0:
      return True
    prev = self.counts[id_]
    self.counts[id_] = min(prev + count, 15)
    return prev >= threshold


class SgdTableReference:
  """A table of zeros-initialized SGD entries behind the exact filter."""

  def __init__(self, threshold_of, dim=1):
    self.filter = ExactFilterReference(threshold_of)
    self.values = {}
    self.dim = dim

  def apply_gradients(self, ids, grads, dedup):
    grads = np.asarray(grads, np.float32).reshape(len(ids), self.dim)
    if dedup:
      order, summed, mult = [], {}, collections.Counter()
      for i, id_ in enumerate(ids):
        if id_ not in summed:
          order.append(id_)
          summed[id_] = np.zeros(self.dim, np.float32)
        summed[id_] += grads[i]
        mult[id_] += 1
      steps = [(id_, summed[id_], mult[id_]) for id_ in order]
    else:
      steps = [(id_, grads[i], 1) for i, id_ in enumerate(ids)]
    for id_, g, count in steps:
      if id_ not in self.values:
        if not self.filter.check(id_, count):
          continue
        self.values[id_] = np.zeros(self.dim, np.float32)
      self.values[id_] = self.values[id_] - np.float32(_LR) * g

  def write(self, ids, values, add):
    """assign / assign_add: one check per occurrence, in order."""
    values = np.asarray(values, np.float32).reshape(len(ids), self.dim)
    for id_, v in zip(ids, values):
      if id_ not in self.values:
        if not self.filter.check(id_, 1):
          continue
        self.values[id_] = np.zeros(self.dim, np.float32)
      self.values[id_] = self.values[id_] + v if add else v.copy()

  def lookup(self, ids):
    return np.stack(
        [self.values.get(i, np.zeros(self.dim, np.float32)) for i in ids])


def _per_slot_threshold(default, per_slot):
  return lambda id_: per_slot.get((id_ >> 48) & 0x7FFF, default)


class SpecExampleTest(tf.test.TestCase, parameterized.TestCase):
  """Part B section 5.3's Python example and its dedup variant."""

  # No dedup: the spec's expectations. Dedup, by hand from the rule: run 1
  # counts 0 -> 2 and 1 -> 1; run 2: 0 sees 2 < 3 (-> 4), 1 sees 1 (-> 2);
  # run 3: 0 sees 4 >= 3 and takes one step with g = -2, 1 sees 2 (-> 3);
  # run 4: 0 steps again, 1 sees 3 and passes.
  _EXPECTED = {
      False: [[0.0, 0.0], [0.1, 0.0], [0.3, 0.0], [0.5, 0.1]],
      True: [[0.0, 0.0], [0.0, 0.0], [0.2, 0.0], [0.4, 0.1]],
  }

  @parameterized.named_parameters(("no_dedup", False), ("dedup", True))
  def test_eager(self, dedup):
    table = hash_table_ops.test_hash_table(1,
                                           enable_hash_filter=True,
                                           learning_rate=0.1,
                                           occurrence_threshold=3)
    got = []
    for _ in range(4):
      table.apply_gradients([0, 0, 1], [[-1.0], [-1.0], [-1.0]],
                            0,
                            enable_dedup=dedup)
      got.append(table.lookup([0, 1]).numpy()[:, 0])
    self.assertAllClose(got, self._EXPECTED[dedup], atol=1e-6)

  @parameterized.named_parameters(("no_dedup", False), ("dedup", True))
  def test_graph(self, dedup):
    with tf.Graph().as_default():
      table = hash_table_ops.test_hash_table(1,
                                             enable_hash_filter=True,
                                             learning_rate=0.1,
                                             occurrence_threshold=3)
      updated = table.apply_gradients(tf.constant([0, 0, 1], tf.int64),
                                      tf.fill([3, 1], -1.0),
                                      tf.constant(0, tf.int64),
                                      enable_dedup=dedup)
      values = updated.lookup(tf.constant([0, 1], tf.int64))[:, 0]
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        got = [sess.run(values) for _ in range(4)]
    self.assertAllClose(got, self._EXPECTED[dedup], atol=1e-6)

  def test_tf_function(self):
    table = hash_table_ops.test_hash_table(1,
                                           enable_hash_filter=True,
                                           learning_rate=0.1,
                                           occurrence_threshold=3)

    @tf.function
    def step():
      updated = table.apply_gradients(tf.constant([0, 0, 1], tf.int64),
                                      tf.fill([3, 1], -1.0), 0)
      return updated.lookup(tf.constant([0, 1], tf.int64))[:, 0]

    got = [step().numpy() for _ in range(4)]
    self.assertAllClose(got, self._EXPECTED[False], atol=1e-6)


class ThresholdTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(("no_dedup", False), ("dedup", True))
  def test_per_slot_thresholds_match_reference(self, dedup):
    # slot 1 is listed with 0 (never filtered) although the default is 2;
    # slot 2 needs 5; slot 3 is unlisted (default 2); slot 4 needs 1.
    default, per_slot = 2, {1: 0, 2: 5, 4: 1}
    hash_filter = hash_filter_ops.create_hash_filters(
        0,
        True,
        _config(default, per_slot).SerializeToString(),
        filter_capacity=1 << 16)[0]
    table = _sgd_table(hash_filter, dim=2)
    ref = SgdTableReference(_per_slot_threshold(default, per_slot), dim=2)
    rng = np.random.default_rng(7)
    universe = [_fid(s, k) for s in (1, 2, 3, 4) for k in (1, 2, 3)]
    seen = set()
    for _ in range(7):
      ids = [int(i) for i in rng.choice(universe, size=9)]
      seen.update(ids)
      grads = rng.normal(size=(9, 2)).astype(np.float32)
      table.apply_gradients(ids, grads, 0, enable_dedup=dedup)
      ref.apply_gradients(ids, grads, dedup)
      self.assertAllClose(table.lookup(universe),
                          ref.lookup(universe),
                          atol=1e-5)
      self.assertEqual(int(table.size()), len(ref.values))
    # The test exercised both outcomes: slot 1 ids pass on first sight and
    # some seen ids are still filtered.
    self.assertTrue(all(i in ref.values for i in seen if i >> 48 == 1))
    self.assertNotEmpty(seen - set(ref.values))

  @parameterized.named_parameters(("assign", False), ("assign_add", True))
  def test_assign_paths_count_each_occurrence(self, add):
    hash_filter = hash_filter_ops.create_hash_filters(
        0, True, _config(2).SerializeToString(), filter_capacity=1 << 16)[0]
    table = _sgd_table(hash_filter, dim=2)
    ref = SgdTableReference(lambda _: 2, dim=2)
    batches = [([5, 5, 5, 6], [[1, 2], [3, 4], [5, 6], [7, 8]]),
               ([6, 7, 5], [[1, 1], [2, 2], [3, 3]]),
               ([7, 7, 6], [[4, 0], [0, 4], [9, 9]])]
    for ids, values in batches:
      values = np.asarray(values, np.float32)
      if add:
        table.assign_add(ids, values)
      else:
        table.assign(ids, values)
      ref.write(ids, values, add)
      self.assertAllClose(table.lookup([5, 6, 7]), ref.lookup([5, 6, 7]))
    # Id 5: third occurrence of the first write passed.
    self.assertAllClose(ref.lookup([5])[0], [5 + 3, 6 + 3] if add else [3, 3])

  @parameterized.named_parameters(
      ("thr15_per_write", 15, False, 16),
      ("thr16_per_write", 16, False, None),
      ("thr15_one_big_batch", 15, True, 2),
      ("thr16_one_big_batch", 16, True, None),
  )
  def test_saturation(self, threshold, big_batch, admitted_at):
    hash_filter = hash_filter_ops.create_hash_filters(
        0, True, _config(threshold).SerializeToString(), filter_capacity=64)[0]
    table = _sgd_table(hash_filter)
    inserted_at = None
    # Counts saturate by write 15 (per write) or 1 (big batch); the writes
    # after that show thr 16 never passes.
    for write in range(1, 6 if big_batch else 21):
      if big_batch:
        # 20 occurrences in one deduplicated check: the count saturates.
        table.apply_gradients([9] * 20,
                              np.ones([20, 1], np.float32),
                              0,
                              enable_dedup=True)
      else:
        table.assign_add([9], [[1.0]])
      if inserted_at is None and int(table.size()) == 1:
        inserted_at = write
    self.assertEqual(inserted_at, admitted_at)
    self.assertLessEqual(int(tf.reduce_max(hash_filter.counts)), 15)

  def test_lookup_does_not_count(self):
    hash_filter = hash_filter_ops.create_hash_filters(
        0, True, _config(1).SerializeToString(), filter_capacity=64)[0]
    table = _sgd_table(hash_filter)
    for _ in range(5):
      table.lookup([3])
    table.assign([3], [[2.0]])
    self.assertEqual(int(table.size()), 0)
    table.assign([3], [[2.0]])
    self.assertAllClose(table.lookup([3]), [[2.0]])

  def test_disabled_threshold_counts_nothing(self):
    hash_filter = hash_filter_ops.HashFilter(_config(0, {3: 0}), capacity=8)
    self.assertFalse(hash_filter.enabled)
    admitted = hash_filter.admit([1, 2, _fid(3, 1)], [4, 4, 4])
    self.assertAllEqual(admitted, [True, True, True])
    self.assertAllEqual(hash_filter.counts, np.zeros(8))


class CollisionTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(("no_dedup", False), ("dedup", True))
  def test_never_under_admits(self, dedup):
    # 4 counters for 60 ids: heavy sharing. Each step the table must hold
    # every id the exact reference holds (admission no later than exact).
    default, per_slot = 4, {2: 9}
    hash_filter = hash_filter_ops.HashFilter(_config(default, per_slot),
                                             capacity=4)
    table = _sgd_table(hash_filter)
    ref = SgdTableReference(_per_slot_threshold(default, per_slot))
    universe = [_fid(s, k) for s in (1, 2) for k in range(30)]
    rng = np.random.default_rng(3)
    over_admitted = False
    for _ in range(12):
      ids = [int(i) for i in rng.choice(universe, size=16)]
      table.apply_gradients(ids,
                            -np.ones([16, 1], np.float32),
                            0,
                            enable_dedup=dedup)
      ref.apply_gradients(ids, -np.ones([16, 1], np.float32), dedup)
      present = table.lookup(universe).numpy()[:, 0] != 0
      exact = np.array([i in ref.values for i in universe])
      self.assertTrue(np.all(present[exact]),
                      "an id the exact rule admits is missing")
      over_admitted |= bool(np.any(present & ~exact))
      self.assertEqual(hash_filter.counts.shape, [4])
    self.assertTrue(over_admitted, "the test never produced a collision")

  def test_exact_without_collisions(self):
    hash_filter = hash_filter_ops.HashFilter(_config(3), capacity=1 << 20)
    universe = list(range(1, 41))
    buckets = hash_filter.buckets(tf.constant(universe, tf.int64)).numpy()
    self.assertLen(set(buckets.tolist()), len(universe))
    table = _sgd_table(hash_filter)
    ref = SgdTableReference(lambda _: 3)
    rng = np.random.default_rng(11)
    for _ in range(6):
      ids = [int(i) for i in rng.choice(universe, size=20)]
      table.apply_gradients(ids, -np.ones([20, 1], np.float32), 0)
      ref.apply_gradients(ids, -np.ones([20, 1], np.float32), False)
    self.assertAllClose(table.lookup(universe), ref.lookup(universe), atol=1e-5)

  def test_buckets_in_range(self):
    for capacity in (1, 3, 1000, 1 << 32):
      hash_filter = hash_filter_ops.HashFilter(b"", capacity=1)
      hash_filter.capacity = capacity  # Only exercise the hash.
      ids = tf.constant([0, 1, -5, 2**62, -(2**63) + 7, 12345], tf.int64)
      buckets = hash_filter.buckets(ids).numpy()
      self.assertTrue(np.all((buckets >= 0) & (buckets < capacity)))

  def test_memory_stays_fixed(self):
    hash_filter = hash_filter_ops.HashFilter(_config(2), capacity=128)
    table = _sgd_table(hash_filter)
    for step in range(5):
      ids = np.arange(step * 1000, step * 1000 + 1000, dtype=np.int64)
      table.assign(ids, np.ones([1000, 1], np.float32))
      self.assertEqual(hash_filter.counts.shape, [128])
      self.assertEqual(tf.shape(hash_filter.counts).numpy().tolist(), [128])
    self.assertLen(hash_filter.variables, 1)


class CreateAndValidateTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(("local", 0, 1), ("one_ps", 1, 1),
                                  ("three_ps", 3, 3))
  def test_create_hash_filters(self, ps_num, expected):
    config = _config(2).SerializeToString()
    enabled = hash_filter_ops.create_hash_filters(ps_num,
                                                  True,
                                                  config,
                                                  filter_capacity=16)
    self.assertLen(enabled, expected)
    for f in enabled:
      self.assertIsInstance(f, hash_filter_ops.HashFilter)
      self.assertEqual(f.counts.shape, [16])
    self.assertLen({id(f) for f in enabled}, expected)
    disabled = hash_filter_ops.create_hash_filters(ps_num, False, config)
    self.assertLen(disabled, expected)
    for f in disabled:
      self.assertIsInstance(f, hash_filter_ops.DummyHashFilter)
      self.assertAllEqual(f.admit([1, 2], [100, 100]), [True, True])

  def test_dummy_table_admits_everything(self):
    table = _sgd_table(hash_filter_ops.create_dummy_hash_filter())
    table.assign([1, 2], [[1.0], [2.0]])
    self.assertEqual(int(table.size()), 2)

  def test_config_as_message_and_bytes(self):
    config = _config(3, {7: 1})
    for given in (config, config.SerializeToString()):
      f = hash_filter_ops.HashFilter(given, capacity=8)
      self.assertAllEqual(
          f.thresholds_of(tf.constant([_fid(7, 1), _fid(8, 1)], tf.int64)),
          [1, 3])

  @parameterized.named_parameters(
      ("slot_too_big", dict(config=_config(1, {32768: 2})), ValueError,
       "slot must be in \\[0, 32768\\).*32768"),
      ("capacity_zero", dict(capacity=0), ValueError,
       "capacity must be an int in \\[1, 2\\*\\*32\\], got 0"),
      ("capacity_too_big", dict(capacity=(1 << 32) + 1), ValueError,
       "capacity must be an int"),
      ("capacity_float", dict(capacity=4.0), ValueError, "got 4.0"),
      ("capacity_bool", dict(capacity=True), ValueError, "got True"),
      ("config_int", dict(config=3), TypeError,
       "serialized SlotOccurrenceThresholdConfig.*got int"),
      ("config_other_message",
       dict(config=embedding_hash_table_pb2.SlotExpireTimeConfig()), TypeError,
       "got SlotExpireTimeConfig"),
      ("config_garbage", dict(config=b"\xff\xff\xff"), ValueError,
       "parsing 3 bytes failed"),
  )
  def test_bad_filter_arguments(self, kwargs, error, regex):
    args = dict(config=_config(1), capacity=8)
    args.update(kwargs)
    with self.assertRaisesRegex(error, regex):
      hash_filter_ops.HashFilter(args["config"], capacity=args["capacity"])

  @parameterized.named_parameters(
      ("negative_ps", dict(ps_num=-1), ValueError, "ps_num must be an int"),
      ("bad_slot", dict(config=_config(1, {
          40000: 1
      }).SerializeToString()), ValueError, "got 40000"),
      ("bad_capacity", dict(filter_capacity=0), ValueError,
       "capacity must be an int"),
      ("probabilistic",
       dict(filter_type=hash_filter_ops.FilterType.PROBABILISTIC_FILTER),
       ValueError, "PROBABILISTIC_FILTER is not implemented"),
      ("config_str", dict(config="abc"), TypeError, "got str"),
  )
  def test_bad_create_arguments(self, kwargs, error, regex):
    args = dict(ps_num=1,
                enable_hash_filter=True,
                config=_config(1).SerializeToString())
    args.update(kwargs)
    with self.assertRaisesRegex(error, regex):
      hash_filter_ops.create_hash_filters(**args)

  def test_table_rejects_non_filter(self):
    with self.assertRaisesRegex(TypeError, "hash_filter must be.*got str"):
      _sgd_table("not a filter")


class CheckpointTest(tf.test.TestCase):

  def test_counts_are_checkpointed_with_the_table(self):
    config = _config(3).SerializeToString()
    hash_filter = hash_filter_ops.create_hash_filters(0, True, config, 32)[0]
    table = _sgd_table(hash_filter)
    for _ in range(2):
      table.assign_add([4], [[1.0]])
    self.assertEqual(int(table.size()), 0)
    path = tf.train.Checkpoint(table=table).save(
        os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), "ckpt"))
    names = [name for name, _ in tf.train.list_variables(path)]
    self.assertIn("table/_hash_filter/counts/.ATTRIBUTES/VARIABLE_VALUE", names)

    # A fresh table and filter restore the counts: id 4 has been seen twice,
    # so the third write is filtered and the fourth passes.
    restored_filter = hash_filter_ops.create_hash_filters(0, True, config,
                                                          32)[0]
    restored = _sgd_table(restored_filter)
    tf.train.Checkpoint(table=restored).restore(path).assert_consumed()
    self.assertAllEqual(restored_filter.counts, hash_filter.counts)
    restored.assign_add([4], [[1.0]])
    self.assertEqual(int(restored.size()), 0)
    restored.assign_add([4], [[1.0]])
    self.assertAllClose(restored.lookup([4]), [[1.0]])


if __name__ == "__main__":
  tf.test.main()
