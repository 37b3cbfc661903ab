"""Distributed training helpers on TensorFlow's own runtime (TF1 and TF2).

`sharded_hash_table.ShardedHashTable` puts a hash table's shards on parameter
servers; this module has what a training program needs around it, all stock
TensorFlow:

* Clusters: `cluster_from_tf_config` / `parse_cluster_spec` (the `TF_CONFIG`
  environment variable or a `--cluster_spec` JSON), `local_cluster_spec`
  (free ports on 127.0.0.1 for a cluster on one machine), `start_server`
  (a `tf.distribute.Server`), `ServerProcess` (a `ps`/`worker` server in a
  subprocess: `python -m monolith.native_training.distributed --cluster_spec
  JSON --job_name ps --task_index 0`), `session_config` (device filters and
  timeouts so a worker neither waits for the other workers nor hangs on a PS
  that is gone).
* TF1 between-graph replication: build the model under
  `tf.compat.v1.device(tf.compat.v1.train.replica_device_setter(...))` with a
  `ShardedHashTable`, then train with `tf.compat.v1.train.MonitoredTrainingSession`
  (chief-only initialization, `Saver(sharded=True)` checkpoints: every shard
  is saved by its PS).
* TF2 `tf.distribute.experimental.ParameterServerStrategy` +
  `ClusterCoordinator`: `sharded_table_for_cluster` places one shard on each
  of the strategy's PS tasks (a table built in `strategy.scope()` would keep
  its `DenseHashTable` index where `tf.device` says, by default on the
  coordinator, while the strategy spreads its variables over the PS tasks
  one by one, ignoring `tf.device`; `ShardedHashTable` refuses to be built
  in a strategy's scope).
* TF2 `tf.distribute.MirroredStrategy` (one machine, several replicas): one
  table outside the strategy's scope; replicas look up directly and
  `apply_gradients_in_replica` sums every replica's gradients (`merge_call`)
  and updates the table once per step.

Why `sharded_table_for_cluster` changes two settings (TensorFlow 2.21). A
table's columns are `tf.Variable`s of shape `[None, width]` (they grow). When
a `ClusterCoordinator` function on a worker captures a remote variable:

* with a partially known shape such as `[None, width]`, the worker process
  aborts (`Check failed: size >= 0` in
  `RemoteMgr::DeserializeRemoteTensorHandle`);
* with an unknown rank, the worker records the handle's shape as a scalar,
  and Grappler's constant folding then replaces `tf.shape(variable value)`
  (and ops derived from it) by that wrong static shape, so steps fail
  (`ConcatOp : Can't concatenate scalars`) or compute with wrong shapes.

So the shards' variables are built with unknown rank
(`unknown_shape_variables`, a `tf.variable_creator_scope`; the table code
does not need their static shapes) and Grappler's constant folding is turned
off for this process (`tf.config.optimizer.set_experimental_options`), which
functions sent to the workers inherit. Only the variables' shapes are wrong
on the workers; with folding off every op computes shapes from the real
tensors.
"""

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from monolith.native_training import entry
from monolith.native_training import sharded_hash_table

ClusterDict = Dict[str, List[str]]
_READY = "monolith-tf server ready"

# ------------------------------------------------------------------ clusters


def parse_cluster_spec(text: str) -> ClusterDict:
  """Parses a cluster spec JSON `{"ps": ["host:port", ...], "worker": [...]}`.

  Raises:
    ValueError: not JSON, not a dict of job name -> list of "host:port".
  """
  try:
    spec = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"cluster_spec must be JSON like "
                     f'{{"ps": ["host:port"], "worker": ["host:port"]}}, got '
                     f"{text!r}: {e}") from e
  if not isinstance(spec, dict) or not all(
      isinstance(k, str) and isinstance(v, list) and all(
          isinstance(a, str) and ":" in a for a in v) for k, v in spec.items()):
    raise ValueError("cluster_spec must map job names to lists of "
                     f"'host:port' strings, got {spec!r}")
  return spec


def cluster_from_tf_config(
    tf_config: Optional[str] = None) -> Tuple[ClusterDict, str, int]:
  """Reads `TF_CONFIG` (`{"cluster": {...}, "task": {"type", "index"}}`).

  Args:
    tf_config: The JSON text; default the `TF_CONFIG` environment variable.

  Returns:
    `(cluster dict, job name, task index)`.

  Raises:
    ValueError: `TF_CONFIG` is missing or malformed.
  """
  if tf_config is None:
    tf_config = os.environ.get("TF_CONFIG", "")
  if not tf_config:
    raise ValueError("TF_CONFIG is not set: give --cluster_spec, --job_name "
                     "and --task_index, or set TF_CONFIG to "
                     '{"cluster": {...}, "task": {"type": "worker", '
                     '"index": 0}}')
  try:
    config = json.loads(tf_config)
    cluster = parse_cluster_spec(json.dumps(config["cluster"]))
    job, index = config["task"]["type"], int(config["task"]["index"])
  except (json.JSONDecodeError, KeyError, TypeError) as e:
    raise ValueError(f"TF_CONFIG must be JSON with 'cluster' and 'task' "
                     f"{{'type', 'index'}}, got {tf_config!r}") from e
  if job not in cluster or not 0 <= index < len(cluster[job]):
    raise ValueError(f"TF_CONFIG task {job}:{index} is not in the cluster "
                     f"{cluster}")
  return cluster, job, index


def pick_free_ports(count: int) -> List[int]:
  """`count` distinct TCP ports that are free on 127.0.0.1 right now."""
  sockets, ports = [], []
  try:
    for _ in range(count):
      s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      s.bind(("127.0.0.1", 0))
      sockets.append(s)
      ports.append(s.getsockname()[1])
  finally:
    for s in sockets:
      s.close()
  return ports


def local_cluster_spec(num_ps: int,
                       num_workers: int,
                       num_chief: int = 0) -> ClusterDict:
  """A cluster on this machine: 127.0.0.1 with free ports.

  Args:
    num_ps: PS tasks (>= 0).
    num_workers: Worker tasks (>= 1).
    num_chief: 1 to add a `chief` job (TF2 `ParameterServerStrategy`'s
      coordinator), else 0.

  Returns:
    `{"ps": [...], "worker": [...]}` (and `"chief"`).

  Raises:
    ValueError: a count is out of range.
  """
  if num_ps < 0 or num_workers < 1 or num_chief not in (0, 1):
    raise ValueError(f"local_cluster_spec: need num_ps >= 0, num_workers >= 1"
                     f" and num_chief in (0, 1), got {num_ps}, {num_workers},"
                     f" {num_chief}")
  ports = iter(pick_free_ports(num_ps + num_workers + num_chief))
  spec = {"worker": [f"127.0.0.1:{next(ports)}" for _ in range(num_workers)]}
  if num_ps:
    spec["ps"] = [f"127.0.0.1:{next(ports)}" for _ in range(num_ps)]
  if num_chief:
    spec["chief"] = [f"127.0.0.1:{next(ports)}"]
  return spec


def session_config(job: str = "worker",
                   task: int = 0,
                   operation_timeout_ms: Optional[int] = None,
                   ps_job: str = "ps") -> tf.compat.v1.ConfigProto:
  """A `ConfigProto` for a between-graph replicated task.

  Args:
    job: This task's job.
    task: This task's index.
    operation_timeout_ms: If set, a step that runs longer fails with
      `DeadlineExceededError` instead of waiting forever (a PS that is gone
      fails at once with `UnavailableError` either way).
    ps_job: The parameter servers' job.

  Returns:
    A config whose device filters limit the session to the PS tasks and this
    task, so workers do not wait for (or fail on) each other.
  """
  config = tf.compat.v1.ConfigProto(
      device_filters=[f"/job:{ps_job}", f"/job:{job}/task:{task}"],
      allow_soft_placement=False)
  if operation_timeout_ms:
    config.operation_timeout_in_ms = int(operation_timeout_ms)
  return config


def start_server(
    cluster: ClusterDict,
    job: str,
    task: int,
    config: Optional[tf.compat.v1.ConfigProto] = None) -> tf.distribute.Server:
  """Starts the `tf.distribute.Server` of task `job:task` in this process.

  Args:
    cluster: The cluster dict.
    job: The task's job.
    task: The task's index.
    config: Server config; default: at least 8 inter-op threads. Fewer
      threads can deadlock concurrent remote functions (two workers'
      `ClusterCoordinator` steps on one PS) on a machine with 2 cores, and
      always when several servers share one process.

  Returns:
    The started server.
  """
  if config is None:
    config = tf.compat.v1.ConfigProto(
        inter_op_parallelism_threads=max(8,
                                         os.cpu_count() or 1))
  return tf.distribute.Server(tf.train.ClusterSpec(cluster),
                              job_name=job,
                              task_index=task,
                              config=config,
                              protocol="grpc",
                              start=True)


class ServerProcess:
  """A `tf.distribute.Server` in a subprocess (`kill` it, `start` it again).

  Args:
    cluster: The cluster dict.
    job: Its job.
    task: Its index.
    log_path: Where the subprocess's output goes (default: discarded).
  """

  def __init__(self,
               cluster: ClusterDict,
               job: str,
               task: int,
               log_path: Optional[str] = None):
    self.cluster, self.job, self.task = cluster, job, task
    self.log_path = log_path
    self.process: Optional[subprocess.Popen] = None

  @property
  def address(self) -> str:
    """`host:port` of the task."""
    return self.cluster[self.job][self.task]

  def start(self) -> "ServerProcess":
    """Launches the subprocess (returns at once; see `wait_ready`)."""
    command = [
        sys.executable, "-m", "monolith.native_training.distributed",
        "--cluster_spec",
        json.dumps(self.cluster), "--job_name", self.job, "--task_index",
        str(self.task)
    ]
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    self._ready = threading.Event()
    self.process = subprocess.Popen(command,
                                    stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT,
                                    env=env,
                                    text=True)
    threading.Thread(target=self._drain, daemon=True).start()
    return self

  def _drain(self):
    log = open(self.log_path, "a") if self.log_path else None
    try:
      for line in self.process.stdout:
        if _READY in line:
          self._ready.set()
        if log:
          log.write(line)
          log.flush()
    finally:
      if log:
        log.close()

  def wait_ready(self, timeout: float = 120.0) -> None:
    """Waits until the server listens.

    Raises:
      RuntimeError: it exited or did not start within `timeout` seconds.
    """
    deadline = time.time() + timeout
    while not self._ready.wait(0.1):
      if self.process.poll() is not None:
        raise RuntimeError(f"server {self.job}:{self.task} exited with code "
                           f"{self.process.returncode} before it was ready")
      if time.time() > deadline:
        raise RuntimeError(f"server {self.job}:{self.task} not ready after "
                           f"{timeout} s")

  def kill(self) -> None:
    """Kills the subprocess (SIGKILL, no clean-up: a crashed machine)."""
    if self.process is not None and self.process.poll() is None:
      self.process.kill()
      self.process.wait()


def serve(argv: Optional[Sequence[str]] = None) -> None:
  """Runs one `ps` or `worker` server until killed (`ServerProcess`'s child)."""
  parser = argparse.ArgumentParser(description=serve.__doc__)
  parser.add_argument("--cluster_spec", required=True)
  parser.add_argument("--job_name", required=True)
  parser.add_argument("--task_index", type=int, required=True)
  args = parser.parse_args(argv)
  server = start_server(parse_cluster_spec(args.cluster_spec), args.job_name,
                        args.task_index)
  print(f"{_READY}: {args.job_name}:{args.task_index} at {server.target}",
        flush=True)
  server.join()


# ----------------------------------------------------------- TF2 strategies


def _unknown_shape_creator(next_creator, **kwargs):
  kwargs["shape"] = tf.TensorShape(None)
  return next_creator(**kwargs)


@contextlib.contextmanager
def unknown_shape_variables():
  """Variables created inside get an unknown static shape (see module doc)."""
  with tf.variable_creator_scope(_unknown_shape_creator):
    yield


def sharded_table_for_cluster(cluster,
                              config: entry.HashTableConfigInstance,
                              name: str = "MonolithHashTable",
                              seed: int = 0,
                              ps_job: str = "ps",
                              disable_constant_folding: bool = True,
                              **kwargs) -> sharded_hash_table.ShardedHashTable:
  """A `ShardedHashTable` with one shard on each PS task of `cluster`.

  For `tf.distribute.experimental.ParameterServerStrategy` with a
  `ClusterCoordinator`: call it on the coordinator (inside or outside
  `strategy.scope()`: the shards go to the PS tasks either way); functions
  scheduled on workers then look up and update the shards on the parameter
  servers, writes serialized per shard. The shards' variables get an
  unknown static shape and Grappler's constant folding is turned off in
  this process (see the module docstring for the TensorFlow bugs this
  avoids).

  Args:
    cluster: The strategy's `ClusterResolver`, a `tf.train.ClusterSpec` or a
      cluster dict.
    config: The table's `HashTableConfigInstance`.
    name: Table name.
    seed: Initializer seed.
    ps_job: The PS job name.
    disable_constant_folding: Turn Grappler's constant folding off for this
      process (needed when workers run functions that use the table).
    **kwargs: More `ShardedHashTable` arguments (`hash_filters`, ...).

  Returns:
    The table.

  Raises:
    ValueError: the cluster has no PS task.
  """
  if hasattr(cluster, "cluster_spec"):
    cluster = cluster.cluster_spec()
  if isinstance(cluster, tf.train.ClusterSpec):
    cluster = cluster.as_dict()
  num_ps = len(cluster.get(ps_job, [])) if isinstance(cluster, dict) else 0
  if num_ps < 1:
    raise ValueError(f"sharded_table_for_cluster: cluster has no '{ps_job}' "
                     f"task: {cluster!r}")
  if disable_constant_folding:
    tf.config.optimizer.set_experimental_options({"constant_folding": False})
  with unknown_shape_variables():
    return sharded_hash_table.ShardedHashTable(
        config,
        num_ps,
        devices=sharded_hash_table.ps_devices(num_ps, ps_job),
        name=name,
        seed=seed,
        **kwargs)


def _check_not_mirrored(table) -> None:
  shards = getattr(table, "shards", [table])
  for shard in shards:
    variable = shard.storage.num_rows
    if isinstance(variable, tf.distribute.DistributedValues):
      raise ValueError(
          f"apply_gradients_in_replica: table {table.name!r} was built "
          "inside a strategy's scope, so each replica holds its own copy; "
          "build it outside `strategy.scope()` (one table for all replicas)")


def apply_gradients_in_replica(table,
                               ids,
                               grads,
                               global_step,
                               req_time=None) -> tf.Tensor:
  """Updates one table with the summed gradients of every replica.

  Call it inside `strategy.run` (e.g. under `MirroredStrategy`) with this
  replica's ids and gradients: the replicas meet in a `merge_call`, their
  ids and gradients are concatenated and the table takes one step per
  unique id with the gradients of all replicas summed
  (`apply_gradients(enable_dedup=True)`), once per step. Outside a replica
  context it updates the table directly.

  Args:
    table: A `HashTable` or `ShardedHashTable` built outside the strategy's
      scope.
    ids: This replica's int64 ids `[n]`.
    grads: This replica's gradients `[n, D]`.
    global_step: int64 scalar.
    req_time: int64 seconds stamped on the entries (default 0).

  Returns:
    The table's size after the update (int64 scalar), in every replica.

  Raises:
    ValueError: the table was built inside a strategy's scope.
  """
  _check_not_mirrored(table)

  def update(strategy, ids, grads):
    if strategy is None:
      all_ids, all_grads = ids, grads
    else:
      all_ids = tf.concat(strategy.experimental_local_results(ids), 0)
      all_grads = tf.concat(strategy.experimental_local_results(grads), 0)
    return table.apply_gradients(all_ids,
                                 all_grads,
                                 global_step,
                                 enable_dedup=True,
                                 req_time=req_time).size()

  context = tf.distribute.get_replica_context()
  if context is None:  # Cross-replica context: update directly.
    return update(None, ids, grads)
  return context.merge_call(update, args=(ids, grads))


if __name__ == "__main__":
  serve()
