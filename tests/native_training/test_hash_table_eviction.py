"""Tests of timestamps, expiry, `HashTable.evict` and hash_table_eviction.

References follow HASH_TABLE_SPEC Part B sections 5.5-5.6: writes stamp the
entry with `req_time` (default 0), `max_update_ts` is the largest `req_time`
seen, and an entry is expired iff
`max_update_ts - ts >= expire_days(slot(id)) * 86400`.
"""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from monolith.native_training import entry
from monolith.native_training import hash_table_eviction
from monolith.native_training import hash_table_ops
from monolith.native_training.runtime.hash_table import embedding_hash_table_pb2

_DAY = 86400
_LR = 0.1


def _fid(slot: int, local: int) -> int:
  return (slot << 48) | local


def _table(dim=2,
           default_days=1,
           slot_days=None,
           evict_every_n_hours=0,
           adagrad=False,
           name=""):
  """zeros init, SGD (or Adagrad) with lr `_LR`, the given expiry."""
  opt = (entry.AdagradOptimizer(learning_rate=_LR,
                                initial_accumulator_value=1.0)
         if adagrad else entry.SgdOptimizer(learning_rate=_LR))
  segment = entry.CombineAsSegment(dim, entry.ZerosInitializer(), opt,
                                   entry.Fp32Compressor())
  table_config = entry.build_embedding_hash_table_config(
      [segment],
      entry.CuckooHashTableConfig(
          feature_evict_every_n_hours=evict_every_n_hours))
  expire = table_config.slot_expire_time_config
  expire.default_expire_time = default_days
  for slot, days in (slot_days or {}).items():
    expire.slot_expire_times.add(slot=slot, expire_time=days)
  instance = entry.HashTableConfigInstance(table_config, [_LR])
  return hash_table_ops.hash_table_from_config(instance, name_suffix=name)


def _expired_reference(ids, stamps, default_days, slot_days):
  """Part B section 5.6 in NumPy: which entries are expired."""
  latest = max(stamps)
  days = np.array(
      [slot_days.get((i >> 48) & 0x7FFF, default_days) for i in ids], np.int64)
  return latest - np.asarray(stamps, np.int64) >= days * _DAY


def _capacity(table):
  return [int(tf.shape(v)[0]) for v in table.storage.variables_in_order]


class FakeClock:

  def __init__(self, now=1000.0):
    self.now = now

  def __call__(self):
    return self.now

  def advance_hours(self, hours):
    self.now += hours * 3600.0


class TimestampTest(tf.test.TestCase, parameterized.TestCase):

  def test_every_write_stamps_req_time(self):
    table = _table()
    table.assign([1, 2], np.ones([2, 2], np.float32), req_time=500)
    table.assign_add([2, 3], np.ones([2, 2], np.float32), req_time=700)
    table.apply_gradients([3, 4], np.ones([2, 2], np.float32), 0, req_time=600)
    table.assign([5], np.ones([1, 2], np.float32))  # default req_time 0
    got = table.export_entries(drop_expired=False)
    stamps = dict(zip(got["ids"].numpy(), got["timestamps"].numpy()))
    self.assertEqual(stamps, {1: 500, 2: 700, 3: 600, 4: 600, 5: 0})
    self.assertEqual(int(table.max_update_ts), 700)

  def test_graph_stamps_req_time(self):
    with tf.Graph().as_default():
      table = _table()
      req = tf.compat.v1.placeholder(tf.int64, [])
      ids = tf.compat.v1.placeholder(tf.int64, [None])
      write = table.apply_gradients(ids,
                                    tf.ones([tf.size(ids), 2]),
                                    0,
                                    req_time=req).as_op()
      exported = table.export_entries(drop_expired=False)
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        sess.run(write, {ids: [1, 2], req: 3 * _DAY})
        sess.run(write, {ids: [2], req: 5 * _DAY})
        got, latest = sess.run([exported, table.max_update_ts])
    stamps = dict(zip(got["ids"], got["timestamps"]))
    self.assertEqual(stamps, {1: 3 * _DAY, 2: 5 * _DAY})
    self.assertEqual(latest, 5 * _DAY)


class ExpiryTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("one_day", 1, [False, True, True, False]),
      ("zero_days_drops_everything", 0, [True, True, True, True]),
      ("two_days", 2, [False, False, False, False]),
  )
  def test_boundary(self, days, expected_expired):
    latest = 10 * _DAY
    # ts = max - 86399 kept (1 day), max - 86400 and max - 86401 dropped.
    stamps = [latest - 86399, latest - 86400, latest - 86401, latest]
    table = _table(default_days=days)
    for i, ts in enumerate(stamps):
      table.assign([i + 1], [[float(i + 1), 0.0]], req_time=ts)
    self.assertAllEqual(_expired_reference([1, 2, 3, 4], stamps, days, {}),
                        expected_expired)
    table.evict()
    kept = [i + 1 for i, e in enumerate(expected_expired) if not e]
    self.assertEqual(int(table.size()), len(kept))
    values = table.lookup([1, 2, 3, 4]).numpy()[:, 0]
    self.assertAllEqual(
        values, [0.0 if e else i + 1.0 for i, e in enumerate(expected_expired)])

  def test_per_slot_expiry(self):
    default_days, slot_days = 2, {5: 4, 6: 0, 7: 1}
    rng = np.random.default_rng(5)
    ids = [_fid(s, k) for s in (3, 5, 6, 7) for k in range(1, 6)]
    stamps = [int(t) for t in rng.integers(0, 6 * _DAY, size=len(ids))]
    stamps[0] = 6 * _DAY
    table = _table(default_days=default_days, slot_days=slot_days)
    for id_, ts in zip(ids, stamps):
      table.assign([id_], [[1.0, 2.0]], req_time=ts)
    expired = _expired_reference(ids, stamps, default_days, slot_days)
    self.assertTrue(expired.any() and not expired.all())
    table.evict()
    present = table.lookup(ids).numpy()[:, 1] != 0
    self.assertAllEqual(present, ~expired)
    self.assertEqual(int(table.size()), int((~expired).sum()))

  def test_req_time_zero_expires_once_time_moves_on(self):
    table = _table(default_days=1)
    table.assign([1], [[1.0, 1.0]])  # ts 0
    table.evict()
    self.assertEqual(int(table.size()), 1)  # max_update_ts is still 0
    table.assign([2], [[2.0, 2.0]], req_time=_DAY - 1)
    table.evict()
    self.assertEqual(int(table.size()), 2)
    table.assign([3], [[3.0, 3.0]], req_time=_DAY)
    table.evict()
    self.assertAllClose(table.lookup([1, 2, 3]), [[0, 0], [2, 2], [3, 3]])


class EvictFreesMemoryTest(tf.test.TestCase, parameterized.TestCase):

  def test_evict_shrinks_columns_and_keeps_survivors(self):
    table = _table(dim=3, default_days=1, adagrad=True)
    old = np.arange(100, 300, dtype=np.int64)
    table.apply_gradients(old, np.ones([200, 3], np.float32), 0, req_time=0)
    survivors = np.array([7, 8, 9], np.int64)
    grads = np.array([[1, 2, 3], [-1, 0, 1], [4, 4, 4]], np.float32)
    table.apply_gradients(survivors, grads, 0, req_time=3 * _DAY)
    table.apply_gradients(survivors[:1], grads[:1], 0, req_time=3 * _DAY)
    before = table.export_entries(drop_expired=False)
    capacity_before = _capacity(table)
    self.assertTrue(all(c >= 203 for c in capacity_before))
    self.assertEqual(int(table.size()), 203)

    table.evict()

    self.assertEqual(int(table.size()), 3)
    capacity_after = _capacity(table)
    self.assertTrue(all(c < 32 for c in capacity_after), capacity_after)
    self.assertAllEqual(table.lookup(old[:50]), np.zeros([50, 3]))
    after = table.export_entries(drop_expired=False)
    order_before = np.argsort(before["ids"].numpy())
    keep_before = np.isin(before["ids"].numpy()[order_before], survivors)
    order_after = np.argsort(after["ids"].numpy())
    self.assertAllEqual(after["ids"].numpy()[order_after], survivors)
    self.assertAllEqual(after["weights"].numpy()[order_after],
                        before["weights"].numpy()[order_before][keep_before])
    for key, value in before["slots"].items():
      self.assertAllEqual(after["slots"][key].numpy()[order_after],
                          value.numpy()[order_before][keep_before])
    self.assertAllEqual(after["timestamps"].numpy(), [3 * _DAY] * 3)

    # Training continues: Adagrad from the kept slots (Part B section 2.2:
    # norm += g^2; w -= lr g / sqrt(norm)), and new ids insert fresh.
    norm = after["slots"][(0, "norm")].numpy()[order_after][1]
    w = after["weights"].numpy()[order_after][1]
    g = np.array([0.5, -2.0, 1.0], np.float32)
    table.apply_gradients([8, 500], np.stack([g, g]), 0, req_time=3 * _DAY)
    new_norm = norm + g * g
    self.assertAllClose(
        table.lookup([8, 500]),
        [w - _LR * g / np.sqrt(new_norm), -_LR * g / np.sqrt(1.0 + g * g)],
        rtol=1e-5)
    self.assertEqual(int(table.size()), 4)
    # Re-inserting an evicted id starts it from the initializer again.
    table.assign_add([100], [[1.0, 1.0, 1.0]], req_time=3 * _DAY)
    self.assertAllClose(table.lookup([100]), [[1.0, 1.0, 1.0]])

  def test_repeated_writes_and_evictions_match_reference(self):
    # A dict reference of {id: (value, ts)}; each round writes a random mix of
    # old and new ids at a later req_time, then evicts. Guards against stale
    # index entries surviving a compaction (duplicate ids, wrong rows).
    table = _table(dim=1, default_days=2)
    ref = {}
    rng = np.random.default_rng(17)
    # fids of a few slots: their index hashes share probe chains.
    universe = [_fid(s, k) for s in range(1, 5) for k in range(1, 21)]
    for day in range(1, 9):
      ids = sorted({int(i) for i in rng.choice(universe, size=25)})
      values = rng.normal(size=[len(ids), 1]).astype(np.float32)
      table.assign(ids, values, req_time=day * _DAY)
      for id_, v in zip(ids, values[:, 0]):
        ref[id_] = (v, day * _DAY)
      table.evict()
      latest = day * _DAY
      ref = {k: v for k, v in ref.items() if latest - v[1] < 2 * _DAY}
      exported = table.export_entries(drop_expired=False)["ids"].numpy()
      self.assertCountEqual(exported.tolist(), list(ref))
      self.assertEqual(int(table.size()), len(ref))
      self.assertAllClose(
          table.lookup(universe)[:, 0],
          [ref[i][0] if i in ref else 0.0 for i in universe])

  def test_evict_in_graph(self):
    with tf.Graph().as_default():
      table = _table(dim=2, default_days=1)
      ids = tf.compat.v1.placeholder(tf.int64, [None])
      req = tf.compat.v1.placeholder(tf.int64, [])
      write = table.assign(ids, tf.ones([tf.size(ids), 2]),
                           req_time=req).as_op()
      evicted = table.evict()
      size_after = evicted.size()
      lookup = evicted.lookup(tf.constant([1, 2, 9], tf.int64))
      capacity = table.storage.capacity()
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        sess.run(write, {ids: np.arange(1, 60), req: 0})
        sess.run(write, {ids: [9], req: 2 * _DAY})
        self.assertGreaterEqual(sess.run(capacity), 59)
        got_size, got = sess.run([size_after, lookup])
        self.assertEqual(got_size, 1)
        self.assertAllClose(got, [[0, 0], [0, 0], [1, 1]])
        self.assertLess(sess.run(capacity), 32)


class _FakeTable:
  """Just what the scheduler reads: `config` and `evict()`."""

  def __init__(self, enabled, hours, name):
    table_config = embedding_hash_table_pb2.EmbeddingHashTableConfig()
    table_config.enable_feature_eviction = enabled
    table_config.feature_evict_every_n_hours = hours
    self.config = entry.HashTableConfigInstance(table_config, [])
    self.name = name
    self.evictions = 0

  def evict(self):
    self.evictions += 1
    return self


class SchedulerTest(tf.test.TestCase, parameterized.TestCase):

  def test_schedule_per_table(self):
    clock = FakeClock()
    every2, every5 = _FakeTable(True, 2, "a"), _FakeTable(True, 5, "b")
    off = _FakeTable(False, 1, "off")
    scheduler = hash_table_eviction.EvictionScheduler([every2, off, every5],
                                                      clock=clock)
    self.assertEqual(scheduler.tables, [every2, every5])
    self.assertEqual(scheduler.period_seconds, [7200.0, 18000.0])
    history = []
    for _ in range(12):  # 0.5 hour steps up to 6 hours
      clock.advance_hours(0.5)
      scheduler.maybe_evict()
      history.append((every2.evictions, every5.evictions, off.evictions))
    # First eviction n hours after creation, then every n hours.
    self.assertEqual([h[0] for h in history],
                     [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3])
    self.assertEqual([h[1] for h in history], [0] * 9 + [1] * 3)
    self.assertEqual({h[2] for h in history}, {0})

  def test_every_n_hours_overrides_config(self):
    clock = FakeClock()
    table = _FakeTable(True, 240, "a")
    scheduler = hash_table_eviction.EvictionScheduler(table,
                                                      every_n_hours=1,
                                                      clock=clock)
    clock.advance_hours(0.99)
    self.assertEqual(scheduler.due(), [])
    clock.advance_hours(0.01)
    self.assertEqual(scheduler.due(), [0])
    self.assertEqual(scheduler.due(), [])

  def test_zero_hours_is_rate_limited(self):
    clock = FakeClock()
    table = _FakeTable(True, 0, "a")
    scheduler = hash_table_eviction.EvictionScheduler([table], clock=clock)
    for _ in range(5):
      scheduler.maybe_evict()
    self.assertEqual(table.evictions, 0)
    clock.now += 10.0
    for _ in range(5):
      scheduler.maybe_evict()
    self.assertEqual(table.evictions, 1)

  @parameterized.named_parameters(
      ("zero_hours", dict(every_n_hours=0), ValueError,
       "every_n_hours must be None or a number > 0, got 0"),
      ("negative_hours", dict(every_n_hours=-2.5), ValueError, "got -2.5"),
      ("string_hours", dict(every_n_hours="3"), ValueError, "got '3'"),
      ("bad_clock", dict(clock=5), TypeError, "clock must be callable"),
      ("bad_interval", dict(min_interval_seconds=-1), ValueError,
       "min_interval_seconds must be >= 0"),
      ("not_a_table", dict(tables=[object()]), TypeError,
       "tables\\[0\\] must be a hash_table_ops.HashTable"),
      ("none", dict(tables=None), ValueError, "got None"),
  )
  def test_bad_arguments(self, kwargs, error, regex):
    args = dict(tables=[_FakeTable(True, 1, "a")])
    args.update(kwargs)
    tables = args.pop("tables")
    with self.assertRaisesRegex(error, regex):
      hash_table_eviction.EvictionScheduler(tables, **args)
    with self.assertRaisesRegex(error, regex):
      hash_table_eviction.EvictionHook(tables, **args)

  def test_maybe_evict_refuses_graph_mode(self):
    scheduler = hash_table_eviction.EvictionScheduler(
        [_FakeTable(True, 1, "a")])
    with tf.Graph().as_default():
      with self.assertRaisesRegex(RuntimeError, "use EvictionHook"):
        scheduler.maybe_evict()


class HookTest(tf.test.TestCase):

  def test_monitored_session_evicts_on_schedule(self):
    clock = FakeClock()
    with tf.Graph().as_default():
      evicting = _table(default_days=1, evict_every_n_hours=3, name="_a")
      keeping = _table(default_days=1, evict_every_n_hours=0, name="_b")
      ids = tf.compat.v1.placeholder(tf.int64, [None])
      req = tf.compat.v1.placeholder(tf.int64, [])
      values = tf.ones([tf.size(ids), 2])
      train_op = tf.group(
          evicting.assign(ids, values, req_time=req).as_op(),
          keeping.assign(ids, values, req_time=req).as_op())
      sizes = tf.stack([evicting.size(), keeping.size()])
      capacities = tf.stack(
          [evicting.storage.capacity(),
           keeping.storage.capacity()])
      hook = hash_table_eviction.EvictionHook([evicting, keeping], clock=clock)
      self.assertEqual(hook.scheduler.tables, [evicting])
      with tf.compat.v1.train.SingularMonitoredSession(hooks=[hook]) as sess:
        self.assertTrue(sess.graph.finalized)
        sess.run(train_op, {ids: np.arange(1, 41), req: 0})
        clock.advance_hours(2)
        sess.run(train_op, {ids: [100], req: 2 * _DAY})
        # Not yet due: the stale entries are still there.
        self.assertAllEqual(sess.run(sizes), [41, 41])
        clock.advance_hours(1)
        sess.run(train_op, {ids: [101], req: 2 * _DAY})  # evicts after it
        self.assertAllEqual(sess.run(sizes), [2, 42])
        sess.run(train_op, {ids: [1], req: 0})  # ts 0 is already expired
        clock.advance_hours(3)
        sess.run(train_op, {ids: [102], req: 2 * _DAY})
        self.assertAllEqual(sess.run(sizes), [3, 43])
        evicting_capacity, keeping_capacity = sess.run(capacities)
        self.assertLess(evicting_capacity, 32)
        self.assertGreaterEqual(keeping_capacity, 43)

  def test_rejects_a_chained_table(self):
    with tf.Graph().as_default():
      table = _table(evict_every_n_hours=1)
      chained = table.assign(tf.constant([1], tf.int64), tf.ones([1, 2]))
      hook = hash_table_eviction.EvictionHook([chained])
      with self.assertRaisesRegex(ValueError, "chained after a write"):
        hook.begin()


class CallbackTest(tf.test.TestCase):

  def test_keras_fit_evicts_on_schedule(self):
    clock = FakeClock()
    table = _table(default_days=1, evict_every_n_hours=24)
    table.assign(np.arange(1, 31), np.ones([30, 2], np.float32), req_time=0)
    table.assign([500], [[1.0, 1.0]], req_time=2 * _DAY)
    sizes = []

    class Tick(tf.keras.callbacks.Callback):

      def on_train_batch_end(self, batch, logs=None):
        sizes.append(int(table.size()))
        clock.advance_hours(10)

    callback = hash_table_eviction.EvictionCallback([table], clock=clock)
    model = tf.keras.Sequential([tf.keras.Input([1]), tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros([6, 1], np.float32)
    # Tick runs first: it records the size, then moves the clock 10 hours.
    model.fit(x,
              x,
              batch_size=1,
              epochs=1,
              verbose=0,
              callbacks=[Tick(), callback])
    # Evicted after batch 3 (30 hours >= 24), never again before 54 hours.
    self.assertEqual(sizes, [31, 31, 31, 1, 1, 1])
    self.assertEqual(int(table.size()), 1)


if __name__ == "__main__":
  tf.test.main()
