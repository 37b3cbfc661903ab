"""End-to-end tests of the `hash_table_ops.HashTable` API.

The monolith-compatible surface (HASH_TABLE_SPEC Part A.2 / A.3): building a
table from an `entry.HashTableConfigInstance`, lookups, writes and their
semantics on new and duplicate ids, TF1 graph chaining, eager and
`tf.function` use, placement, growth past `initial_capacity`, and clear
errors on bad input that leave the table unchanged.

Decision documented here: ids of any shape are flattened (`[n, 1]` ids act
as `[n]` ids), for lookups and writes alike.

Save / restore are covered by `test_hash_table_checkpoint.py`; here
`lookup_entry` is checked as part of the API.
"""

import math
import re

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from monolith.native_training import entry
from monolith.native_training import hash_filter_ops
from monolith.native_training import hash_table_ops
from monolith.native_training import hash_table_storage
from monolith.native_training.runtime.hash_table import embedding_hash_table_pb2

_pb = embedding_hash_table_pb2
_MODES = (("eager", "eager"), ("graph", "graph"), ("function", "function"))
_NAME = "'MonolithHashTable'"
# Run-time (assert op) messages print the quotes escaped.
_RT_NAME = r"\\?'MonolithHashTable\\?'"


def _instance(dims=(3,),
              constant=0.5,
              optimizer=None,
              lrs=None,
              initial_capacity=1,
              extra_restore_names=None):
  """A config instance: constants initializer, SGD(0.5) unless given."""
  segments = [
      entry.CombineAsSegment(d, entry.ConstantsInitializer(constant),
                             optimizer or entry.SgdOptimizer(0.5),
                             entry.Fp32Compressor()) for d in dims
  ]
  config = entry.build_embedding_hash_table_config(
      segments, entry.CuckooHashTableConfig(initial_capacity=initial_capacity))
  return entry.HashTableConfigInstance(config, lrs or [0.5] * len(dims),
                                       extra_restore_names)


def _table(**kwargs):
  return hash_table_ops.hash_table_from_config(_instance(**kwargs))


def _run(mode, make_table, program):
  """Runs `program(table)` (a nest of tensors) eagerly, in a TF1 Session or
  inside a `tf.function`, and returns the NumPy results."""
  if mode == "graph":
    with tf.Graph().as_default():
      table = make_table()
      fetches = program(table)
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        return sess.run(fetches)
  table = make_table()
  if mode == "function":
    fetches = tf.function(lambda: program(table))()
  else:
    fetches = program(table)
  return tf.nest.map_structure(np.asarray, fetches)


def _state(table, ids):
  """Eager snapshot: size, rows in use, and the lookups of `ids`."""
  return (int(table.size()), int(table.storage.num_rows.numpy()),
          table.lookup(ids).numpy())


class ApiTest(tf.test.TestCase, parameterized.TestCase):

  def test_hash_table_from_config(self):
    instance = _instance(dims=(2, 3), extra_restore_names=["old_table"])
    table = hash_table_ops.hash_table_from_config(instance,
                                                  hash_filter=None,
                                                  name_suffix="_user",
                                                  sync_client=None,
                                                  saver_parallel=2)
    self.assertIsInstance(table, hash_table_ops.HashTable)
    self.assertIsInstance(table, hash_table_ops.BaseHashTable)
    self.assertEqual(table.name, "MonolithHashTable_user")
    self.assertEqual(table.dim_size, 5)
    self.assertEqual(table.extra_restore_names, ["old_table"])
    self.assertIs(table.config, instance)
    self.assertEqual(int(table.size()), 0)
    default = hash_table_ops.hash_table_from_config(_instance())
    self.assertEqual(default.name, "MonolithHashTable")
    self.assertEqual(default.extra_restore_names, [])

  @parameterized.named_parameters(*_MODES)
  def test_test_hash_table_monolith_example(self, mode):
    """monolith's test: ids [0, 0, 1], g = -1, SGD lr 0.1 -> [.2, .1]."""

    def program(table):
      table = table.apply_gradients([0, 0, 1], [[-1.0], [-1.0], [-1.0]], 0)
      return table.lookup([0, 1]), table.size()

    emb, size = _run(
        mode, lambda: hash_table_ops.test_hash_table(1, learning_rate=0.1),
        program)
    self.assertAllClose(emb, [[0.2], [0.1]])
    self.assertEqual(size, 2)

  def test_test_hash_table_filter_and_adagrad(self):
    # Spec B.5.3: threshold 3, ids [0, 0, 1], SGD lr 0.1, g = -1, 4 runs.
    table = hash_table_ops.test_hash_table(1,
                                           enable_hash_filter=True,
                                           learning_rate=0.1,
                                           occurrence_threshold=3)
    want = [[[0], [0]], [[.1], [0]], [[.3], [0]], [[.5], [.1]]]
    for expected in want:
      table.apply_gradients([0, 0, 1], [[-1.0], [-1.0], [-1.0]], 0)
      self.assertAllClose(table.lookup([0, 1]), expected)
    adagrad = hash_table_ops.test_hash_table(2,
                                             name_suffix="_ada",
                                             learning_rate=0.5,
                                             use_adagrad=True)
    self.assertEqual(adagrad.name, "MonolithHashTable_ada")
    adagrad.apply_gradients([4], [[2.0, -1.0]], 0)
    n = 0.1 + np.array([4.0, 1.0], np.float32)  # proto iav 0.1
    self.assertAllClose(
        adagrad.lookup([4])[0], -0.5 * np.array([2.0, -1.0]) / np.sqrt(n))

  @parameterized.named_parameters(*_MODES)
  def test_vocab_hash_table(self, mode):

    def program(table):
      size = table.size()
      zeros = table.lookup([0, 9])
      with tf.control_dependencies([size, zeros]):
        trained = table.apply_gradients([9, 10], [[1.0, 2.0], [1.0, 1.0]], 0)
      return size, zeros, trained.lookup([9, 10]), trained.size()

    size, zeros, emb, size_after = _run(
        mode, lambda: hash_table_ops.vocab_hash_table(10, 2, learning_rate=0.5),
        program)
    self.assertEqual(size, 10)
    self.assertAllEqual(zeros, np.zeros([2, 2]))
    self.assertAllClose(emb, [[-0.5, -1.0], [-0.5, -0.5]])
    self.assertEqual(size_after, 11)


class SemanticsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(*_MODES)
  def test_missing_id_returns_zeros_and_is_not_inserted(self, mode):

    def program(table):
      table = table.assign([1], [[1.0, 2.0, 3.0]])
      emb = table.lookup([5, 1, 6])
      with tf.control_dependencies([emb]):
        return emb, table.size(), table.storage.num_rows.read_value()

    emb, size, rows = _run(mode, _table, program)
    self.assertAllEqual(emb, [[0, 0, 0], [1, 2, 3], [0, 0, 0]])
    self.assertEqual(size, 1)
    self.assertEqual(rows, 1)

  @parameterized.named_parameters(*_MODES)
  def test_writes_on_new_ids_initialize_first(self, mode):
    lr, iav, c = 0.5, 0.25, 0.5
    v = np.array([[1.0, -2.0]], np.float32)
    g = np.array([[2.0, -0.5]], np.float32)

    def program(table):
      table = table.assign([1], v)
      table = table.assign_add([2], v)
      table = table.apply_gradients([3], g, 0)
      dump = table.export_entries()
      return table.lookup([1, 2, 3]), table.size(), dump

    emb, size, dump = _run(
        mode,
        lambda: _table(dims=(2,),
                       constant=c,
                       optimizer=entry.AdagradOptimizer(
                           learning_rate=lr, initial_accumulator_value=iav)),
        program)
    n = iav + g[0]**2
    self.assertAllClose(emb, [v[0], c + v[0], c - lr * g[0] / np.sqrt(n)])
    self.assertEqual(size, 3)
    norm = dict(zip(dump["ids"].tolist(), dump["slots"][(0, "norm")]))
    self.assertAllClose(norm[1], [iav, iav])  # assign: init only
    self.assertAllClose(norm[2], [iav, iav])
    self.assertAllClose(norm[3], n)

  @parameterized.named_parameters(*_MODES)
  def test_duplicate_ids(self, mode):
    lr, iav, c = 0.5, 0.1, 0.5
    rows = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)
    g = np.array([[1.0, -1.0], [2.0, 0.5]], np.float32)

    def program(table):
      table = table.assign([1, 2, 1], rows)  # last wins
      table = table.assign_add([4, 4, 5], rows)  # summed
      table = table.apply_gradients([6, 6], g, 0)  # two sequential steps
      table = table.apply_gradients([7, 7], g, 0, enable_dedup=True)
      return table.lookup([1, 2, 4, 5, 6, 7])

    emb = _run(
        mode,
        lambda: _table(dims=(2,),
                       constant=c,
                       optimizer=entry.AdagradOptimizer(
                           learning_rate=lr, initial_accumulator_value=iav)),
        program)
    w6, n6 = np.full([2], c, np.float32), np.full([2], iav, np.float32)
    for row in g:
      n6 = n6 + row * row
      w6 = w6 - lr * row / np.sqrt(n6)
    n7 = iav + g.sum(0)**2
    w7 = c - lr * g.sum(0) / np.sqrt(n7)
    self.assertAllClose(
        emb, [rows[2], rows[1], c + rows[0] + rows[1], c + rows[2], w6, w7])

  @parameterized.named_parameters(*_MODES)
  def test_int32_ids_flat_values_and_n_by_1_ids(self, mode):

    def program(table):
      ids32 = tf.constant([3, 4], tf.int32)
      table = table.assign(ids32, tf.constant([1.0, 2.0]))  # [n], D == 1
      table = table.assign_add(tf.constant([[4]], tf.int64), [[0.25]])
      table = table.apply_gradients(tf.constant([[3], [5]], tf.int32),
                                    tf.constant([1.0, -1.0], tf.float64), 0)
      return (table.lookup(ids32),
              table.lookup(tf.constant([[4], [5]], tf.int64)))

    emb32, emb_n1 = _run(mode, lambda: _table(dims=(1,), constant=0.5), program)
    self.assertAllClose(emb32, [[1.0 - 0.5], [2.25]])
    self.assertAllClose(emb_n1, [[2.25], [0.5 + 0.5]])
    self.assertEqual(emb_n1.shape, (2, 1))

  @parameterized.named_parameters(*_MODES)
  def test_lookup_entry(self, mode):
    lr, iav = 0.5, 0.25
    g = np.array([[2.0, -0.5]], np.float32)

    def program(table):
      table = table.apply_gradients([3], g, 0, req_time=1234)
      dumps = table.lookup_entry(tf.constant([3, 8], tf.int64))
      with tf.control_dependencies([dumps]):
        return dumps, table.size()

    dumps, size = _run(
        mode,
        lambda: _table(dims=(2,),
                       constant=0.5,
                       optimizer=entry.AdagradOptimizer(
                           learning_rate=lr, initial_accumulator_value=iav)),
        program)
    self.assertEqual(size, 1)  # the missing id was not inserted
    self.assertEqual(dumps[1], b"")
    dump = _pb.EntryDump.FromString(dumps[0])
    n = iav + g[0]**2
    self.assertEqual(dump.id, 3)
    self.assertAllClose(dump.num, 0.5 - lr * g[0] / np.sqrt(n))
    self.assertLen(dump.opt.dump, 1)
    self.assertAllClose(dump.opt.dump[0].adagrad.norm, n)
    self.assertEqual(dump.last_update_ts_sec, 1234)

  def test_graph_chaining(self):
    with tf.Graph().as_default():
      table = _table(dims=(2,), constant=0.0)
      written = table.assign([1, 2], [[1.0, 1.0], [2.0, 2.0]])
      added = written.assign_add([1], [[0.5, 0.5]])
      trained = added.apply_gradients([2], [[1.0, 1.0]], 0)
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        # Each run executes the chain up to the fetched table; the assign
        # at its start resets ids 1 and 2.
        self.assertAllEqual(sess.run(written.lookup([1, 2])), [[1, 1], [2, 2]])
        self.assertAllEqual(sess.run(added.lookup([1, 2])),
                            [[1.5, 1.5], [2, 2]])
        self.assertAllEqual(sess.run(trained.lookup([1, 2])),
                            [[1.5, 1.5], [1.5, 1.5]])
        self.assertEqual(sess.run(trained.size()), 2)
        self.assertAllEqual(sess.run(written.lookup([1, 2])), [[1, 1], [2, 2]])
        # as_op runs every write of the chain (each run repeats them).
        sess.run(trained.as_op())
        self.assertAllEqual(sess.run(table.lookup([1, 2])),
                            [[1.5, 1.5], [1.5, 1.5]])
        sess.run(table.apply_gradients([3], [[1.0, 1.0]], 0).as_op())
        self.assertEqual(sess.run(table.size()), 3)
        self.assertEqual(sess.run(table.as_op()), None)  # nothing chained

  @parameterized.named_parameters(("no_signature", False),
                                  ("input_signature", True))
  def test_tf_function_reuses_the_table(self, with_signature):
    table = _table(dims=(2,), constant=0.0)
    signature = [
        tf.TensorSpec([None], tf.int64),
        tf.TensorSpec([None, 2], tf.float32)
    ] if with_signature else None

    @tf.function(input_signature=signature)
    def step(ids, grads):
      trained = table.apply_gradients(ids, grads, 0)
      return trained.lookup(ids)

    created = []

    def count_creations(next_creator, **kwargs):
      created.append(kwargs.get("name"))
      return next_creator(**kwargs)

    num_vars = len(table.variables)
    with tf.variable_creator_scope(count_creations):
      for n in (1, 2, 3, 2):
        ids = tf.range(n, dtype=tf.int64)
        emb = step(ids, tf.ones([n, 2]))
    self.assertEqual(created, [])
    self.assertLen(table.variables, num_vars)
    # ids 0, 1, 2 were trained 4, 3, 1 times with g = 1, lr = 0.5.
    self.assertAllClose(emb, [[-2.0, -2.0], [-1.5, -1.5]])
    self.assertAllClose(table.lookup([2]), [[-0.5, -0.5]])
    self.assertEqual(int(table.size()), 3)
    traces = step.experimental_get_tracing_count()
    self.assertEqual(traces, 1 if with_signature else 3)

  @parameterized.named_parameters(("eager", "eager"), ("graph", "graph"))
  def test_device_placement(self, mode):

    def make():
      with tf.device("/CPU:0"):
        return _table(dims=(2,))

    def program(table):
      for var in table.variables:
        self.assertIn("CPU:0", var.device)
      table = table.assign([1], [[1.0, 2.0]])
      return table.lookup([1])

    self.assertAllEqual(_run(mode, make, program), [[1.0, 2.0]])

  def test_float_values_are_cast_and_integer_values_rejected(self):
    table = _table(dims=(2,))
    table.assign([1], np.array([[1.5, 2.5]], np.float64))
    self.assertAllEqual(table.lookup([1]), [[1.5, 2.5]])
    with self.assertRaisesRegex(
        TypeError, f"HashTable {_NAME}.assign: values must be floating "
        "point, got int32"):
      table.assign([1], [[1, 2]])


class GrowthTest(tf.test.TestCase, parameterized.TestCase):
  """`initial_capacity` 1: the storage grows by its factor on its own."""

  _BATCHES = [5, 15, 4, 8, 10, 700, 1200, 1, 1500]

  def _values(self, ids):
    ids = np.asarray(ids, np.float32)
    return np.stack([ids, -ids, ids * 0.5], axis=1)

  def _check_capacities(self, table, capacities):
    factor = table.storage.grow_factor
    self.assertGreater(factor, 1.0)
    used, previous = 0, capacities[0]
    self.assertGreaterEqual(previous, 1)
    for batch, capacity in zip(self._BATCHES, capacities[1:]):
      used += batch
      if used <= previous:
        self.assertEqual(capacity, previous)
      else:
        self.assertEqual(capacity, max(used, math.ceil(previous * factor)))
      previous = capacity
    # The small batches grew by the factor itself, not just to fit.
    self.assertIn(math.ceil(capacities[0] * factor), capacities)

  def _ids(self):
    start = 0
    for batch in self._BATCHES:
      yield np.arange(start, start + batch, dtype=np.int64) * 7919 + 3
      start += batch

  def test_eager(self):
    table = _table(initial_capacity=1)
    capacities = [int(table.storage.capacity())]
    all_ids = []
    for ids in self._ids():
      table.assign(ids, self._values(ids))
      capacities.append(int(table.storage.capacity()))
      all_ids.extend(ids)
      if len(all_ids) == 42:
        self.assertAllEqual(table.lookup(all_ids), self._values(all_ids))
    self.assertEqual(int(table.size()), sum(self._BATCHES))
    self.assertAllEqual(table.lookup(all_ids), self._values(all_ids))
    self._check_capacities(table, capacities)

  def test_graph(self):
    with tf.Graph().as_default():
      table = _table(initial_capacity=1)
      ids_ph = tf.compat.v1.placeholder(tf.int64, [None])
      values_ph = tf.compat.v1.placeholder(tf.float32, [None, 3])
      written = table.assign(ids_ph, values_ph)
      with tf.control_dependencies([written.as_op()]):
        capacity = table.storage.capacity()
      lookup = table.lookup(ids_ph)
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        capacities = [sess.run(table.storage.capacity())]
        all_ids = []
        for ids in self._ids():
          capacities.append(
              sess.run(capacity, {
                  ids_ph: ids,
                  values_ph: self._values(ids)
              }))
          all_ids.extend(ids)
        self.assertAllEqual(sess.run(lookup, {ids_ph: all_ids}),
                            self._values(all_ids))
        self.assertEqual(sess.run(table.size()), sum(self._BATCHES))
    self._check_capacities(table, capacities)


class ErrorsTest(tf.test.TestCase, parameterized.TestCase):

  def _write(self, table, method, ids, rows):
    if method == "apply_gradients":
      return table.apply_gradients(ids, rows, 0)
    return getattr(table, method)(ids, rows)

  @parameterized.named_parameters(
      ("grads_wide", "apply_gradients", "grads", [3, 5], [3, 5]),
      ("grads_rank1", "apply_gradients", "grads", [3], [3]),
      ("grads_rows", "apply_gradients", "grads", [2, 4], [2, 4]),
      ("values_rank3", "assign", "values", [3, 4, 1], [3, 4, 1]),
      ("values_narrow", "assign_add", "values", [3, 1], [3, 1]))
  def test_static_shape_is_a_value_error(self, method, arg, shape, shown):
    pattern = (f"HashTable {_NAME}.{method}: {arg} must have shape "
               rf"\[len\(ids\), 4\], got {re.escape(str(shown))} for 3 ids")
    table = _table(dims=(4,))
    with self.assertRaisesRegex(ValueError, pattern):
      self._write(table, method, [1, 2, 3], np.ones(shape, np.float32))
    with tf.Graph().as_default():
      graph_table = _table(dims=(4,))
      ids = tf.compat.v1.placeholder(tf.int64, [3])
      rows = tf.compat.v1.placeholder(tf.float32, shape)
      with self.assertRaisesRegex(ValueError, pattern):
        self._write(graph_table, method, ids, rows)
    self.assertEqual(int(table.size()), 0)

  def _unchanged_after(self, table, bad_write, check_filter=True):
    """Runs a good write, a failing `bad_write`, and checks nothing moved."""
    for _ in range(2):  # Threshold 1: admitted on the second occurrence.
      table.assign([1, 2], [[1.0, 1.0], [2.0, 2.0]])
    before = _state(table, [1, 2])
    self.assertEqual(before[0], 2)
    bad_write()
    self.assertEqual(_state(table, [1, 2])[:2], before[:2])
    self.assertAllEqual(_state(table, [1, 2])[2], before[2])
    if check_filter:
      # Threshold 1: a counted id would be admitted by this second write.
      table.assign([9], [[3.0, 3.0]])
      self.assertEqual(int(table.size()), 2)

  def _filtered_table(self):
    config = _pb.SlotOccurrenceThresholdConfig(default_occurrence_threshold=1)
    hash_filter = hash_filter_ops.create_hash_filter(
        capacity=1024, config=config.SerializeToString())
    instance = _instance(dims=(2,))
    return hash_table_ops.hash_table_from_config(instance, hash_filter)

  @parameterized.named_parameters(("sequential", False), ("dedup", True))
  def test_dynamic_shape_mismatch_changes_nothing(self, dedup):
    pattern = (f"HashTable {_RT_NAME}.apply_gradients: grads must have "
               r"shape \[len\(ids\), 2\]")
    ids = [9, 9, 3]
    grads = np.ones([2, 2], np.float32)
    # Eager (shapes are static there: ValueError before any op runs).
    eager = self._filtered_table()

    def eager_write():
      with self.assertRaisesRegex(ValueError, pattern):
        eager.apply_gradients(ids, grads, 0, enable_dedup=dedup)

    self._unchanged_after(eager, eager_write)
    # tf.function with an input signature: checked at run time.
    table = self._filtered_table()

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.int64),
        tf.TensorSpec([None, 2], tf.float32)
    ])
    def train(ids, grads):
      table.apply_gradients(ids, grads, 0, enable_dedup=dedup)

    def function_write():
      with self.assertRaisesRegex(tf.errors.InvalidArgumentError, pattern):
        train(tf.constant(ids, tf.int64), grads)

    self._unchanged_after(table, function_write)
    # TF1 graph: checked at run time.
    with tf.Graph().as_default():
      graph_table = self._filtered_table()
      ids_ph = tf.compat.v1.placeholder(tf.int64, [None])
      grads_ph = tf.compat.v1.placeholder(tf.float32, [None, 2])
      bad = graph_table.apply_gradients(ids_ph, grads_ph, 0,
                                        enable_dedup=dedup).as_op()
      good = graph_table.assign(ids_ph, grads_ph).as_op()
      lookup = graph_table.lookup([1, 2])
      state = [graph_table.size(), graph_table.storage.num_rows.read_value()]
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        for _ in range(2):
          sess.run(good, {ids_ph: [1, 2], grads_ph: [[1, 1], [2, 2]]})
        before = sess.run(state), sess.run(lookup)
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, pattern):
          sess.run(bad, {ids_ph: ids, grads_ph: grads})
        self.assertEqual(sess.run(state), before[0])
        self.assertAllEqual(sess.run(lookup), before[1])
        sess.run(good, {ids_ph: [9], grads_ph: [[3, 3]]})
        self.assertEqual(sess.run(graph_table.size()), 2)

  @parameterized.named_parameters(("empty", hash_table_storage.EMPTY_KEY),
                                  ("deleted", hash_table_storage.DELETED_KEY))
  def test_reserved_ids_change_nothing(self, reserved):
    pattern = (f"HashTable {_RT_NAME}.assign_add: ids may not be "
               f"{hash_table_storage.EMPTY_KEY} or "
               f"{hash_table_storage.DELETED_KEY}")
    ids = [9, reserved, 3]
    rows = np.ones([3, 2], np.float32)
    eager = self._filtered_table()

    def eager_write():
      with self.assertRaisesRegex(tf.errors.InvalidArgumentError, pattern):
        eager.assign_add(ids, rows)

    self._unchanged_after(eager, eager_write)
    table = self._filtered_table()

    @tf.function
    def train(ids, rows):
      table.assign_add(ids, rows)

    def function_write():
      with self.assertRaisesRegex(tf.errors.InvalidArgumentError, pattern):
        train(tf.constant(ids, tf.int64), rows)

    self._unchanged_after(table, function_write)
    with tf.Graph().as_default():
      graph_table = self._filtered_table()
      ids_ph = tf.compat.v1.placeholder(tf.int64, [None])
      bad = graph_table.assign_add(ids_ph, rows).as_op()
      state = [graph_table.size(), graph_table.storage.num_rows.read_value()]
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, pattern):
          sess.run(bad, {ids_ph: ids})
        self.assertEqual(sess.run(state), [0, 0])
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                f"HashTable {_NAME}.lookup: ids may not be"):
      eager.lookup([reserved])

  def test_req_time_must_be_a_scalar(self):
    table = _table(dims=(2,))
    table.assign([1], [[1.0, 1.0]], req_time=5)
    before = _state(table, [1])
    with self.assertRaisesRegex(
        ValueError, f"HashTable {_NAME}.assign: req_time must be a scalar, "
        r"got shape \[2\]"):
      table.assign([1, 4], [[2.0, 2.0], [2.0, 2.0]], req_time=[1, 2])
    self.assertEqual(_state(table, [1])[:2], before[:2])
    self.assertAllEqual(_state(table, [1])[2], before[2])
    with tf.Graph().as_default():
      graph_table = _table(dims=(2,))
      req = tf.compat.v1.placeholder(tf.int64, [None])
      bad = graph_table.assign([4], [[2.0, 2.0]], req_time=req).as_op()
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        with self.assertRaises(tf.errors.InvalidArgumentError):
          sess.run(bad, {req: [1, 2]})
        self.assertEqual(sess.run(graph_table.size()), 0)
        sess.run(bad, {req: [7]})
        self.assertEqual(sess.run(graph_table.size()), 1)
        self.assertEqual(sess.run(graph_table.max_update_ts), 7)

  @parameterized.named_parameters(
      ("float32", tf.float32), ("float64", tf.float64), ("string", tf.string))
  def test_non_integer_ids_are_a_type_error(self, dtype):
    table = _table(dims=(2,))
    ids = tf.constant(["a"]) if dtype == tf.string else tf.constant([1.0],
                                                                    dtype)
    name = dtype.name
    with self.assertRaisesRegex(
        TypeError, f"HashTable {_NAME}.lookup: ids must be int64 .*got {name}"):
      table.lookup(ids)
    with self.assertRaisesRegex(
        TypeError,
        f"HashTable {_NAME}.apply_gradients: ids must be int64 .*got {name}"):
      table.apply_gradients(ids, [[1.0, 1.0]], 0)

  def _segment(self, **fields):
    segment = entry.CombineAsSegment(2, entry.ZerosInitializer(),
                                     entry.SgdOptimizer(0.1),
                                     entry.Fp32Compressor())
    for field, value in fields.items():
      if value is None:
        segment.ClearField(field)
      else:
        getattr(segment, field).CopyFrom(value)
    return segment

  @parameterized.named_parameters(
      ("no_init", {
          "init_config": None
      }, "segment 0 has no init_config"), ("no_opt", {
          "opt_config": None
      }, "segment 0 has no opt_config"), ("empty_init", {
          "init_config": _pb.InitializerConfig()
      }, r"segment 0 init_config: no initializer is set; set one of \["),
      ("empty_opt", {
          "opt_config": _pb.OptimizerConfig()
      }, r"segment 0 opt_config: no optimizer is set; set one of \["),
      ("empty_comp", {
          "comp_config": _pb.FloatCompressorConfig()
      }, "segment 0: comp_config has no compressor set; set one of"), ("dc", {
          "opt_config": entry.DcOptimizer().as_proto()
      }, "segment 0 opt_config: optimizer 'dc' has no update rule"),
      ("enable_dynamic_wd", {
          "opt_config":
              entry.DynamicWdAdagradOptimizer(decouple_weight_decay=True,
                                              enable_dynamic_wd=True,
                                              flip_direction=False).as_proto()
      }, "dynamic_wd_adagrad.enable_dynamic_wd is true"), ("flip_direction", {
          "opt_config":
              entry.DynamicWdAdagradOptimizer(decouple_weight_decay=False,
                                              enable_dynamic_wd=False,
                                              flip_direction=True).as_proto()
      }, "dynamic_wd_adagrad.flip_direction is true"))
  def test_bad_segment_is_a_value_error(self, fields, message):
    config = entry.build_embedding_hash_table_config(
        [self._segment(), self._segment(**fields)])
    if "segment 0" in message:
      config = entry.build_embedding_hash_table_config(
          [self._segment(**fields)])
    instance = entry.HashTableConfigInstance(config, [0.1] *
                                             len(config.entry_config.segments))
    with self.assertRaisesRegex(ValueError, f"HashTable {_NAME}: .*{message}"):
      hash_table_ops.hash_table_from_config(instance)

  def test_bad_config_is_an_error(self):
    empty = entry.HashTableConfigInstance(_pb.EmbeddingHashTableConfig(), [])
    with self.assertRaisesRegex(
        ValueError, f"HashTable {_NAME}: the config has no segments"):
      hash_table_ops.hash_table_from_config(empty)
    config = entry.build_embedding_hash_table_config(
        [self._segment(), self._segment()])
    for lrs in ([0.1], [0.1, 0.1, 0.1]):
      with self.assertRaisesRegex(
          ValueError, f"HashTable {_NAME}: learning_rate_fns has {len(lrs)} "
          "entries, but the config has 2 segments"):
        hash_table_ops.hash_table_from_config(
            entry.HashTableConfigInstance(config, lrs))
    with self.assertRaisesRegex(
        TypeError, "config must be an entry.HashTableConfigInstance, got "
        "EmbeddingHashTableConfig"):
      hash_table_ops.hash_table_from_config(config)

  def test_valid_dynamic_wd_adagrad_builds(self):
    opt = entry.DynamicWdAdagradOptimizer(decouple_weight_decay=True,
                                          enable_dynamic_wd=False,
                                          flip_direction=False)
    table = _table(dims=(2,), optimizer=opt)
    table.apply_gradients([1], [[1.0, 1.0]], 0)
    self.assertEqual(int(table.size()), 1)


if __name__ == "__main__":
  tf.test.main()


class SumDuplicatesTest(tf.test.TestCase):

  def test_sums_rows_of_equal_ids_like_numpy(self):
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 7, size=50)
    values = rng.normal(size=[50, 3]).astype(np.float32)
    values[4, 1] = np.inf
    unique, idx = np.unique(ids, return_inverse=True)
    got = hash_table_ops.sum_duplicates(tf.constant(values),
                                        tf.constant(idx, tf.int64),
                                        tf.constant(len(unique), tf.int64))
    want = np.zeros([len(unique), 3], np.float32)
    for i, k in enumerate(idx):
      want[k] += values[i]
    self.assertAllClose(got, want, rtol=1e-6)
    self.assertEqual(got.numpy()[idx[4], 1], np.inf)
