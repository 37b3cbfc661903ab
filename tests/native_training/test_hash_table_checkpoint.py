"""Tests of hash table checkpoints: monolith's `EntryDump` shards, TF's
`tf.train.Checkpoint` and `tf.compat.v1.train.Saver`.

The monolith format is checked field by field against Python protobuf in
both directions (shards written the way monolith writes them are restored;
our shards are parsed and compared with the state that was imported), and
every path is checked to continue training bit for bit after a restore.
"""

import os

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from monolith.native_training import entry
from monolith.native_training import hash_table_checkpoint
from monolith.native_training import hash_table_ops
from monolith.native_training.runtime.hash_table import embedding_hash_table_pb2 as pb

_DAY = 86400


def _segment(dim, member, init=("zeros", None), comp="fp32", **fields):
  """An `EntryConfig.Segment` from raw proto members."""
  seg = pb.EntryConfig.Segment(dim_size=dim)
  init_member = getattr(seg.init_config, init[0])
  init_member.SetInParent()
  if init[1] is not None:
    init_member.constant = init[1]
  opt = getattr(seg.opt_config, member)
  opt.SetInParent()
  for key, value in fields.items():
    setattr(opt, key, value)
  getattr(seg.comp_config, comp).SetInParent()
  return seg


def _table(segments,
           lrs=None,
           expire_time=36500,
           slot_expire=None,
           extra_restore_names=None,
           capacity=1,
           saver_parallel=-1,
           name_suffix=""):
  config = entry.build_embedding_hash_table_config(
      segments, entry.CuckooHashTableConfig(initial_capacity=capacity))
  config.slot_expire_time_config.default_expire_time = expire_time
  for slot, days in (slot_expire or {}).items():
    config.slot_expire_time_config.slot_expire_times.add(slot=slot,
                                                         expire_time=days)
  instance = entry.HashTableConfigInstance(config, lrs or [0.1] * len(segments),
                                           extra_restore_names)
  return hash_table_ops.hash_table_from_config(instance,
                                               name_suffix=name_suffix,
                                               saver_parallel=saver_parallel)


def _state(entries, max_ts, scales):
  """Entry state as NumPy, sorted by id (works on tensors or fetched values)."""
  ids = np.asarray(entries["ids"])
  order = np.argsort(ids, kind="stable")
  state = {
      "ids": ids[order],
      "weights": np.asarray(entries["weights"])[order],
      "timestamps": np.asarray(entries["timestamps"])[order],
      "max_ts": np.asarray(max_ts),
  }
  for (k, name), value in entries["slots"].items():
    state[f"s{k}_{name}"] = np.asarray(value)[order]
  for k, scale in enumerate(scales):
    state[f"scale{k}"] = np.asarray(scale)
  return state


def _scales(table):
  return [
      s.compressor.scale
      for s in table.segments
      if s.compressor.scale is not None
  ]


def _eager_state(table):
  return _state(table.export_entries(drop_expired=False), table.max_update_ts,
                _scales(table))


def _assert_same_state(test, expected, actual):
  test.assertEqual(sorted(expected), sorted(actual))
  for key in expected:
    np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


def _in_function(fn):
  """`fn` run as a `tf.function` that returns nothing."""

  @tf.function
  def run(*args):
    fn(*args)

  return run


def _records(path):
  return [
      pb.EntryDump.FromString(r)
      for r in tf.compat.v1.io.tf_record_iterator(path)
  ]


# One segment per optimizer member, with the dump fields of each slot.
_EVERY_OPTIMIZER = [
    ("sgd", 1, {}),
    ("adagrad", 2, {}),
    ("ftrl", 2, {}),
    ("adadelta", 1, {}),
    ("adam", 3, {}),
    ("amsgrad", 2, {}),
    ("momentum", 1, {}),
    ("moving_average", 2, {}),
    ("rmsprop", 1, {}),
    ("rmspropv2", 2, {}),
    ("group_adagrad", 3, {}),
    ("group_ftrl", 2, {}),
    ("dynamic_wd_adagrad", 1, {}),
    ("batch_softmax", 1, {}),
]

# (slot name, per dim, dtype) per member: HASH_TABLE_SPEC Part B 1.2 / 5.9.
_DUMP_LAYOUT = {
    "sgd": [],
    "adagrad": [("norm", True, np.float32)],
    "ftrl": [("norm", True, np.float32), ("zero", True, np.float32)],
    "adadelta": [("accum", True, np.float32),
                 ("accum_update", True, np.float32)],
    "adam": [("m", True, np.float32), ("v", True, np.float32),
             ("beta1_power", False, np.float32),
             ("beta2_power", False, np.float32)],
    "amsgrad": [("m", True, np.float32), ("v", True, np.float32),
                ("vhat", True, np.float32), ("beta1_power", False, np.float32),
                ("beta2_power", False, np.float32)],
    "momentum": [("n", True, np.float32)],
    "moving_average": None,  # No SingleOptimizerDump at all.
    "rmsprop": [("n", True, np.float32)],
    "rmspropv2": [("n", True, np.float32)],
    "group_adagrad": [("grad_square_sum", False, np.float32)],
    "group_ftrl": [("norm", True, np.float32), ("zero", True, np.float32)],
    "dynamic_wd_adagrad": [("norm", True, np.float32)],
    "batch_softmax": [("global_step", False, np.int64)],
}


def _random_state(rng, n):
  """Known entry state for `_EVERY_OPTIMIZER` (ids distinct, any sign)."""
  ids = rng.choice(np.arange(-1000, 1000), n, replace=False).astype(np.int64)
  ids[0] = (7 << 48) | 3  # A slot-7 fid.
  dim = sum(d for _, d, _ in _EVERY_OPTIMIZER)
  weights = rng.normal(size=[n, dim]).astype(np.float32)
  slots = {}
  for k, (member, d, _) in enumerate(_EVERY_OPTIMIZER):
    for name, per_dim, dtype in _DUMP_LAYOUT[member] or []:
      shape = [n, d if per_dim else 1]
      if dtype == np.int64:
        slots[(k, name)] = rng.integers(-5, 1 << 40, shape).astype(np.int64)
      else:
        slots[(k, name)] = rng.uniform(0, 2, shape).astype(np.float32)
  timestamps = rng.integers(0, 1 << 31, n).astype(np.int64)
  return ids, weights, slots, timestamps


class MonolithFormatTest(tf.test.TestCase, parameterized.TestCase):
  """`save` / `restore` / `lookup_entry` in monolith's format."""

  def test_our_shards_parse_with_python_protobuf(self):
    """Every field of every record, for every optimizer member (eager)."""
    rng = np.random.default_rng(0)
    segments = [_segment(d, m) for m, d, _ in _EVERY_OPTIMIZER]
    table = _table(segments, saver_parallel=2)
    ids, weights, slots, timestamps = _random_state(rng, 9)
    table.import_entries(ids, weights, slots, timestamps)
    base = os.path.join(self.get_temp_dir(), "every")
    table.save(base)

    names = sorted(
        f for f in os.listdir(self.get_temp_dir()) if f.startswith("every"))
    self.assertEqual(names, ["every-00000-of-00002", "every-00001-of-00002"])
    shards = [_records(os.path.join(self.get_temp_dir(), f)) for f in names]
    self.assertEqual([len(s) for s in shards], [5, 4])
    dumps = shards[0] + shards[1]
    # Sorted by id, split into contiguous runs.
    self.assertEqual([d.id for d in dumps], sorted(ids.tolist()))
    by_id = {int(i): k for k, i in enumerate(ids)}
    for dump in dumps:
      k = by_id[dump.id]
      np.testing.assert_array_equal(np.array(dump.num, np.float32), weights[k])
      self.assertEqual(dump.last_update_ts_sec, timestamps[k])
      self.assertTrue(dump.HasField("last_update_ts_sec"))
      members = [(i, m)
                 for i, (m, _, _) in enumerate(_EVERY_OPTIMIZER)
                 if _DUMP_LAYOUT[m] is not None]
      self.assertLen(dump.opt.dump, len(members))
      for single, (seg_index, member) in zip(dump.opt.dump, members):
        self.assertEqual(single.WhichOneof("type"), member)
        member_dump = getattr(single, member)
        for name, per_dim, dtype in _DUMP_LAYOUT[member]:
          expected = slots[(seg_index, name)][k]
          value = getattr(member_dump, name)
          if per_dim:
            np.testing.assert_array_equal(np.array(value, dtype), expected)
          else:
            self.assertTrue(member_dump.HasField(name), name)
            self.assertEqual(dtype(value), expected[0])
        # Nothing but the listed fields.
        self.assertCountEqual([f.name for f, _ in member_dump.ListFields()],
                              [n for n, _, _ in _DUMP_LAYOUT[member]])

    # lookup_entry: the same EntryDump, b"" for a missing id.
    got = table.lookup_entry(tf.constant([ids[3], 5555, ids[0]], tf.int64))
    self.assertEqual(got[1].numpy(), b"")
    self.assertEqual(pb.EntryDump.FromString(got[0].numpy()),
                     next(d for d in dumps if d.id == ids[3]))
    self.assertEqual(pb.EntryDump.FromString(got[2].numpy()),
                     next(d for d in dumps if d.id == ids[0]))

    # Round trip into a fresh table of another capacity.
    fresh = _table(segments, capacity=1000)
    fresh.restore(base)
    expected = _state(
        {
            "ids": ids,
            "weights": weights,
            "slots": slots,
            "timestamps": timestamps
        }, timestamps.max(), [])
    _assert_same_state(self, expected, _eager_state(fresh))

  def test_restores_shards_written_by_monolith(self):
    """Shards written by Python protobuf + tf.io.TFRecordWriter (TF1 graph)."""
    segments = [
        _segment(2,
                 "adagrad",
                 init=("constants", 0.5),
                 initial_accumulator_value=0.25),
        _segment(3, "adam", beta1=0.8, beta2=0.95),
        _segment(1, "sgd", init=("constants", -2.0)),
    ]
    full = pb.EntryDump(id=11, num=[1, 2, 3, 4, 5, 6], last_update_ts_sec=700)
    full.opt.dump.add().adagrad.norm.extend([0.5, 0.75])
    adam = full.opt.dump.add().adam
    adam.m.extend([0.1, 0.2, 0.3])
    adam.v.extend([0.4, 0.5, 0.6])
    adam.beta1_power = 0.64
    adam.beta2_power = 0.9025
    full.opt.dump.add().sgd.SetInParent()
    no_ts = pb.EntryDump()
    no_ts.CopyFrom(full)
    no_ts.id = -(3 << 48)
    no_ts.ClearField("last_update_ts_sec")
    no_ts.num[:] = [-1, -2, -3, -4, -5, -6]
    # Only 4 weights and no optimizer state: the rest is initialized.
    partial = pb.EntryDump(id=1 << 60, num=[9, 8, 7, 6], last_update_ts_sec=50)
    # Adam dump without the bias-correction powers.
    no_powers = pb.EntryDump()
    no_powers.CopyFrom(full)
    no_powers.id = 5
    no_powers.last_update_ts_sec = 20
    no_powers.opt.dump[1].adam.ClearField("beta1_power")
    no_powers.opt.dump[1].adam.ClearField("beta2_power")

    base = os.path.join(self.get_temp_dir(), "from_monolith")
    for shard, dumps in enumerate([[full, partial], [no_ts, no_powers]]):
      with tf.io.TFRecordWriter(f"{base}-{shard:05d}-of-00002") as writer:
        for dump in dumps:
          writer.write(dump.SerializeToString())

    again = os.path.join(self.get_temp_dir(), "again")
    with tf.Graph().as_default():
      table = _table(segments)
      basename = tf.compat.v1.placeholder(tf.string, [])
      restored = table.restore(basename)
      with tf.control_dependencies([restored.as_op()]):
        entries = restored.export_entries(drop_expired=False)
        size = restored.size()
        max_ts = restored.max_update_ts.read_value()
      saved = restored.save(again).as_op()
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        got, got_size, got_max = sess.run([entries, size, max_ts],
                                          {basename: base})
        sess.run(saved, {basename: base})
        with self.assertRaisesRegex(tf.errors.NotFoundError,
                                    "no checkpoint shard found"):
          sess.run(size, {basename: base + "_missing"})
    # Saved again (graph mode): what monolith wrote comes back unchanged.
    resaved = {d.id: d for d in _records(again + "-00000-of-00001")}
    self.assertLen(resaved, 4)
    self.assertEqual(resaved[11], full)
    self.assertEqual(resaved[11].SerializeToString(), full.SerializeToString())
    self.assertEqual(got_size, 4)
    self.assertEqual(got_max, 700)
    got = _state(got, got_max, [])

    ids = [-(3 << 48), 5, 11, 1 << 60]
    f32 = lambda x: np.array(x, np.float32)
    full_slots = {
        "norm": [0.5, 0.75],
        "m": [0.1, 0.2, 0.3],
        "v": [0.4, 0.5, 0.6],
    }
    expected = {
        "ids":
            np.array(ids, np.int64),
        "weights":
            f32([[-1, -2, -3, -4, -5, -6], [1, 2, 3, 4, 5, 6],
                 [1, 2, 3, 4, 5, 6], [9, 8, 7, 6, 0, -2]]),
        "timestamps":
            np.array([0, 20, 700, 50], np.int64),
        "max_ts":
            np.array(700, np.int64),
        "s0_norm":
            f32([full_slots["norm"]] * 3 + [[0.25, 0.25]]),
        "s1_m":
            f32([full_slots["m"]] * 3 + [[0, 0, 0]]),
        "s1_v":
            f32([full_slots["v"]] * 3 + [[0, 0, 0]]),
        "s1_beta1_power":
            f32([[0.64], [0.8], [0.64], [0.8]]),
        "s1_beta2_power":
            f32([[0.9025], [0.95], [0.9025], [0.95]]),
    }
    _assert_same_state(self, expected, got)

  @parameterized.named_parameters(("eager", False), ("tf_function", True))
  def test_expired_entries_are_not_saved(self, use_function):
    """expire_time 1 day: an entry 86401 s older than the newest is dropped;
    restore resets max_update_ts from the restored timestamps."""
    t = 1_700_000_000
    slot9 = 9 << 48
    table = _table([_segment(2, "adagrad")], expire_time=1, slot_expire={9: 0})
    table.assign([1], [[1.0, 1.0]], req_time=t)
    table.assign([2], [[2.0, 2.0]], req_time=t + 2)
    table.assign([3, slot9 | 1], [[3.0, 3.0], [4.0, 4.0]], req_time=t + 86401)
    base = os.path.join(self.get_temp_dir(), "expiry")
    save = table.save
    fresh = _table([_segment(2, "adagrad")], expire_time=1)
    fresh.assign([77], [[7.0, 7.0]], req_time=t + 10 * _DAY)
    restore = fresh.restore
    if use_function:
      save = _in_function(table.save)
      restore = _in_function(fresh.restore)
    save(base)
    # id 1: 86401 s behind (expired); slot 9 expires after 0 days.
    self.assertEqual(sorted(d.id for d in _records(base + "-00000-of-00001")),
                     [2, 3])
    self.assertEqual(int(table.size()), 4)  # Saving evicts nothing.
    restore(base)
    self.assertEqual(int(fresh.size()), 2)
    self.assertEqual(int(fresh.max_update_ts.numpy()), t + 86401)
    self.assertAllEqual(fresh.lookup([1, 2, 3, 77]),
                        [[0, 0], [2, 2], [3, 3], [0, 0]])

  def test_extra_restore_names_and_missing_checkpoint(self):
    """Falls back to extra names in basename's directory; else NotFound."""
    directory = self.get_temp_dir()
    old = _table([_segment(1, "sgd")])
    old.assign([4], [[4.0]])
    old.save(os.path.join(directory, "old-table-0"))
    newer = _table([_segment(1, "sgd")])
    newer.assign([5], [[5.0]])
    newer.save(os.path.join(directory, "MonolithHashTable_new"))

    table = _table([_segment(1, "sgd")],
                   extra_restore_names=["gone", "old/table:0"])
    self.assertAllEqual(
        hash_table_checkpoint.restore_candidates(table,
                                                 "a/b/MonolithHashTable"),
        [b"a/b/MonolithHashTable", b"a/b/gone", b"a/b/old-table-0"])
    # ":" and "/" of a name become "-"; the first name with shards wins.
    table.restore(os.path.join(directory, "MonolithHashTable_missing"))
    self.assertAllEqual(table.lookup([4, 5]), [[4.0], [0.0]])
    # The basename's own shards come first.
    table.restore(os.path.join(directory, "MonolithHashTable_new"))
    self.assertAllEqual(table.lookup([4, 5]), [[0.0], [5.0]])

    with self.assertRaisesRegex(
        tf.errors.NotFoundError, "no checkpoint shard found.*nowhere/x-.*"
        "nowhere/gone-.*nowhere/old-table-0-"):
      table.restore(os.path.join(directory, "nowhere", "x"))
    self.assertAllEqual(table.lookup([5]), [[5.0]])  # Untouched.

  def test_shard_count_and_damaged_checkpoints(self):
    """Shard counts; missing, stale and truncated shards fail loudly."""
    directory = self.get_temp_dir()
    config = entry.HashTableConfigInstance(
        entry.build_embedding_hash_table_config([_segment(1, "sgd")]), [0.1])
    direct = hash_table_ops.HashTable(config)  # No saver_parallel attribute.
    direct.assign([1, 2], [[1.0], [2.0]])
    direct.save(os.path.join(directory, "direct"))
    auto = _table([_segment(1, "sgd")], saver_parallel=-1)
    auto.assign([1, 2], [[1.0], [2.0]])
    auto.save(os.path.join(directory, "auto"))
    three = _table([_segment(1, "sgd")], saver_parallel=3)
    three.assign([1, 2], [[1.0], [2.0]])
    three.save(os.path.join(directory, "three"))
    files = sorted(os.listdir(directory))
    self.assertContainsSubset([
        "auto-00000-of-00001", "direct-00000-of-00001", "three-00000-of-00003",
        "three-00001-of-00003", "three-00002-of-00003"
    ], files)
    self.assertLen(files, 5)
    table = _table([_segment(1, "sgd")])
    table.restore(os.path.join(directory, "three"))
    self.assertAllEqual(table.lookup([1, 2]), [[1.0], [2.0]])

    table.assign([9], [[9.0]])
    os.remove(os.path.join(directory, "three-00001-of-00003"))
    with self.assertRaisesRegex(tf.errors.NotFoundError,
                                "three-00001-of-00003"):
      table.restore(os.path.join(directory, "three"))
    self.assertAllEqual(table.lookup([9]), [[9.0]])  # Untouched.
    # A stale shard of an earlier save with another shard count.
    os.rename(os.path.join(directory, "auto-00000-of-00001"),
              os.path.join(directory, "three-00000-of-00001"))
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                "different shard counts"):
      table.restore(os.path.join(directory, "three"))
    # A shard cut short by a crash.
    path = os.path.join(directory, "direct-00000-of-00001")
    with open(path, "rb") as f:
      data = f.read()
    with open(path, "wb") as f:
      f.write(data[:-3])
    with self.assertRaises(tf.errors.DataLossError):
      table.restore(os.path.join(directory, "direct"))
    self.assertAllEqual(table.lookup([9]), [[9.0]])


# Adam (beta powers), FTRL and a one_bit segment (scale variable).
def _training_segments():
  return [
      entry.CombineAsSegment(
          3, entry.RandomUniformInitializer(-0.1, 0.1),
          entry.AdamOptimizer(learning_rate=0.05, beta1=0.9, beta2=0.999),
          entry.Fp32Compressor()),
      entry.CombineAsSegment(
          2, entry.ConstantsInitializer(0.05),
          entry.FtrlOptimizer(learning_rate=0.1,
                              l1_regularization=0.001,
                              beta=1.0), entry.Fp16Compressor()),
      entry.CombineAsSegment(2, entry.RandomUniformInitializer(-0.5, 0.5),
                             entry.AdagradOptimizer(learning_rate=0.2),
                             entry.OneBitCompressor(step_size=2,
                                                    amplitude=0.5)),
  ]


_STEP_IDS = [[1, 2, 3, 1 << 50], [2, 4, 5], [1, 5, 6, 7], [3, 7, 8], [1, 2, 9],
             [4, 8, 10, 11]]
_SAVE_AFTER = 3


def _train_step(table, ids, step):
  """One step whose gradients depend on the lookups (one_bit included).

  Args:
    table: The table.
    ids: int64 `[n]`.
    step: int64 scalar global step.
  """
  ids = tf.convert_to_tensor(ids, tf.int64)
  step = tf.convert_to_tensor(step, tf.int64)
  values = table.lookup(ids)
  target = tf.reshape(tf.range(7 * tf.size(ids)), [-1, 7])
  grads = values - tf.cast(target, tf.float32) * 0.01
  return table.apply_gradients(ids,
                               grads,
                               step,
                               enable_dedup=True,
                               req_time=1000 + 10 * step)


def _eager_step(table):
  return lambda s: _train_step(table, _STEP_IDS[s], s)


class ContinuationTest(tf.test.TestCase, parameterized.TestCase):
  """A restored table continues training bit for bit as if never saved."""

  @parameterized.named_parameters(("eager", False),
                                  ("save_restore_in_tf_function", True))
  def test_monolith_format(self, use_function):
    base = os.path.join(self.get_temp_dir(), "cont")
    table = _table(_training_segments(), lrs=[0.05, 0.1, 0.2])
    fresh = _table(_training_segments(), lrs=[0.05, 0.1, 0.2], capacity=64)
    save, restore = table.save, fresh.restore
    if use_function:
      save, restore = _in_function(save), _in_function(restore)
    step = _eager_step(table)
    for s in range(_SAVE_AFTER):
      step(s)
    save(base)
    saved_scale = _scales(table)[0].numpy()
    self.assertNotEqual(saved_scale, 1.0)  # The schedule moved it.
    for s in range(_SAVE_AFTER, len(_STEP_IDS)):
      step(s)
    expected = _eager_state(table)

    restore(base)
    # monolith's format has no one_bit scale: it restarts at init_scale
    # (Part B 4.4). Put the saved value back to continue exactly.
    self.assertEqual(_scales(fresh)[0].numpy(), 1.0)
    _scales(fresh)[0].assign(saved_scale)
    step = _eager_step(fresh)
    for s in range(_SAVE_AFTER, len(_STEP_IDS)):
      step(s)
    _assert_same_state(self, expected, _eager_state(fresh))

  def test_tf_train_checkpoint(self):
    """Eager `tf.train.Checkpoint`, including the one_bit scale."""
    table = _table(_training_segments(), lrs=[0.05, 0.1, 0.2])
    checkpoint = tf.train.Checkpoint(table=table)
    step = _eager_step(table)
    for s in range(_SAVE_AFTER):
      step(s)
    path = checkpoint.save(os.path.join(self.get_temp_dir(), "ckpt"))
    for s in range(_SAVE_AFTER, len(_STEP_IDS)):
      step(s)
    expected = _eager_state(table)

    fresh = _table(_training_segments(), lrs=[0.05, 0.1, 0.2], capacity=300)
    fresh.assign([12345], [[1.0] * 7], req_time=99999)  # Replaced.
    tf.train.Checkpoint(table=fresh).restore(path).assert_consumed()
    step = _eager_step(fresh)
    for s in range(_SAVE_AFTER, len(_STEP_IDS)):
      step(s)
    _assert_same_state(self, expected, _eager_state(fresh))

  def test_tf1_saver(self):
    """`tf.compat.v1.train.Saver` in a TF1 graph, with the rest of a model."""
    path = os.path.join(self.get_temp_dir(), "model.ckpt")

    def build(capacity):
      table = _table(_training_segments(),
                     lrs=[0.05, 0.1, 0.2],
                     capacity=capacity)
      dense = tf.compat.v1.get_variable("dense", initializer=[1.0, 2.0])
      ids = tf.compat.v1.placeholder(tf.int64, [None])
      global_step = tf.compat.v1.placeholder(tf.int64, [])
      train = _train_step(table, ids, global_step).as_op()
      steps = [(train, {
          ids: _STEP_IDS[s],
          global_step: s
      }) for s in range(len(_STEP_IDS))]
      bump = dense.assign_add([1.0, 1.0])
      state = (table.export_entries(drop_expired=False),
               table.max_update_ts.read_value(),
               [v.read_value() for v in _scales(table)], dense.read_value())
      return steps, bump, state, tf.compat.v1.train.Saver()

    with tf.Graph().as_default():
      steps, bump, state, saver = build(1)
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        for s in range(_SAVE_AFTER):
          sess.run(*steps[s])
        sess.run(bump)
        saver.save(sess, path)
        for s in range(_SAVE_AFTER, len(_STEP_IDS)):
          sess.run(*steps[s])
        entries, max_ts, scales, dense = sess.run(state)
    expected = _state(entries, max_ts, scales)
    self.assertAllEqual(dense, [2.0, 3.0])

    with tf.Graph().as_default():
      steps, _, state, saver = build(500)
      with tf.compat.v1.Session() as sess:
        saver.restore(sess, path)
        for s in range(_SAVE_AFTER, len(_STEP_IDS)):
          sess.run(*steps[s])
        entries, max_ts, scales, dense = sess.run(state)
    _assert_same_state(self, expected, _state(entries, max_ts, scales))
    self.assertAllEqual(dense, [2.0, 3.0])


if __name__ == "__main__":
  tf.test.main()
