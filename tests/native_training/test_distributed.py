"""Tests of sharded hash tables on TensorFlow's distributed runtime.

One in-process cluster (3 PS + 2 workers, `tf.distribute.Server`s on
127.0.0.1, plus a worker address a subprocess takes) serves the TF1 tests:
real gRPC steps check that a `ShardedHashTable` trains exactly like one table
(NumPy references from HASH_TABLE_SPEC's SGD / Adagrad formulas with
dedup-summed gradients, and a single `HashTable` run for other optimizers),
that every id lives on shard `id mod num_ps`, that two asynchronous workers
writing one shard lose nothing, `MonitoredTrainingSession` with chief-only
initialization and `Saver` checkpoints of every shard, re-sharding 2 -> 3 PS,
and a worker killed mid-step. A second small cluster with a PS in a
subprocess checks that a request to a dead PS fails with `UnavailableError`
and that training resumes from the last checkpoint after the PS restarts.
The TF2 strategies (`ParameterServerStrategy` + `ClusterCoordinator`,
`MirroredStrategy` on 2 logical CPUs) run in subprocesses, since they change
process-wide TensorFlow state; they start when the module does and run
while the TF1 tests run. The example's worker (`distributed_demo`) trains a
few steps on an in-process PS pair.
"""

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from monolith.native_training import distributed
from monolith.native_training import entry
from monolith.native_training import hash_table_ops
from monolith.native_training import sharded_hash_table
from monolith.native_training.examples import distributed_demo

_NUM_PS = 3
_SUBPROCESS_TIMEOUT = 300  # Seconds; generous for a loaded 2-core machine.


def _config(kind: str) -> entry.HashTableConfigInstance:
  """Configs: 'sgd', 'sgd_rounded' (D=1, lr .5), 'adagrad' (D=3, lr .1),
  'mixed'."""
  if kind in ("sgd", "sgd_rounded", "adagrad"):  # Zeros init, fp32.
    dim, lr = (3, 0.1) if kind == "adagrad" else (1, 0.5)
    optimizer = (entry.AdagradOptimizer(learning_rate=lr)
                 if kind == "adagrad" else entry.SgdOptimizer(learning_rate=lr))
    segment = entry.CombineAsSegment(dim, entry.ZerosInitializer(), optimizer,
                                     entry.Fp32Compressor())
    # Stochastic rounding to fp16 (exact on the small integers used) makes
    # the update read `global_step`.
    segment.opt_config.stochastic_rounding_float16 = kind == "sgd_rounded"
    return entry.HashTableConfigInstance(
        entry.build_embedding_hash_table_config([segment]), [lr])
  segments = [
      entry.CombineAsSegment(2, entry.RandomUniformInitializer(-0.1, 0.1),
                             entry.AdamOptimizer(0.05), entry.Fp32Compressor()),
      entry.CombineAsSegment(3, entry.ZerosInitializer(),
                             entry.FtrlOptimizer(learning_rate=0.1),
                             entry.Fp32Compressor()),
  ]
  return entry.HashTableConfigInstance(
      entry.build_embedding_hash_table_config(segments), [0.05, 0.1])


def _batches(dim: int, steps: int = 4, size: int = 24, seed: int = 0):
  """Steps of (ids with duplicates and negative ids, float32 grads)."""
  rng = np.random.default_rng(seed)
  return [(rng.integers(-30, 30,
                        size), rng.normal(size=(size, dim)).astype(np.float32))
          for _ in range(steps)]


def _reference(kind: str, batches, lr: float):
  """NumPy SGD / Adagrad (Part B 2.1, 2.2) with dedup-summed gradients."""
  weights, norms = {}, {}
  for ids, grads in batches:
    for i in np.unique(ids):
      g = grads[ids == i].astype(np.float64).sum(axis=0)
      w = weights.get(i, np.zeros_like(g))
      if kind == "sgd":
        weights[i] = w - lr * g
      else:  # Adagrad: n starts at 0.1, no epsilon, no weight decay.
        n = norms.get(i, np.full_like(g, 0.1)) + g * g
        norms[i] = n
        weights[i] = w - lr / np.sqrt(n) * g
  return weights


# --------------------------------------------------------------- clusters


class _Cluster:
  """In-process servers of a cluster; `spawn` jobs are left to subprocesses."""

  def __init__(self, spec, spawn=()):
    self.spec = spec
    self.servers = {}
    for job, addresses in spec.items():
      for task in range(len(addresses)):
        if (job, task) not in spawn:
          self.servers[(job, task)] = distributed.start_server(spec, job, task)

  def target(self, task: int = 0) -> str:
    return self.servers[("worker", task)].target


_MAIN = None
_FAULT = None
_BACKGROUND = {}


def _main_cluster() -> _Cluster:
  """3 PS + workers 0, 1 in-process; worker 2's address for a subprocess."""
  global _MAIN
  if _MAIN is None:
    spec = distributed.local_cluster_spec(_NUM_PS, 3)
    _MAIN = _Cluster(spec, spawn={("worker", 2)})
  return _MAIN


def _session(task: int = 0, graph=None, timeout_ms: int = 60000):
  return tf.compat.v1.Session(_main_cluster().target(task),
                              graph=graph,
                              config=distributed.session_config(
                                  "worker", task, timeout_ms))


def _run_subprocess(mode: str, *args) -> subprocess.Popen:
  """This file run as a script in `mode` (see `_subprocess_main`)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.Popen([sys.executable, __file__, mode] + list(args),
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          env=env,
                          text=True)


def setUpModule():  # pylint: disable=invalid-name
  """Starts the subprocesses early: they import TensorFlow while TF1 runs."""
  global _FAULT
  _BACKGROUND["pss"] = _run_subprocess("pss")
  _BACKGROUND["mirrored"] = _run_subprocess("mirrored")
  spec = distributed.local_cluster_spec(2, 1)
  ps1 = distributed.ServerProcess(spec, "ps", 1).start()
  _FAULT = (_Cluster(spec, spawn={("ps", 1)}), ps1)


def tearDownModule():  # pylint: disable=invalid-name
  for process in _BACKGROUND.values():
    if process.poll() is None:
      process.kill()
      process.wait()
  if _FAULT is not None:
    _FAULT[1].kill()


def _wait_output(test, mode: str) -> str:
  process = _BACKGROUND[mode]
  try:
    output, _ = process.communicate(timeout=_SUBPROCESS_TIMEOUT)
  except subprocess.TimeoutExpired:
    process.kill()
    output, _ = process.communicate()
    test.fail(f"{mode} subprocess timed out; output:\n{output[-4000:]}")
  test.assertEqual(process.returncode, 0, f"{mode} failed:\n{output[-4000:]}")
  lines = [l for l in output.splitlines() if l.startswith("RESULT ")]
  test.assertLen(lines, 1, output[-4000:])
  return json.loads(lines[0][len("RESULT "):])


# ------------------------------------------------------------ local tests


class ShardedHashTableLocalTest(tf.test.TestCase, parameterized.TestCase):
  """Routing, API and errors on local devices (eager)."""

  def test_shard_of_uses_floormod(self):
    ids = [-7, -1, 0, 1, 5, 2**62 + 3]
    self.assertAllEqual(sharded_hash_table.shard_of(ids, 3),
                        [np.int64(i) % 3 for i in [-7, -1, 0, 1, 5, 2**62 + 3]])

  @parameterized.named_parameters(("one_shard", 1), ("three_shards", 3))
  def test_writes_and_reads_match_one_table(self, num_shards):
    config = _config("mixed")
    single = hash_table_ops.HashTable(config, seed=7)
    sharded = sharded_hash_table.ShardedHashTable(config,
                                                  num_shards,
                                                  devices=["/cpu:0"] *
                                                  num_shards,
                                                  seed=7)
    rng = np.random.default_rng(1)
    for step, (ids, grads) in enumerate(_batches(5, steps=3)):
      for table in (single, sharded):
        table.apply_gradients(ids,
                              grads,
                              step,
                              enable_dedup=True,
                              req_time=100 + step)
    values = rng.normal(size=(4, 5)).astype(np.float32)
    for table in (single, sharded):
      table.assign([3, 40, 3, 41], values, req_time=500)  # Later 3 wins.
      table.assign_add([41, 42, 42], values[:3], req_time=600)
    probe = np.arange(-35, 45)
    self.assertAllClose(sharded.lookup(probe), single.lookup(probe))
    self.assertAllClose(sharded.lookup(probe[:, None]), single.lookup(probe))
    exact = probe[probe != 42]  # 42: (init + v1) + v2 vs init + (v1 + v2).
    self.assertAllEqual(sharded.lookup_entry(exact), single.lookup_entry(exact))
    self.assertEqual(int(sharded.size()), int(single.size()))
    exported = sharded.export_entries()
    order = np.argsort(exported["ids"].numpy())
    self.assertAllEqual(exported["ids"].numpy()[order],
                        np.sort(single.export_entries()["ids"].numpy()))
    for i, shard in enumerate(sharded.shards):
      ids = shard.export_entries()["ids"].numpy()
      self.assertAllEqual(np.mod(ids, num_shards), np.full(len(ids), i))

  def test_evict_and_empty_lookup(self):
    config = _config("sgd")
    config.table_config.slot_expire_time_config.default_expire_time = 1
    single = hash_table_ops.HashTable(config)
    sharded = sharded_hash_table.ShardedHashTable(config,
                                                  3,
                                                  devices=["/cpu:0"] * 3)
    for table in (single, sharded):
      table.assign([1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0], req_time=0)
      table.assign([3, 5], [30.0, 50.0], req_time=86400)  # 1, 2, 4 expire.
      table.evict()
    self.assertEqual(int(sharded.size()), 2)
    self.assertAllEqual(sharded.lookup([1, 2, 3, 4, 5]),
                        single.lookup([1, 2, 3, 4, 5]))
    empty = sharded.lookup(np.zeros([0], np.int64))
    self.assertEqual(empty.shape.as_list(), [0, 1])

  def test_sequential_steps_without_dedup(self):
    config = _config("adagrad")
    single = hash_table_ops.HashTable(config)
    sharded = sharded_hash_table.ShardedHashTable(config,
                                                  2,
                                                  devices=["/cpu:0"] * 2)
    ids = np.array([4, 4, 5, 4, -3])
    grads = np.arange(15, dtype=np.float32).reshape(5, 3) / 7
    single.apply_gradients(ids, grads, 0, enable_dedup=False)
    sharded.apply_gradients(ids, grads, 0, enable_dedup=False)
    self.assertAllClose(sharded.lookup([4, 5, -3]), single.lookup([4, 5, -3]))

  def test_restore_reshards_and_reads_single_table_saves(self):
    config = _config("mixed")
    directory = self.get_temp_dir()
    source = sharded_hash_table.ShardedHashTable(config,
                                                 2,
                                                 devices=["/cpu:0"] * 2)
    single = hash_table_ops.HashTable(config)
    for step, (ids, grads) in enumerate(_batches(5)):
      source.apply_gradients(ids, grads, step, req_time=1000 + step)
      single.apply_gradients(ids,
                             grads,
                             step,
                             enable_dedup=True,
                             req_time=1000 + step)
    source.save(os.path.join(directory, "sharded"))
    single.save(os.path.join(directory, "single"))
    expected = _sorted_entries(single.export_entries(drop_expired=False))
    for basename, num_shards in (("sharded", 3), ("single", 2)):
      target = sharded_hash_table.ShardedHashTable(config,
                                                   num_shards,
                                                   devices=["/cpu:0"] *
                                                   num_shards)
      target.assign([999], [[1.0] * 5])  # Replaced by the restore.
      target.restore(os.path.join(directory, basename))
      _assert_same_entries(self, expected,
                           _sorted_entries(target.export_entries(False)))
      for i, shard in enumerate(target.shards):
        ids = shard.export_entries()["ids"].numpy()
        self.assertAllEqual(np.mod(ids, num_shards), np.full(len(ids), i))

  def test_restore_errors(self):
    config = _config("sgd")
    directory = self.get_temp_dir()
    table = sharded_hash_table.ShardedHashTable(config,
                                                3,
                                                devices=["/cpu:0"] * 3)
    table.assign([1, 2, 3], [1.0, 2.0, 3.0])
    with self.assertRaisesRegex(tf.errors.NotFoundError, "no saved shard"):
      table.restore(os.path.join(directory, "missing"))
    table.save(os.path.join(directory, "t"))
    os.remove(os.path.join(directory, "t.ps-00001-of-00003-00000-of-00001"))
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                "not one complete sharded save"):
      table.restore(os.path.join(directory, "t"))
    self.assertAllEqual(table.lookup([1, 2, 3])[:, 0], [1.0, 2.0, 3.0])

  def test_argument_errors(self):
    config = _config("sgd")
    with self.assertRaisesRegex(ValueError, "num_shards must be an int >= 1"):
      sharded_hash_table.ShardedHashTable(config, 0)
    with self.assertRaisesRegex(ValueError, "devices must have num_shards=2"):
      sharded_hash_table.ShardedHashTable(config, 2, devices=["/cpu:0"])
    with self.assertRaisesRegex(ValueError, "hash_filters must have"):
      sharded_hash_table.ShardedHashTable(config,
                                          2,
                                          devices=["/cpu:0"] * 2,
                                          hash_filters=[None])
    table = sharded_hash_table.ShardedHashTable(config,
                                                2,
                                                devices=["/cpu:0"] * 2)
    with self.assertRaisesRegex(TypeError, "ids must be int64"):
      table.lookup([1.5])
    with self.assertRaisesRegex(ValueError, r"grads must have shape \[len"):
      table.apply_gradients([1, 2], [[1.0, 2.0]], 0)
    with self.assertRaisesRegex(ValueError, "no 'ps' task"):
      distributed.sharded_table_for_cluster({"worker": ["a:1"]}, config)
    with self.assertRaisesRegex(ValueError, "inside a strategy's scope"):
      with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        sharded_hash_table.ShardedHashTable(config, 1, devices=["/cpu:0"])

  def test_cluster_config_parsing(self):
    spec = {"ps": ["h:1", "h:2"], "worker": ["h:3"]}
    self.assertEqual(distributed.parse_cluster_spec(json.dumps(spec)), spec)
    tf_config = json.dumps({
        "cluster": spec,
        "task": {
            "type": "ps",
            "index": 1
        }
    })
    self.assertEqual(distributed.cluster_from_tf_config(tf_config),
                     (spec, "ps", 1))
    with self.assertRaisesRegex(ValueError, "not in the cluster"):
      distributed.cluster_from_tf_config(
          json.dumps({
              "cluster": spec,
              "task": {
                  "type": "ps",
                  "index": 5
              }
          }))
    with self.assertRaisesRegex(ValueError, "cluster_spec must be JSON"):
      distributed.parse_cluster_spec("ps=h:1")


def _sorted_entries(entries):
  order = np.argsort(np.asarray(entries["ids"]))
  return {
      "ids": np.asarray(entries["ids"])[order],
      "weights": np.asarray(entries["weights"])[order],
      "timestamps": np.asarray(entries["timestamps"])[order],
      "slots": {
          k: np.asarray(v)[order] for k, v in entries["slots"].items()
      },
  }


def _assert_same_entries(test, expected, got):
  test.assertAllEqual(got["ids"], expected["ids"])
  test.assertAllEqual(got["weights"], expected["weights"])
  test.assertAllEqual(got["timestamps"], expected["timestamps"])
  test.assertEqual(sorted(got["slots"]), sorted(expected["slots"]))
  for key, value in expected["slots"].items():
    test.assertAllEqual(got["slots"][key], value)


# ------------------------------------------------------- TF1 on a cluster


class ClusterTest(tf.test.TestCase, parameterized.TestCase):
  """TF1 between-graph replication on the in-process cluster."""

  def _name(self, suffix: str = "") -> str:
    """A table name of its own: resources on a PS are shared by name."""
    return "t_" + self.id().split(".")[-1] + suffix

  def _wipe(self, sess, table) -> None:
    """Empties every shard (as a restarted PS would be)."""
    with sess.graph.as_default():
      empty = table.import_entries(tf.zeros([0], tf.int64),
                                   tf.zeros([0, table.dim_size]), {},
                                   tf.zeros([0], tf.int64))
      sess.run(empty.as_op())
      self.assertEqual(sess.run(table.size()), 0)

  def _shard_state(self, table):
    """Per shard: its ids and `num_rows` (tensors to fetch)."""
    return [(s.export_entries()["ids"], s.storage.num_rows.read_value())
            for s in table.shards]

  @parameterized.named_parameters(
      ("sgd_2ps", "sgd", 2), ("adagrad_2ps", "adagrad", 2),
      ("adagrad_3ps", "adagrad", 3), ("mixed_3ps", "mixed", 3))
  def test_matches_one_table_and_routes_by_id(self, kind, num_ps):
    config = _config(kind)
    dim = sum(s.dim_size for s in config.table_config.entry_config.segments)
    batches = _batches(dim, steps=4)
    graph = tf.Graph()
    with graph.as_default():
      setter = tf.compat.v1.train.replica_device_setter(
          ps_tasks=num_ps, worker_device="/job:worker/task:0")
      with tf.compat.v1.device(setter):
        table = sharded_hash_table.ShardedHashTable(config,
                                                    num_ps,
                                                    seed=3,
                                                    name=self._name())
        ids = tf.compat.v1.placeholder(tf.int64, [None])
        grads = tf.compat.v1.placeholder(tf.float32, [None, dim])
        step = tf.compat.v1.placeholder(tf.int64, [])
        looked_up = table.lookup(ids)
        train = table.apply_gradients(ids, grads, step).as_op()
        shard_state = self._shard_state(table)
        init = tf.compat.v1.global_variables_initializer()
    for i, shard in enumerate(table.shards):
      devices = {v.device for v in shard.variables}
      devices.add(shard.storage.index.resource_handle.device)
      self.assertEqual(devices, {f"/job:ps/replica:0/task:{i}/device:CPU:0"})
    with _session(graph=graph) as sess:
      sess.run(init)
      for k, (b_ids, b_grads) in enumerate(batches):
        sess.run(train, {ids: b_ids, grads: b_grads, step: k})
      probe = np.arange(-32, 32)
      got = sess.run(looked_up, {ids: probe})
      state = sess.run(shard_state)
    seen = np.unique(np.concatenate([b[0] for b in batches]))
    if kind == "mixed":  # A single table, eagerly, with the same seed.
      single = hash_table_ops.HashTable(config, seed=3)
      for k, (b_ids, b_grads) in enumerate(batches):
        single.apply_gradients(b_ids, b_grads, k, enable_dedup=True)
      expected = single.lookup(probe).numpy()
      self.assertAllClose(got, expected, rtol=1e-6, atol=1e-7)
    else:
      reference = _reference(kind, batches, 0.5 if kind == "sgd" else 0.1)
      expected = np.stack([reference.get(i, np.zeros(dim)) for i in probe
                          ]).astype(np.float32)
      self.assertAllClose(got, expected, rtol=1e-5, atol=1e-6)
    all_ids = []
    for i, (shard_ids, num_rows) in enumerate(state):
      self.assertAllEqual(np.mod(shard_ids, num_ps), np.full(len(shard_ids), i))
      self.assertEqual(num_rows, len(shard_ids))
      all_ids.extend(shard_ids)
    self.assertAllEqual(np.sort(all_ids), seen)  # Each id on one shard.

  def test_async_workers_writing_one_shard_lose_nothing(self):
    """Two workers insert disjoint new ids into both shards concurrently."""
    steps, new_per_step, shared = 12, 3000, np.arange(64) + 10**9
    errors = []

    def build():
      graph = tf.Graph()
      with graph.as_default():
        table = sharded_hash_table.ShardedHashTable(_config("sgd"),
                                                    2,
                                                    name=self._name())  # lr 0.5
        ids = tf.compat.v1.placeholder(tf.int64, [None])
        train = table.apply_gradients(ids, -2.0 * tf.ones([tf.size(ids), 1]),
                                      0).as_op()
      return graph, table, ids, train

    graph, table, _, _ = build()
    with graph.as_default():
      init = tf.compat.v1.global_variables_initializer()
    with _session(graph=graph) as sess:
      sess.run(init)

    def work(task):
      try:
        graph, _, ids, train = build()
        with _session(task, graph=graph) as sess:
          for k in range(steps):
            new = np.arange(new_per_step) + (2 * k + task) * new_per_step
            sess.run(train, {ids: np.concatenate([new, shared])})
      except Exception as e:  # pylint: disable=broad-except
        errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in (0, 1)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    self.assertEqual(errors, [])
    num_new = 2 * steps * new_per_step
    with graph.as_default():
      probe = table.lookup(
          np.concatenate([np.arange(num_new), shared, [-5, num_new]]))
      size = table.size()
      shard_state = self._shard_state(table)
    with _session(graph=graph) as sess:
      values, size, state = sess.run([probe, size, shard_state])
    self.assertEqual(size, num_new + len(shared))
    self.assertAllEqual(values[:num_new, 0], np.ones(num_new))
    self.assertAllEqual(values[num_new:-2, 0], np.full(len(shared),
                                                       2.0 * steps))
    self.assertAllEqual(values[-2:, 0], [0.0, 0.0])
    for shard_ids, num_rows in state:
      self.assertEqual(num_rows, len(shard_ids))  # No leaked or shared rows.

  def test_monitored_training_session_chief_init_and_saver_restore(self):
    """Async chief + worker; checkpoint of every shard; PS state lost."""
    checkpoint_dir = tempfile.mkdtemp(dir=self.get_temp_dir())
    steps = 5
    spec = {k: v for k, v in _main_cluster().spec.items()}
    chief_ready, worker_done = threading.Event(), threading.Event()
    errors = []

    def batch(task, k):
      ids = np.arange(20) * (k + 1) + 100 * task - 7
      return ids, np.ones([len(ids), 1], np.float32) * (task + 1)

    def build():
      graph = tf.Graph()
      with graph.as_default():
        with tf.compat.v1.device(
            tf.compat.v1.train.replica_device_setter(
                cluster=tf.train.ClusterSpec({
                    "ps": spec["ps"][:2],
                    "worker": spec["worker"]
                }))):
          global_step = tf.compat.v1.train.get_or_create_global_step()
          table = sharded_hash_table.ShardedHashTable(_config("sgd"),
                                                      2,
                                                      name=self._name())
          ids = tf.compat.v1.placeholder(tf.int64, [None])
          grads = tf.compat.v1.placeholder(tf.float32, [None, 1])
          dense = tf.compat.v1.get_variable(self._name("_dense"),
                                            initializer=[0.0])
          train = tf.group(
              table.apply_gradients(ids, grads, global_step).as_op(),
              dense.assign_add([1.0]), global_step.assign_add(1))
      return graph, table, ids, grads, train, global_step

    def work(task):
      try:
        graph, _, ids, grads, train, _ = build()
        if task == 1:
          chief_ready.wait(60)
        with graph.as_default():
          with tf.compat.v1.train.MonitoredTrainingSession(
              master=_main_cluster().target(task),
              is_chief=task == 0,
              checkpoint_dir=checkpoint_dir if task == 0 else None,
              save_checkpoint_steps=1000,
              save_summaries_steps=None,
              save_summaries_secs=None,
              log_step_count_steps=None,
              config=distributed.session_config("worker", task)) as sess:
            if task == 0:
              chief_ready.set()
            for k in range(steps):
              b_ids, b_grads = batch(task, k)
              sess.run(train, {ids: b_ids, grads: b_grads})
            if task == 0:
              worker_done.wait(60)  # The final checkpoint has both.
        if task == 1:
          worker_done.set()
      except Exception as e:  # pylint: disable=broad-except
        errors.append(e)
        chief_ready.set()
        worker_done.set()

    threads = [threading.Thread(target=work, args=(t,)) for t in (0, 1)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    self.assertEqual(errors, [])
    reference = _reference("sgd",
                           [batch(t, k) for t in (0, 1) for k in range(steps)],
                           0.5)
    probe = np.array(sorted(reference))
    expected = np.stack([reference[i] for i in probe]).astype(np.float32)

    # The shards lose their entries (as on a PS restart); the chief's new
    # session restores every shard from the checkpoint.
    graph, table, _, _, _, global_step = build()
    with graph.as_default():
      looked_up = table.lookup(probe)
      sizes = table.shard_sizes()
      with _session(graph=graph) as sess:
        self._wipe(sess, table)
      with tf.compat.v1.train.MonitoredTrainingSession(
          master=_main_cluster().target(0),
          is_chief=True,
          checkpoint_dir=checkpoint_dir,
          save_checkpoint_steps=None,
          save_checkpoint_secs=None,
          save_summaries_steps=None,
          save_summaries_secs=None,
          log_step_count_steps=None,
          config=distributed.session_config("worker", 0)) as sess:
        values, sizes, step = sess.run([looked_up, sizes, global_step])
    self.assertEqual(step, 2 * steps)
    self.assertAllEqual(values, expected)
    self.assertAllEqual(sizes, [np.sum(probe % 2 == 0), np.sum(probe % 2 == 1)])
    saved = tf.train.list_variables(checkpoint_dir)
    self.assertLen([n for n, _ in saved if n.endswith("index-keys")], 2)

  def test_reshard_two_to_three_ps(self):
    config = _config("mixed")
    basename = os.path.join(self.get_temp_dir(), "reshard", "table")
    os.makedirs(os.path.dirname(basename), exist_ok=True)
    graph = tf.Graph()
    with graph.as_default():
      two = sharded_hash_table.ShardedHashTable(config,
                                                2,
                                                name=self._name("_two"))
      ids = tf.compat.v1.placeholder(tf.int64, [None])
      grads = tf.compat.v1.placeholder(tf.float32, [None, 5])
      step = tf.compat.v1.placeholder(tf.int64, [])
      train = two.apply_gradients(ids, grads, step, req_time=step + 77).as_op()
      saved = two.save(basename)
      exported = saved.export_entries(drop_expired=False)
      three = sharded_hash_table.ShardedHashTable(config,
                                                  3,
                                                  name=self._name("_three"))
      restored = three.restore(basename)
      after = restored.export_entries(drop_expired=False)
      shard_ids = [s.export_entries()["ids"] for s in restored.shards]
      init = tf.compat.v1.global_variables_initializer()
    with _session(graph=graph) as sess:
      sess.run(init)
      for k, (b_ids, b_grads) in enumerate(_batches(5, steps=3)):
        sess.run(train, {ids: b_ids, grads: b_grads, step: k})
      expected = sess.run(exported)
      got, shard_ids = sess.run([after, shard_ids])
    self.assertLen([
        f for f in os.listdir(os.path.dirname(basename))
        if f.startswith("table.ps-")
    ], 2)
    _assert_same_entries(self, _sorted_entries(expected), _sorted_entries(got))
    for i, part in enumerate(shard_ids):
      self.assertAllEqual(np.mod(part, 3), np.full(len(part), i))

  def test_worker_killed_mid_step_leaves_shards_whole(self):
    """A worker dies during two steps: one applied whole, one not at all."""
    spec = _main_cluster().spec
    graph, table, saver = _dying_worker_graph()
    with graph.as_default():
      init = tf.compat.v1.global_variables_initializer()
    with _session(graph=graph) as sess:  # This worker is the chief.
      sess.run(init)
    worker = _run_subprocess("dying_worker", json.dumps(spec))
    try:
      lines = []
      deadline = time.time() + _SUBPROCESS_TIMEOUT
      while "blocked" not in lines and time.time() < deadline:
        line = worker.stdout.readline()
        if not line:
          break
        lines.append(line.strip())
      self.assertIn("blocked", lines, "\n".join(lines[-50:]))
      with graph.as_default():
        size = table.size()
      expected_size = _DYING_GOOD_STEPS * _DYING_NEW + 2 * len(_DYING_SHARED)
      with _session(graph=graph) as sess:
        deadline = time.time() + 60
        while sess.run(size) < expected_size and time.time() < deadline:
          time.sleep(0.1)  # Step "A" writes, then blocks on the worker.
      time.sleep(1.0)  # Step "B"'s ids reach the PS; its global step never.
    finally:
      worker.kill()
      worker.wait()
    with graph.as_default():
      probe_ids = np.concatenate([
          np.arange(_DYING_GOOD_STEPS * _DYING_NEW), _DYING_SHARED,
          _DYING_A_IDS, _DYING_B_IDS
      ])
      probe = table.lookup(probe_ids)
      state = (probe, table.size(),
               [(s.storage.size(), s.storage.num_rows) for s in table.shards])
    path = os.path.join(self.get_temp_dir(), "dying.ckpt")
    results = []
    with _session(graph=graph) as sess:
      results.append(sess.run(state))
      saver.save(sess, path)
      self._wipe(sess, table)
      sess.run(init)
      saver.restore(sess, path)
      results.append(sess.run(state))
    num_good = _DYING_GOOD_STEPS * _DYING_NEW
    for values, size, shards in results:
      self.assertEqual(size, num_good + 2 * len(_DYING_SHARED))
      self.assertAllEqual(values[:num_good, 0], np.ones(num_good))
      self.assertAllEqual(values[num_good:num_good + len(_DYING_SHARED), 0],
                          np.full(len(_DYING_SHARED), _DYING_GOOD_STEPS + 1))
      self.assertAllEqual(
          values[-2 * len(_DYING_SHARED):, 0],
          np.concatenate(
              [np.ones(len(_DYING_SHARED)),
               np.zeros(len(_DYING_SHARED))]))
      for shard_size, num_rows in shards:
        self.assertEqual(shard_size, num_rows)


_DYING_GOOD_STEPS = 3
_DYING_NEW = 500
_DYING_SHARED = np.arange(16) + 10**6
_DYING_A_IDS = np.arange(16) + 2 * 10**6
_DYING_B_IDS = np.arange(16) + 3 * 10**6


def _dying_worker_graph(worker_ops: bool = False):
  """The dying worker's graph, or the other workers' (between-graph).

  Args:
    worker_ops: Add the dying worker's ops, placed on worker 2: `good`,
      `step_a` (writes, then blocks on a queue on worker 2) and `step_b`
      (its `global_step` comes from that queue: the ids and gradients reach
      the PS, the step never does; a shard write that started without it
      would insert the new ids and then wait before their update).

  Returns:
    (graph, table, saver).
  """
  graph = tf.Graph()
  with graph.as_default():
    table = sharded_hash_table.ShardedHashTable(_config("sgd_rounded"),
                                                2,
                                                name="dying")  # lr 0.5
    if not worker_ops:
      return graph, table, tf.compat.v1.train.Saver(sharded=True)
    ids = tf.compat.v1.placeholder(tf.int64, [None], name="ids")
    with tf.device("/job:worker/task:2"):
      grads = -2.0 * tf.ones([tf.size(ids), 1])
      queue = tf.queue.FIFOQueue(1, tf.int64, shapes=[[]])
      blocked_a = queue.dequeue()
      blocked_b = queue.dequeue()
    tf.group(table.apply_gradients(ids, grads, 0).as_op(), name="good")
    written = table.apply_gradients(ids, grads, 0, req_time=5).as_op()
    with tf.control_dependencies([written]):
      tf.identity(blocked_a, name="step_a")
    tf.group(table.apply_gradients(ids, grads, blocked_b, req_time=5).as_op(),
             name="step_b")
    saver = tf.compat.v1.train.Saver(sharded=True)
  return graph, table, saver


def _dying_worker_main(spec_json: str) -> None:
  """Worker 2: good steps, then steps A and B that never finish."""
  spec = json.loads(spec_json)
  server = distributed.start_server(spec, "worker", 2)
  graph = _dying_worker_graph(worker_ops=True)[0]
  sess = tf.compat.v1.Session(server.target,
                              graph=graph,
                              config=distributed.session_config("worker", 2))
  ids = graph.get_tensor_by_name("ids:0")
  for k in range(_DYING_GOOD_STEPS):
    new = np.arange(_DYING_NEW) + k * _DYING_NEW
    sess.run("good", {ids: np.concatenate([new, _DYING_SHARED])})
    print("step", k, flush=True)
  threading.Thread(target=lambda: sess.run(
      "step_a", {ids: np.concatenate([_DYING_A_IDS, _DYING_SHARED])}),
                   daemon=True).start()
  threading.Thread(target=lambda: sess.run(
      "step_b", {ids: np.concatenate([_DYING_B_IDS, _DYING_SHARED])}),
                   daemon=True).start()
  print("blocked", flush=True)
  time.sleep(_SUBPROCESS_TIMEOUT)


# ------------------------------------------------------------ PS failure


class ParameterServerFailureTest(tf.test.TestCase):
  """PS 1 runs in a subprocess: killed, the step fails; restarted, resume."""

  def test_dead_ps_is_unavailable_and_training_resumes(self):
    cluster, ps1 = _FAULT
    ps1.wait_ready(_SUBPROCESS_TIMEOUT)
    config = _config("adagrad")
    batches = _batches(3, steps=6)
    path = os.path.join(self.get_temp_dir(), "ps_failure.ckpt")

    graph = tf.Graph()
    with graph.as_default():
      with tf.compat.v1.device(
          tf.compat.v1.train.replica_device_setter(
              cluster=tf.train.ClusterSpec(cluster.spec))):
        table = sharded_hash_table.ShardedHashTable(config, 2)
        ids = tf.compat.v1.placeholder(tf.int64, [None])
        grads = tf.compat.v1.placeholder(tf.float32, [None, 3])
        step = tf.compat.v1.placeholder(tf.int64, [])
        train = table.apply_gradients(ids, grads, step).as_op()
        probe = table.lookup(np.arange(-32, 32))
        init = tf.compat.v1.global_variables_initializer()
        saver = tf.compat.v1.train.Saver(sharded=True)

    def new_session():
      return tf.compat.v1.Session(cluster.target(0),
                                  graph=graph,
                                  config=distributed.session_config(
                                      "worker", 0, operation_timeout_ms=30000))

    def run_steps(sess, first, last):
      for k in range(first, last):
        sess.run(train, {ids: batches[k][0], grads: batches[k][1], step: k})

    with graph.as_default():  # Saver.save/restore need the graph.
      sess = new_session()
      sess.run(init)
      run_steps(sess, 0, 3)
      saver.save(sess, path)
      at_checkpoint = sess.run(probe)
      run_steps(sess, 3, 5)  # Lost with PS 1.
      ps1.kill()
      start = time.time()
      with self.assertRaises(tf.errors.UnavailableError):
        run_steps(sess, 5, 6)
      self.assertLess(time.time() - start, 20)

      ps1.start().wait_ready(_SUBPROCESS_TIMEOUT)
      # Closing reaches every task: it would wait for the dead PS.
      try:
        sess.close()
      except tf.errors.OpError:
        pass
      deadline = time.time() + 60
      while True:  # gRPC reconnects with a backoff.
        try:
          sess = new_session()
          saver.restore(sess, path)
          break
        except (tf.errors.UnavailableError, tf.errors.AbortedError):
          if time.time() > deadline:
            raise
          sess.close()
          time.sleep(0.5)
      self.assertAllEqual(sess.run(probe), at_checkpoint)
      run_steps(sess, 3, 6)
      reference = _reference("adagrad", batches, 0.1)
      expected = np.stack([
          reference.get(i, np.zeros(3)) for i in np.arange(-32, 32)
      ]).astype(np.float32)
      self.assertAllClose(sess.run(probe), expected, rtol=1e-5, atol=1e-6)
      sess.close()


# ----------------------------------------------------------- TF2 strategies


def _pss_main() -> None:
  """ParameterServerStrategy + ClusterCoordinator, 2 PS + 2 workers."""
  spec = distributed.local_cluster_spec(2, 2)
  for job in ("worker", "ps"):
    for task in range(len(spec[job])):
      distributed.start_server(spec, job, task)
  resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
      tf.train.ClusterSpec(spec), rpc_layer="grpc")
  strategy = tf.distribute.experimental.ParameterServerStrategy(resolver)
  coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(
      strategy)
  table = distributed.sharded_table_for_cluster(resolver, _config("sgd"))
  batches = _batches(1, steps=12, size=32, seed=5)
  all_ids = tf.constant(np.stack([b[0] for b in batches]), tf.int64)
  all_grads = tf.constant(np.stack([b[1] for b in batches]))

  @tf.function
  def step(k):
    ids = all_ids[k]
    with tf.GradientTape() as tape:
      embeddings = table.lookup(ids)
      tape.watch(embeddings)
      loss = tf.reduce_sum(embeddings * all_grads[k])
    grads = tape.gradient(loss, embeddings)
    return table.apply_gradients(ids, grads, tf.cast(k, tf.int64)).size()

  for k in range(len(batches)):
    coordinator.schedule(step, args=(tf.constant(k),))
  coordinator.join()
  probe = np.arange(-32, 32)
  print("RESULT " + json.dumps({
      "values":
          table.lookup(probe).numpy()[:, 0].tolist(),
      "shard_ids":
          [s.export_entries()["ids"].numpy().tolist() for s in table.shards],
      "devices":
          [sorted({v.device for v in s.variables}) for s in table.shards],
  }),
        flush=True)


def _mirrored_main() -> None:
  """MirroredStrategy over 2 logical CPUs: one table, summed gradients."""
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  table = hash_table_ops.HashTable(_config("adagrad"))
  with strategy.scope():
    scale = tf.Variable(2.0)
  batches = _batches(3, steps=4, size=16, seed=9)

  @tf.function
  def step(per_replica_ids, per_replica_grads, k):

    def replica_fn(ids, upstream):
      with tf.GradientTape() as tape:
        embeddings = table.lookup(ids)
        tape.watch(embeddings)
        loss = tf.reduce_sum(embeddings * upstream) * scale
      grads = tape.gradient(loss, embeddings)
      return distributed.apply_gradients_in_replica(table, ids, grads, k)

    return strategy.run(replica_fn, args=(per_replica_ids, per_replica_grads))

  for k, (ids, grads) in enumerate(batches):
    halves = {
        name:
            strategy.experimental_distribute_values_from_function(
                lambda ctx, v=value: tf.constant(
                    np.split(v, 2)[ctx.replica_id_in_sync_group]))
        for name, value in (("ids", ids), ("grads", grads / 2))
    }
    step(halves["ids"], halves["grads"], tf.constant(k, tf.int64))
  probe = np.arange(-32, 32)
  print("RESULT " + json.dumps({
      "values": table.lookup(probe).numpy().tolist(),
      "replicas": strategy.num_replicas_in_sync
  }),
        flush=True)


class StrategyTest(tf.test.TestCase):
  """TF2 strategies, each in its own subprocess (started by setUpModule)."""

  def test_parameter_server_strategy_with_coordinator(self):
    result = _wait_output(self, "pss")
    batches = _batches(1, steps=12, size=32, seed=5)
    reference = _reference("sgd", batches, 0.5)
    probe = np.arange(-32, 32)
    expected = [reference.get(i, np.zeros(1))[0] for i in probe]
    self.assertAllClose(result["values"], expected, rtol=1e-5, atol=1e-6)
    for i, ids in enumerate(result["shard_ids"]):
      self.assertAllEqual(np.mod(ids, 2), np.full(len(ids), i))
      self.assertEqual(result["devices"][i],
                       [f"/job:ps/replica:0/task:{i}/device:CPU:0"])
    self.assertEqual(sum(len(ids) for ids in result["shard_ids"]),
                     len(reference))

  def test_mirrored_strategy_sums_replica_gradients(self):
    result = _wait_output(self, "mirrored")
    self.assertEqual(result["replicas"], 2)
    # The loss scales the upstream gradient (halved per replica) by 2.
    batches = [
        (ids, grads) for ids, grads in _batches(3, steps=4, size=16, seed=9)
    ]
    reference = _reference("adagrad", batches, 0.1)
    probe = np.arange(-32, 32)
    expected = np.stack([reference.get(i, np.zeros(3)) for i in probe])
    self.assertAllClose(result["values"], expected, rtol=1e-5, atol=1e-6)


class DistributedDemoTest(tf.test.TestCase):
  """The example's worker, on an in-process PS, for a few steps."""

  def test_worker_trains_checkpoints_and_reports_auc(self):
    spec = distributed.local_cluster_spec(2, 1)
    for task in range(2):
      distributed.start_server(spec, "ps", task)
    model_dir = os.path.join(self.get_temp_dir(), "demo")
    args = distributed_demo.build_parser().parse_args([
        "--steps", "40", "--examples", "4000", "--eval_examples", "2000",
        "--batch_size", "64", "--log_every", "10", "--model_dir", model_dir
    ])
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
      distributed_demo.run_worker(spec, 0, args)
    text = output.getvalue()
    self.assertIn("[worker 0] initialized the model", text)
    self.assertRegex(text, r"local step 30, global step \d+, loss [0-9.]+")
    match = re.search(
        r"held-out AUC ([0-9.]+) on 2000 examples .*"
        r"table entries per PS \[(\d+), (\d+)\]", text)
    self.assertIsNotNone(match, text)
    self.assertBetween(float(match.group(1)), 0.0, 1.0)
    self.assertGreater(int(match.group(2)), 0)
    self.assertGreater(int(match.group(3)), 0)
    self.assertIsNotNone(tf.train.latest_checkpoint(model_dir))

  def test_launcher_forwards_training_flags_only(self):
    self.assertEqual(
        distributed_demo.training_flags([
            "--ps", "2", "--workers=3", "--steps", "10", "--model_dir", "x",
            "--dim=4"
        ]), ["--steps", "10", "--dim=4"])


def _subprocess_main(argv) -> None:
  mode = argv[1]
  if mode == "pss":
    _pss_main()
  elif mode == "mirrored":
    _mirrored_main()
  elif mode == "dying_worker":
    _dying_worker_main(argv[2])
  else:
    raise ValueError(f"unknown mode {mode!r}")


if __name__ == "__main__":
  if len(sys.argv) > 1 and sys.argv[1] in ("pss", "mirrored", "dying_worker"):
    _subprocess_main(sys.argv)
  else:
    tf.test.main()
