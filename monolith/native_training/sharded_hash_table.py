"""Hash tables sharded over parameter servers by `id floormod num_shards`.

monolith trains on many machines with its tables split over parameter servers
(PS): id `i` lives on PS `i floormod num_ps`; a worker de-duplicates the ids
of a batch (`tf.unique`), sends each PS its unique ids once, gets their
embeddings back, and pushes one summed gradient per unique id
(HASH_TABLE_SPEC Part B section 5.4). `ShardedHashTable` does the same on
TensorFlow's own distributed runtime: shard `i` is an ordinary
`hash_table_ops.HashTable` (same config, same seed) built under
`tf.device(devices[i])`, by default `/job:ps/replica:0/task:i/device:CPU:0`,
and the table routes with `tf.dynamic_partition` / `tf.dynamic_stitch`:

  worker:  ids --tf.unique--> unique ids --floormod N--> partition
  PS i:    shard_i.lookup(unique ids of shard i)
  worker:  dynamic_stitch --gather--> [len(ids), D]
  worker:  grads --unsorted_segment_sum--> one row per unique id --> partition
  PS i:    shard_i.apply_gradients(ids, summed grads)   (optimizer math on PS)

It has the `HashTable` API (`lookup`, `apply_gradients`, `assign`,
`assign_add`, `size`, `save`, `restore`, `evict`, `export_entries`,
`import_entries`, `lookup_entry`, `as_op`, chaining) and works in TF1
graphs (`replica_device_setter`, `MonitoredTrainingSession`, `Saver`),
eagerly and in `tf.function` (TF2 strategies: see `distributed`).

Concurrent writers. Asynchronous workers write the same shard at the same
time, and a `HashTable` write is a read-modify-write of its row allocator
(`num_rows`), index and growable columns: two unsynchronized writers lose
rows. Every shard write therefore runs inside a `tf.CriticalSection` placed
on the shard's device (its mutex lives on the PS, shared by every worker
through a deterministic `shared_name`), so writes to one shard are
serialized across processes while different shards and all lookups run in
parallel. Before taking the lock, a write first copies all of its inputs
(ids, values, global step, request time) onto the PS (`tf.identity` under the
shard's device) and the lock waits for them: once a shard write starts it
needs nothing from the worker, so a worker that dies mid-step leaves each
shard either untouched or fully updated, never half-updated. (Learning-rate
functions run inside the lock, on the PS; they may read variables, which
live on parameter servers, but should not depend on tensors computed on the
worker.) Lookups do not lock: they may see an id inserted by a concurrent
write with its row not yet initialized (zeros), as in any asynchronous PS
training; they never see a row outside the columns (rows are allocated
after the columns grow). `evict` and `restore` lock too.

Checkpoints.

* `tf.compat.v1.train.Saver` / `MonitoredTrainingSession` / TF2
  `tf.train.Checkpoint`: each shard's variables and index live on its PS and
  are saved there (`Saver(sharded=True)` writes one file per PS). Restoring
  needs the same number of shards.
* `save(basename)` / `restore(basename)`: monolith's `EntryDump` format, one
  set of files per shard, `{basename}.ps-{i:05d}-of-{N:05d}-{k:05d}-of-{n:05d}`.
  `restore` works for any number of shards: every shard reads all files and
  keeps the ids with `id floormod N' == its index`, so a table saved on N PS
  restores onto N' PS (re-sharding). A single-table save
  (`{basename}-{k:05d}-of-{n:05d}`, e.g. from monolith or `HashTable.save`)
  restores onto N shards the same way. Each PS reads the whole table once.

Example (TF1, between-graph replication):

  cluster = tf.train.ClusterSpec({"ps": [...], "worker": [...]})
  with tf.compat.v1.device(
      tf.compat.v1.train.replica_device_setter(cluster=cluster)):
    table = sharded_hash_table.ShardedHashTable(instance, num_shards=2)
    emb = table.lookup(ids)
    ...
    grads = tf.gradients(loss, emb)[0]
    train = table.apply_gradients(ids, grads, global_step).as_op()
"""

from typing import Callable, Dict, List, Optional, Sequence, Union

import tensorflow as tf

from monolith.native_training import entry
from monolith.native_training import hash_table_checkpoint
from monolith.native_training import hash_table_ops
from monolith.native_training import hash_table_segments

_SHARD_SUFFIX = ".ps-"
# The graph collection where `tf.CriticalSection.execute` records executions.
_CS_EXECUTIONS = "critical_section_executions"
_SHARD_FILE_RE = r"^.*\.ps-(\d{5})-of-(\d{5})-(\d{5})-of-(\d{5})$"
_SINGLE_FILE_RE = r"^.*-(\d{5})-of-(\d{5})$"

HashFilters = Union[None, Sequence[object], Callable[[int], object]]
# Tables never branch on tensor values in Python; keep AutoGraph out.
_do_not_convert = tf.autograph.experimental.do_not_convert


def ps_device(task: int, job: str = "ps") -> str:
  """The full device name of task `task` of job `job` (its CPU)."""
  return f"/job:{job}/replica:0/task:{int(task)}/device:CPU:0"


def ps_devices(num_ps: int, job: str = "ps") -> List[str]:
  """`ps_device(i)` for every PS task `i` in `[0, num_ps)`."""
  return [ps_device(i, job) for i in range(num_ps)]


def shard_of(ids, num_shards: int) -> tf.Tensor:
  """The shard of each id: `id floormod num_shards` (int32, also for ids < 0).

  Args:
    ids: int64 ids.
    num_shards: Number of shards (>= 1).

  Returns:
    int32 tensor shaped like `ids`.
  """
  ids = tf.convert_to_tensor(ids, tf.int64)
  return tf.cast(tf.math.floormod(ids, tf.cast(num_shards, tf.int64)), tf.int32)


def shard_basename(basename, index: int, num_shards: int):
  """Where shard `index` of `num_shards` saves: `{basename}.ps-{i}-of-{N}`."""
  suffix = f"{_SHARD_SUFFIX}{index:05d}-of-{num_shards:05d}"
  if isinstance(basename, str):
    return basename + suffix
  return tf.strings.join([basename, suffix])


class ShardedHashTable(hash_table_ops.BaseHashTable):
  """A `HashTable` split over devices (parameter servers) by id.

  Shard `i` is a `hash_table_ops.HashTable` on `devices[i]` holding the ids
  with `id floormod num_shards == i`. All shards share the config and the
  seed, so an id gets the same initial value on any number of shards and
  the sharded table trains exactly like one table with the same
  de-duplication.

  Args:
    config: The `entry.HashTableConfigInstance` (every shard uses it).
    num_shards: Number of shards, >= 1.
    devices: One device per shard; default `ps_devices(num_shards)`
      (`/job:ps/replica:0/task:i/device:CPU:0`).
    hash_filters: None (admit every id); one `hash_filter_ops` filter per
      shard (place each on its shard's device, e.g. build it under
      `tf.device(devices[i])`); or a callable `i -> filter`, called under
      shard `i`'s device.
    name: The table's name; shard `i` is named `{name}_shard{i}`.
    seed: Seed of `random_uniform` initializers and stochastic rounding.
    saver_parallel: Files each shard's `save` writes (-1: monolith's rule).
    lock_writes: Serialize each shard's writes with a `tf.CriticalSection`
      on its device (required with concurrent writers: asynchronous workers,
      `ClusterCoordinator`; leave it on unless one writer is guaranteed).

  Raises:
    TypeError: `config` is not a `HashTableConfigInstance`.
    ValueError: `num_shards` < 1, `devices` or `hash_filters` has a length
      other than `num_shards`, the table is built inside a
      `tf.distribute.Strategy` scope, or the config is invalid (see
      `HashTable`).
  """

  def __init__(self,
               config: entry.HashTableConfigInstance,
               num_shards: int,
               devices: Optional[Sequence[Optional[str]]] = None,
               hash_filters: HashFilters = None,
               name: str = "MonolithHashTable",
               seed: int = 0,
               saver_parallel: int = -1,
               lock_writes: bool = True):
    if isinstance(num_shards,
                  bool) or not isinstance(num_shards, int) or num_shards < 1:
      raise ValueError(f"ShardedHashTable {name!r}: num_shards must be an "
                       f"int >= 1, got {num_shards!r}")
    if devices is None:
      devices = ps_devices(num_shards)
    devices = list(devices)
    if len(devices) != num_shards:
      raise ValueError(f"ShardedHashTable {name!r}: devices must have "
                       f"num_shards={num_shards} entries, got {len(devices)}: "
                       f"{devices}")
    if tf.distribute.has_strategy():
      raise ValueError(
          f"ShardedHashTable {name!r}: built inside a strategy's scope, "
          "whose variable creator would move the shards' variables away from "
          "their index; build it outside `strategy.scope()` (see "
          "`distributed.sharded_table_for_cluster`)")
    if hash_filters is not None and not callable(hash_filters):
      hash_filters = list(hash_filters)
      if len(hash_filters) != num_shards:
        raise ValueError(f"ShardedHashTable {name!r}: hash_filters must have "
                         f"num_shards={num_shards} entries, got "
                         f"{len(hash_filters)}")
    super().__init__(name=hash_table_segments.module_name(name))
    self._table_name = name
    self._num_shards = num_shards
    self._devices = devices
    self._shards: List[hash_table_ops.HashTable] = []
    self._locks: List[Optional[tf.CriticalSection]] = []
    for i, device in enumerate(devices):
      with tf.device(device):
        if hash_filters is None:
          hash_filter = None
        elif callable(hash_filters):
          hash_filter = hash_filters(i)
        else:
          hash_filter = hash_filters[i]
        shard = hash_table_ops.HashTable(config,
                                         hash_filter=hash_filter,
                                         name=f"{name}_shard{i}",
                                         seed=seed)
        shard.saver_parallel = saver_parallel
        self._shards.append(shard)
        lock = None
        if lock_writes:
          # The mutex is found by name on the PS: every worker building the
          # same graph gets the same one.
          lock_name = f"{shard.name}_write_lock"
          if not tf.executing_eagerly():
            lock_name = tf.compat.v1.get_default_graph().unique_name(
                lock_name, mark_as_used=False)
          lock = tf.CriticalSection(name="write_lock", shared_name=lock_name)
        self._locks.append(lock)
    self._deps: List[object] = []

  # ---------------------------------------------------------------- basics

  @property
  def name(self) -> str:
    """The table's name."""
    return self._table_name

  @property
  def dim_size(self) -> int:
    """D, the summed dims of the segments."""
    return self._shards[0].dim_size

  @property
  def num_shards(self) -> int:
    """Number of shards."""
    return self._num_shards

  @property
  def shards(self) -> List[hash_table_ops.HashTable]:
    """The per-shard tables (shard `i` holds ids `i mod num_shards`)."""
    return list(self._shards)

  @property
  def devices(self) -> List[Optional[str]]:
    """The device of each shard."""
    return list(self._devices)

  @property
  def config(self) -> entry.HashTableConfigInstance:
    """The `HashTableConfigInstance` every shard executes."""
    return self._shards[0].config

  @property
  def extra_restore_names(self) -> List[str]:
    """The config's `extra_restore_names` (not used by `restore` here)."""
    return self._shards[0].extra_restore_names

  def _chained(self, ops) -> "ShardedHashTable":
    if tf.executing_eagerly():
      return self
    clone = object.__new__(type(self))
    clone.__dict__.update(self.__dict__)
    clone._deps = list(self._deps) + list(ops)  # pylint: disable=protected-access
    return clone

  def as_op(self, name=None) -> tf.Operation:
    """An op that runs every write this table object was chained after."""
    with tf.name_scope(name or "as_op"):
      return tf.group(self._deps) if self._deps else tf.no_op()

  def _partition(self, ids: tf.Tensor, values: Sequence[tf.Tensor]):
    """Splits `ids` and rows of `values` by shard (order kept per shard).

    Returns:
      `(ids per shard, positions per shard, [values per shard, ...])`.
    """
    if self._num_shards == 1:
      positions = tf.range(tf.size(ids))
      return [ids], [positions], [[v] for v in values]
    shard = shard_of(ids, self._num_shards)
    parts = tf.dynamic_partition(ids, shard, self._num_shards)
    positions = tf.dynamic_partition(tf.range(tf.size(ids)), shard,
                                     self._num_shards)
    value_parts = [
        tf.dynamic_partition(v, shard, self._num_shards) for v in values
    ]
    return parts, positions, value_parts

  def _check_rows(self, ids: tf.Tensor, values, where: str,
                  arg: str) -> tf.Tensor:
    """float32 `[len(ids), D]` (also accepts `[len(ids)]` when D == 1)."""
    if isinstance(values, tf.IndexedSlices):
      values = tf.convert_to_tensor(values)
    values = tf.convert_to_tensor(values)
    if not values.dtype.is_floating:
      raise TypeError(f"ShardedHashTable {self._table_name!r}.{where}: {arg} "
                      f"must be floating point, got {values.dtype.name}")
    values = tf.cast(values, tf.float32)
    dim = self.dim_size
    if dim == 1 and values.shape.rank == 1:
      values = values[:, None]
    shape = values.shape
    if shape.rank is not None and (shape.rank != 2 or
                                   (shape[1] is not None and shape[1] != dim) or
                                   (ids.shape[0] is not None and shape[0]
                                    is not None and shape[0] != ids.shape[0])):
      raise ValueError(
          f"ShardedHashTable {self._table_name!r}.{where}: {arg} must have "
          f"shape [len(ids), {dim}], got {shape.as_list()} for "
          f"{ids.shape[0]} ids")
    return values

  def _locked(self, index: int, fn: Callable[..., tf.Tensor],
              inputs: Sequence[Optional[tf.Tensor]]) -> tf.Tensor:
    """Runs `fn(*inputs)` on shard `index`'s device, under its lock.

    The inputs are copied to the shard's device first and the lock waits for
    them, so the locked write needs nothing from the caller's device.

    Returns:
      `fn`'s result (a tensor), available once the lock is released.
    """
    with tf.device(self._devices[index]):
      local = [None if x is None else tf.identity(x) for x in inputs]
      ready = [x for x in local if x is not None]
      with tf.control_dependencies(self._deps + ready):
        lock = self._locks[index]
        if lock is None:
          return fn(*local)
        if tf.executing_eagerly():
          return lock.execute(lambda: fn(*local),
                              exclusive_resource_access=False)
        # `execute` records each execution in a graph collection that
        # `export_meta_graph` (every Saver save) cannot serialize and warns
        # about; ours need no record (they never ask for exclusive access).
        executions = tf.compat.v1.get_collection_ref(_CS_EXECUTIONS)
        before = len(executions)
        result = lock.execute(lambda: fn(*local),
                              exclusive_resource_access=False)
        del executions[before:]
        return result

  def _write_shards(self, fn, ids: tf.Tensor, values: Sequence[tf.Tensor],
                    extra: Sequence[Optional[tf.Tensor]]) -> List[tf.Tensor]:
    """Routes `ids`/`values` and runs `fn(shard, ids, *values, *extra)`."""
    parts, _, value_parts = self._partition(ids, values)
    done = []
    for i, shard in enumerate(self._shards):
      args = [parts[i]] + [v[i] for v in value_parts] + list(extra)
      done.append(self._locked(i, lambda *a, s=shard: fn(s, *a), args))
    return done

  # ---------------------------------------------------------------- reads

  @_do_not_convert
  def lookup(self,
             ids,
             use_multi_threads=False,
             enable_dedup=False,
             name=None) -> tf.Tensor:
    """The `[len(ids), D]` float32 embeddings of `ids` (zeros when missing).

    The ids are de-duplicated on the caller's device and each shard is asked
    for its unique ids once.

    Args:
      ids: int64 (or int32) ids, any shape (flattened).
      use_multi_threads: Accepted for compatibility.
      enable_dedup: Accepted for compatibility (ids are always deduplicated).
      name: Name scope.

    Returns:
      float32 `[len(ids), D]`.

    Raises:
      TypeError: `ids` are not integers.
    """
    del use_multi_threads, enable_dedup
    with tf.name_scope(name or "lookup"):
      ids = hash_table_segments.as_ids(
          ids, f"ShardedHashTable {self._table_name!r}.lookup")
      unique, where = tf.unique(ids, out_idx=tf.int64)
      parts, positions, _ = self._partition(unique, [])
      rows = []
      for i, shard in enumerate(self._shards):
        with tf.device(self._devices[i]):
          with tf.control_dependencies(self._deps):
            rows.append(shard.lookup(parts[i]))
      stitched = rows[0] if self._num_shards == 1 else tf.dynamic_stitch(
          positions, rows)
      values = tf.gather(stitched, where)
      values.set_shape([ids.shape[0], self.dim_size])
      return values

  @_do_not_convert
  def lookup_entry(self, ids, name=None) -> tf.Tensor:
    """Serialized `EntryDump` of each id (`b""` when missing).

    Args:
      ids: int64 ids.
      name: Name scope.

    Returns:
      string `[len(ids)]`.
    """
    with tf.name_scope(name or "lookup_entry"):
      ids = hash_table_segments.as_ids(
          ids, f"ShardedHashTable {self._table_name!r}.lookup_entry")
      parts, positions, _ = self._partition(ids, [])
      dumps = []
      for i, shard in enumerate(self._shards):
        with tf.device(self._devices[i]):
          with tf.control_dependencies(self._deps):
            dumps.append(shard.lookup_entry(parts[i]))
      if self._num_shards == 1:
        return dumps[0]
      return tf.dynamic_stitch(positions, dumps)

  @_do_not_convert
  def shard_sizes(self) -> tf.Tensor:
    """Entries per shard (int64 `[num_shards]`)."""
    sizes = []
    for i, shard in enumerate(self._shards):
      with tf.device(self._devices[i]):
        with tf.control_dependencies(self._deps):
          sizes.append(shard.size())
    return tf.stack(sizes)

  @_do_not_convert
  def size(self) -> tf.Tensor:
    """Number of entries over all shards (int64 scalar)."""
    return tf.reduce_sum(self.shard_sizes())

  @_do_not_convert
  def export_entries(self, drop_expired: bool = True) -> Dict[str, object]:
    """All shards' entries, concatenated (see `HashTable.export_entries`)."""
    exported = []
    for i, shard in enumerate(self._shards):
      with tf.device(self._devices[i]):
        with tf.control_dependencies(self._deps):
          exported.append(shard.export_entries(drop_expired=drop_expired))
    return {
        "ids": tf.concat([e["ids"] for e in exported], 0),
        "weights": tf.concat([e["weights"] for e in exported], 0),
        "slots": {
            key: tf.concat([e["slots"][key] for e in exported], 0)
            for key in exported[0]["slots"]
        },
        "timestamps": tf.concat([e["timestamps"] for e in exported], 0),
    }

  # ---------------------------------------------------------------- writes

  def _write(self, kind: str, ids, values, req_time, name: str, where: str,
             arg: str) -> "ShardedHashTable":
    with tf.name_scope(name):
      ids = hash_table_segments.as_ids(
          ids, f"ShardedHashTable {self._table_name!r}.{where}")
      values = self._check_rows(ids, values, where, arg)
      unique, idx = tf.unique(ids, out_idx=tf.int64)
      if kind == "assign":  # Later duplicates win.
        last = tf.math.unsorted_segment_max(tf.range(tf.size(ids)), idx,
                                            tf.size(unique))
        merged = tf.gather(values, last)
      else:
        merged = tf.math.unsorted_segment_sum(values, idx, tf.size(unique))
      req = None if req_time is None else tf.convert_to_tensor(req_time)

      def write(shard, shard_ids, shard_values, shard_req):
        method = shard.assign if kind == "assign" else shard.assign_add
        return method(shard_ids, shard_values, req_time=shard_req).size()

      done = self._write_shards(write, unique, [merged], [req])
      return self._chained(done)

  @_do_not_convert
  def assign(self, ids, values, req_time=None, name=None) -> "ShardedHashTable":
    """Sets the embeddings of `ids` to `values` (later duplicates win).

    Args:
      ids: int64 ids `[n]`.
      values: float `[n, D]` (`[n]` when D == 1).
      req_time: int64 seconds stamped on the entries (default 0).
      name: Name scope.

    Returns:
      The table, chained after the write.

    Raises:
      TypeError / ValueError: bad ids or values.
    """
    return self._write("assign", ids, values, req_time, name or "assign",
                       "assign", "values")

  @_do_not_convert
  def assign_add(self,
                 ids,
                 values,
                 req_time=None,
                 name=None) -> "ShardedHashTable":
    """Adds `values` to the embeddings of `ids` (summed per id on the caller).

    Args:
      ids: int64 ids `[n]`.
      values: float `[n, D]` (`[n]` when D == 1).
      req_time: int64 seconds stamped on the entries (default 0).
      name: Name scope.

    Returns:
      The table, chained after the write.

    Raises:
      TypeError / ValueError: bad ids or values.
    """
    return self._write("assign_add", ids, values, req_time, name or
                       "assign_add", "assign_add", "values")

  @_do_not_convert
  def apply_gradients(self,
                      ids,
                      grads,
                      global_step,
                      use_multi_threads=False,
                      enable_dedup=True,
                      req_time=None,
                      name=None) -> "ShardedHashTable":
    """Takes the configured optimizer steps for `ids`, on the shards' devices.

    Args:
      ids: int64 ids `[n]`.
      grads: float `[n, D]` (`[n]` when D == 1), d loss / d lookup(ids).
      global_step: int64 scalar.
      use_multi_threads: Accepted for compatibility.
      enable_dedup: True (the default here, as monolith's distributed path):
        the gradients of equal ids are summed on the caller's device and each
        shard receives every unique id once, one step per unique id. False:
        every occurrence is sent, in order, and each shard takes one
        sequential step per occurrence (`HashTable`'s default).
      req_time: int64 seconds stamped on the entries (default 0).
      name: Name scope.

    Returns:
      The table, chained after the update.

    Raises:
      TypeError / ValueError: bad ids or grads.
    """
    del use_multi_threads
    with tf.name_scope(name or "apply_gradients"):
      ids = hash_table_segments.as_ids(
          ids, f"ShardedHashTable {self._table_name!r}.apply_gradients")
      grads = self._check_rows(ids, grads, "apply_gradients", "grads")
      if enable_dedup:
        ids, idx = tf.unique(ids, out_idx=tf.int64)
        grads = tf.math.unsorted_segment_sum(grads, idx, tf.size(ids))
      step = tf.convert_to_tensor(global_step)
      req = None if req_time is None else tf.convert_to_tensor(req_time)

      def write(shard, shard_ids, shard_grads, shard_step, shard_req):
        return shard.apply_gradients(shard_ids,
                                     shard_grads,
                                     shard_step,
                                     enable_dedup=enable_dedup,
                                     req_time=shard_req).size()

      done = self._write_shards(write, ids, [grads], [step, req])
      return self._chained(done)

  @_do_not_convert
  def import_entries(self, ids, weights, slots,
                     timestamps) -> "ShardedHashTable":
    """Replaces every shard's entries with the given ones, routed by id.

    Args:
      ids: Distinct int64 ids `[n]`.
      weights: float32 `[n, D]`.
      slots: {(segment index, slot name): `[n, width]`} (missing slots get
        their optimizer's initial value), as `export_entries` returns.
      timestamps: int64 `[n]`.

    Returns:
      The table, chained after the import.
    """
    ids = tf.convert_to_tensor(ids, tf.int64)
    keys = sorted(slots)
    values = [tf.convert_to_tensor(weights, tf.float32)] + [
        tf.convert_to_tensor(slots[k]) for k in keys
    ] + [tf.convert_to_tensor(timestamps, tf.int64)]

    def write(shard, shard_ids, shard_weights, *rest):
      shard_slots = dict(zip(keys, rest[:len(keys)]))
      op = shard.import_entries(shard_ids, shard_weights, shard_slots,
                                rest[len(keys)])
      with tf.control_dependencies([op]):
        return shard.storage.size()

    with tf.name_scope("import_entries"):
      parts, _, value_parts = self._partition(ids, values)
      done = []
      for i, shard in enumerate(self._shards):
        args = [parts[i]] + [v[i] for v in value_parts]
        done.append(self._locked(i, lambda *a, s=shard: write(s, *a), args))
      return self._chained(done)

  @_do_not_convert
  def evict(self, name=None) -> "ShardedHashTable":
    """Removes expired entries on every shard (under the shard's lock).

    Expiry is measured against the largest `req_time` any shard has seen,
    as in one table (each shard first takes that maximum).

    Returns:
      The table, chained after the eviction.
    """
    with tf.name_scope(name or "evict"):
      latest = self._latest_update_ts()
      done = [
          self._locked(i,
                       lambda ts, s=shard: _after_ts_sync(
                           s, ts, lambda: s.evict().size()), [latest])
          for i, shard in enumerate(self._shards)
      ]
      return self._chained(done)

  def _latest_update_ts(self) -> tf.Tensor:
    """The largest `max_update_ts` over the shards (int64 scalar)."""
    latest = []
    for i, shard in enumerate(self._shards):
      with tf.device(self._devices[i]):
        with tf.control_dependencies(self._deps):
          latest.append(shard.max_update_ts.read_value())
    return tf.reduce_max(tf.stack(latest))

  # ----------------------------------------------------- save and restore

  @_do_not_convert
  def save(self, basename, name=None) -> "ShardedHashTable":
    """Writes every shard in monolith's format, each from its own device.

    Shard `i` writes `{basename}.ps-{i:05d}-of-{N:05d}-{k:05d}-of-{n:05d}`
    (`HashTable.save` under `shard_basename`), under the shard's lock, so a
    concurrent write is either in the save or not. Expired entries (against
    the largest `req_time` any shard has seen, as in one table) are left
    out.

    Args:
      basename: string scalar (Python or tensor); its directory must exist.
      name: Name scope.

    Returns:
      The table, chained after the save.
    """
    with tf.name_scope(name or "save"):
      latest = self._latest_update_ts()
      done = []
      for i, shard in enumerate(self._shards):
        target = shard_basename(basename, i, self._num_shards)

        def write(ts, s=shard, t=target):
          return _after_ts_sync(s, ts, lambda: s.save(t).size())

        done.append(self._locked(i, write, [latest]))
      return self._chained(done)

  @_do_not_convert
  def restore(self, basename, name=None) -> "ShardedHashTable":
    """Replaces the entries with those saved under `basename`, re-sharding.

    Reads a sharded save (`save` of any number of shards) or, when there is
    none, a single-table save (`{basename}-{k:05d}-of-{n:05d}`). Shard `i`
    reads every file and keeps the ids with `id floormod num_shards == i`.

    Args:
      basename: string scalar (Python or tensor).
      name: Name scope.

    Returns:
      The table, chained after the restore.

    Raises (when run):
      NotFoundError: No file of either kind exists under `basename`.
      InvalidArgumentError: The files do not form one complete save (a
        shard or a file of a shard missing, mixed shard counts).
      DataLossError: A file is truncated or corrupt.
    """
    with tf.name_scope(name or "restore"):
      basename = tf.convert_to_tensor(basename, tf.string)
      done = []
      for i, shard in enumerate(self._shards):

        def read(s=shard, index=i):
          files = _find_saved_files(basename, self._table_name)
          entries = hash_table_checkpoint.decode_entries(
              s, hash_table_checkpoint.read_records(files))
          keep = tf.equal(shard_of(entries["ids"], self._num_shards), index)
          op = s.import_entries(tf.boolean_mask(entries["ids"], keep),
                                tf.boolean_mask(entries["weights"], keep), {
                                    k: tf.boolean_mask(v, keep)
                                    for k, v in entries["slots"].items()
                                }, tf.boolean_mask(entries["timestamps"], keep))
          with tf.control_dependencies([op]):
            return s.storage.size()

        done.append(self._locked(i, read, []))
      return self._chained(done)


def _after_ts_sync(shard: hash_table_ops.HashTable, latest: tf.Tensor,
                   fn: Callable[[], tf.Tensor]) -> tf.Tensor:
  """Raises `shard.max_update_ts` to at least `latest`, then runs `fn()`."""
  variable = shard.max_update_ts
  synced = variable.assign(tf.maximum(variable.read_value(), latest),
                           read_value=False)
  with tf.control_dependencies([synced]):
    return fn()


def _check_complete(files: tf.Tensor, numbers: tf.Tensor, where: str,
                    what: str) -> tf.Operation:
  """Asserts that sharded-save files form one complete save.

  Args:
    files: string `[m]` file names.
    numbers: int64 `[m, 4]`: ps index, ps count, file index, file count.
    where: Error prefix.
    what: The pattern, for messages.
  """
  ps, num_ps, part, num_parts = tf.unstack(numbers, axis=1)
  same_count = tf.equal(tf.reduce_min(num_ps), tf.reduce_max(num_ps))
  unique_ps, ps_index, ps_files = tf.unique_with_counts(ps)
  all_ps = tf.equal(tf.size(unique_ps, out_type=tf.int64),
                    tf.reduce_max(num_ps))
  # Per PS: files numbered 0..n-1, all with the same n.
  parts_ok = tf.reduce_all(
      tf.logical_and(
          part < num_parts,
          tf.equal(tf.cast(tf.gather(ps_files, ps_index), tf.int64),
                   num_parts)))
  pair = ps * (1 << 20) + part
  distinct = tf.equal(tf.size(tf.unique(pair)[0]), tf.size(pair))
  ok = tf.reduce_all(tf.stack([same_count, all_ps, parts_ok, distinct]))
  return tf.debugging.Assert(ok, [
      f"{where}: the files matching {what} are not one complete sharded "
      "save (a shard or a file of a shard is missing, or saves with "
      "different shard counts share the basename); found:", files
  ],
                             summarize=64)


def _find_saved_files(basename: tf.Tensor, table_name: str) -> tf.Tensor:
  """The files of the save under `basename`: sharded, else single-table."""
  where = f"ShardedHashTable {table_name!r}.restore"
  sharded_pattern = tf.strings.join([basename, _SHARD_SUFFIX, "*-of-*-*-of-*"])
  single_pattern = tf.strings.join([basename, "-*-of-*"])
  sharded = tf.io.matching_files(sharded_pattern)
  single = tf.io.matching_files(single_pattern)

  def numbers_of(files, regex, count):
    text = tf.strings.regex_replace(
        files, regex, " ".join(f"\\{k + 1}" for k in range(count)))
    matched = tf.strings.regex_full_match(files, regex)
    check = tf.debugging.Assert(tf.reduce_all(matched), [
        f"{where}: unexpected file names:",
        tf.boolean_mask(files, tf.logical_not(matched))
    ])
    with tf.control_dependencies([check]):
      parts = tf.strings.split(text, " ").to_tensor(default_value="0",
                                                    shape=[None, count])
      return tf.strings.to_number(parts, tf.int64)

  def use_sharded():
    numbers = numbers_of(sharded, _SHARD_FILE_RE, 4)
    check = _check_complete(sharded, numbers, where, "{basename}.ps-*")
    with tf.control_dependencies([check]):
      return tf.identity(sharded)

  def use_single():
    numbers = numbers_of(single, _SINGLE_FILE_RE, 2)
    # Reuse the sharded check: one "PS" holding every file.
    zeros = tf.zeros_like(numbers[:, :1])
    numbers = tf.concat([zeros, zeros + 1, numbers], axis=1)
    check = _check_complete(single, numbers, where, "{basename}-*-of-*")
    with tf.control_dependencies([check]):
      return tf.identity(single)

  def missing():
    # tf.io.read_file of the pattern raises NotFoundError naming it.
    message = tf.io.read_file(
        tf.strings.join(
            [sharded_pattern, " (nor ", single_pattern, "): no saved shard"]))
    with tf.control_dependencies([message]):
      return tf.zeros([0], tf.string)

  return tf.cond(
      tf.size(sharded) > 0, use_sharded,
      lambda: tf.cond(tf.size(single) > 0, use_single, missing))


def sharded_hash_table_from_config(
    config: entry.HashTableConfigInstance,
    num_shards: int,
    devices: Optional[Sequence[str]] = None,
    hash_filters: HashFilters = None,
    name_suffix: str = "",
    saver_parallel: int = -1,
    seed: int = 0,
    lock_writes: bool = True) -> ShardedHashTable:
  """`hash_table_ops.hash_table_from_config`, sharded over `num_shards` PS.

  Args:
    config: The table config plus one learning rate per segment.
    num_shards: Number of shards (parameter servers).
    devices: One device per shard (default `ps_devices(num_shards)`).
    hash_filters: See `ShardedHashTable`.
    name_suffix: Appended to the table name `MonolithHashTable`.
    saver_parallel: Files each shard's `save` writes (-1: monolith's rule).
    seed: Seed of `random_uniform` initializers and stochastic rounding.
    lock_writes: See `ShardedHashTable`.

  Returns:
    The table.
  """
  return ShardedHashTable(config,
                          num_shards,
                          devices=devices,
                          hash_filters=hash_filters,
                          name="MonolithHashTable" + name_suffix,
                          seed=seed,
                          saver_parallel=saver_parallel,
                          lock_writes=lock_writes)
