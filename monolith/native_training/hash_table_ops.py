"""Dynamic embedding hash tables that execute `entry` configs on stock TF ops.

Drop-in for monolith's `monolith.native_training.hash_table_ops`: a
`HashTable` maps int64 ids to `D = sum(segment dims)` float32 values plus
optimizer state, grows on demand, and trains every `OptimizerConfig` member
with the per-segment learning rates of an `entry.HashTableConfigInstance`.
No custom kernels: the storage is a `tf.lookup.experimental.DenseHashTable`
(id -> row) and one growable `tf.Variable` per column (see
`hash_table_storage`), so the same code runs in TF1 graphs (`Session`),
eagerly and inside `tf.function`, and the table is checkpointed by
`tf.train.Checkpoint` and `tf.compat.v1.train.Saver` like any variable.

Semantics (HASH_TABLE_SPEC Part A.3 / Part B):

* `lookup` of a missing id returns zeros and inserts nothing; fixed_r8 and
  one_bit segments return their training retriever value.
* Every write on a new id first initializes it (initializer + optimizer slot
  init) and then applies the write. A hash filter may refuse new ids.
* `apply_gradients(enable_dedup=True)` sums the gradients of equal ids and
  takes one step per unique id; `enable_dedup=False` (monolith's default) is
  one sequential step per occurrence, exact for every optimizer but slower:
  a batch whose id repeats k times runs k rounds.
* `req_time` stamps written entries; entries older than their slot's expiry
  (days, against the largest `req_time` seen) are dropped at `save` and by
  `evict()`.

Example:

  table = hash_table_from_config(instance)          # an entry config
  emb = table.lookup(ids.values)                    # [n, D]
  pooled = embedding_combiners.ReduceSum().combine(ids, emb)
  grads = tape.gradient(loss, emb)
  table = table.apply_gradients(ids.values, grads, global_step)
"""

import abc
from typing import List, Optional

import tensorflow as tf

from monolith.native_training import entry
from monolith.native_training import hash_filter_ops
from monolith.native_training import hash_table_initializers
from monolith.native_training import hash_table_segments
from monolith.native_training import hash_table_storage
from monolith.native_training.runtime.hash_table import embedding_hash_table_pb2

_SECONDS_PER_DAY = 86400
# Tables never branch on tensor values in Python; keep AutoGraph out.
_do_not_convert = tf.autograph.experimental.do_not_convert
_TS = "timestamp"

# Re-exported: the resolved segment and the write helpers.
Segment = hash_table_segments.Segment
sum_duplicates = hash_table_segments.sum_duplicates
duplicate_selector = hash_table_segments.duplicate_selector
stochastic_round_to_float16 = hash_table_segments.stochastic_round_to_float16


class BaseHashTable(tf.Module, metaclass=abc.ABCMeta):
  """The interface of monolith's hash tables."""

  @abc.abstractmethod
  def lookup(self, ids, use_multi_threads=False, enable_dedup=False):
    """Returns the `[len(ids), dim_size]` embeddings of `ids`."""

  @abc.abstractmethod
  def assign(self, ids, values, req_time=None):
    """Sets the embeddings of `ids` to `values`."""

  @abc.abstractmethod
  def assign_add(self, ids, values, req_time=None):
    """Adds `values` to the embeddings of `ids`."""

  @abc.abstractmethod
  def apply_gradients(self,
                      ids,
                      grads,
                      global_step,
                      use_multi_threads=False,
                      enable_dedup=False,
                      req_time=None):
    """Applies the configured optimizers to `ids` with gradients `grads`."""

  @abc.abstractmethod
  def as_op(self, name=None):
    """An op that runs every write this table object depends on."""

  @property
  @abc.abstractmethod
  def dim_size(self):
    """D, the summed dims of the segments."""


class HashTable(BaseHashTable):
  """A trainable dynamic embedding table executing an `EmbeddingHashTableConfig`.

  Build it with `hash_table_from_config`. Write methods return a `HashTable`
  sharing this table's state: in a graph, ops built from the returned table
  run after the write (monolith's chaining); eagerly the write has happened
  when the call returns.

  Args:
    config: The `entry.HashTableConfigInstance`.
    hash_filter: A `hash_filter_ops` filter, or None (admit every id).
    name: The table's name.
    seed: Seed of `random_uniform` initializers and stochastic rounding.
    grow_factor: Capacity multiplier when the table is full.

  Raises:
    TypeError: `config` is not a `HashTableConfigInstance`.
    ValueError: The config has no segments, a segment lacks `init_config` or
      `opt_config`, an optimizer has no update rule (`dc`,
      `enable_dynamic_wd`, `flip_direction`), or the number of learning-rate
      functions differs from the number of segments.
  """

  def __init__(self,
               config: entry.HashTableConfigInstance,
               hash_filter=None,
               name: str = "MonolithHashTable",
               seed: int = 0,
               grow_factor: float = 1.5):
    if not isinstance(config, entry.HashTableConfigInstance):
      raise TypeError("HashTable: config must be an "
                      "entry.HashTableConfigInstance, got "
                      f"{type(config).__name__}")
    super().__init__(name=hash_table_segments.module_name(name))
    self._table_name = name
    self._config = config
    table_config = config.table_config
    with self.name_scope:
      self._segments = hash_table_segments.resolve_segments(table_config, name)
    num_fns = len(config.learning_rate_fns)
    if num_fns != len(self._segments):
      raise ValueError(
          f"HashTable {name!r}: learning_rate_fns has {num_fns} entries, but "
          f"the config has {len(self._segments)} segments; give one per "
          "segment")
    self._dim = sum(s.dim for s in self._segments)
    self._seed = int(seed)
    self._hash_filter = hash_filter_ops.make_filter(hash_filter)
    columns = []
    for seg in self._segments:
      columns.append(hash_table_storage.Column(seg.weight_column, seg.dim))
      for slot in seg.rule.slots:
        columns.append(
            hash_table_storage.Column(seg.slot_column(slot.name),
                                      slot.width(seg.dim), slot.dtype))
    columns.append(hash_table_storage.Column(_TS, 0, tf.int64))
    with self.name_scope:
      self._storage = hash_table_storage.EntryStorage(
          columns,
          initial_capacity=min(int(table_config.initial_capacity), 1 << 24),
          grow_factor=grow_factor,
          name="storage")
      self._rounding_calls = None
      if any(s.stochastic_rounding for s in self._segments):
        self._rounding_calls = tf.Variable(tf.constant(0, tf.int64),
                                           trainable=False,
                                           name="rounding_calls")
      self._max_ts = tf.Variable(tf.constant(0, tf.int64),
                                 trainable=False,
                                 name="max_update_ts")
      self._compressor_scales = [
          s.compressor.scale
          for s in self._segments
          if s.compressor.scale is not None
      ]
    self._expire_seconds = hash_table_segments.expire_seconds(table_config)
    self._deps = []

  # ---------------------------------------------------------------- basics

  @property
  def dim_size(self) -> int:
    """D, the summed dims of the segments."""
    return self._dim

  @property
  def name(self) -> str:
    """The table's name."""
    return self._table_name

  @property
  def config(self) -> entry.HashTableConfigInstance:
    """The `HashTableConfigInstance` the table executes."""
    return self._config

  @property
  def segments(self) -> List[Segment]:
    """The resolved segments, in order."""
    return list(self._segments)

  @property
  def extra_restore_names(self) -> List[str]:
    """Other names `restore` falls back to (the config's list)."""
    return self._config.extra_restore_names

  @property
  def storage(self) -> hash_table_storage.EntryStorage:
    """The id -> row index and per-entry columns."""
    return self._storage

  @property
  def seed(self) -> int:
    """Seed of the `random_uniform` initializers and stochastic rounding."""
    return self._seed

  @property
  def max_update_ts(self) -> tf.Variable:
    """The largest `req_time` written or restored (int64 seconds)."""
    return self._max_ts

  def _chained(self, op) -> "HashTable":
    """A table sharing this state whose later ops depend on `op`."""
    if tf.executing_eagerly():
      return self
    clone = object.__new__(type(self))
    clone.__dict__.update(self.__dict__)
    clone._deps = list(self._deps) + [op]  # pylint: disable=protected-access
    return clone

  def as_op(self, name=None) -> tf.Operation:
    """An op that runs every write this table object was chained after."""
    with tf.name_scope(name or "as_op"):
      return tf.group(self._deps) if self._deps else tf.no_op()

  @_do_not_convert
  def size(self) -> tf.Tensor:
    """Number of entries (int64 scalar)."""
    with tf.control_dependencies(self._deps):
      return self._storage.size()

  def _check_ids(self, ids, where: str) -> tf.Tensor:
    return hash_table_segments.check_ids(
        ids, f"HashTable {self._table_name!r}.{where}")

  def _check_rows(self, ids, values, where: str, arg: str) -> tf.Tensor:
    return hash_table_segments.check_rows(
        ids, values, self._dim, f"HashTable {self._table_name!r}.{where}", arg)

  # ---------------------------------------------------------------- lookup

  def _lookup_rows(self, rows: tf.Tensor, training: bool = True) -> tf.Tensor:
    # Row -1 (a missing id) gathers the storage's zero row: no mask needed,
    # except after a compressor, whose forward need not map 0 to 0.
    parts = []
    masked = False
    for seg in self._segments:
      w = self._storage.gather(seg.weight_column, rows)
      if training:
        raw, w = w, seg.compressor.forward(w)
        masked = masked or w is not raw
      parts.append(w)
    values = parts[0] if len(parts) == 1 else tf.concat(parts, axis=1)
    if not masked:
      return values
    # x * 1 is x and x * 0 is exactly 0, even where x is inf or NaN.
    return tf.math.multiply_no_nan(values,
                                   tf.cast(rows >= 0, values.dtype)[:, None])

  @_do_not_convert
  def lookup(self,
             ids,
             use_multi_threads=False,
             enable_dedup=False,
             name=None) -> tf.Tensor:
    """Returns the `[len(ids), D]` float32 embeddings of `ids`.

    Missing ids give zeros and are not inserted. fixed_r8 segments return
    `Q_r(w)`, one_bit segments `a tanh(scale w)`.

    Args:
      ids: int64 (or int32) ids, any shape (flattened).
      use_multi_threads: Accepted for compatibility (TF parallelizes).
      enable_dedup: Accepted for compatibility (ignored, as in monolith).
      name: Name scope.

    Returns:
      float32 `[len(ids), D]`.

    Raises:
      TypeError: `ids` are not integers.
    """
    del use_multi_threads, enable_dedup
    with tf.name_scope(name or "lookup"):
      ids = self._check_ids(ids, "lookup")
      with tf.control_dependencies(self._deps):
        values = self._lookup_rows(tf.reshape(self._storage.find(ids), [-1]))
      values.set_shape([ids.shape[0], self._dim])
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
    from monolith.native_training import hash_table_checkpoint  # pylint: disable=g-import-not-at-top
    with tf.name_scope(name or "lookup_entry"):
      ids = self._check_ids(ids, "lookup_entry")
      with tf.control_dependencies(self._deps):
        return hash_table_checkpoint.lookup_entry_dumps(self, ids)

  # ---------------------------------------------------------------- writes

  def _learning_rates(self) -> tf.Tensor:
    lr = self._config.learning_rate_tensor
    if lr is None:
      lr = self._config.call_learning_rate_fns()
    return tf.reshape(tf.cast(lr, tf.float32), [len(self._segments)])

  def _init_new(self, new_ids: tf.Tensor, new_rows: tf.Tensor) -> tf.Operation:
    """Initializer values and optimizer slot init for new entries."""
    ops = []
    for seg in self._segments:
      value = seg.init_fn(seg.init_cfg, new_ids, seg.dim, self._seed, seg.index)
      ops.append(self._storage.scatter(seg.weight_column, new_rows, value))
      for slot in seg.rule.slots:
        width = slot.width(seg.dim)
        init = tf.fill(tf.stack([tf.size(new_ids), width]),
                       tf.cast(slot.initial_value(seg.opt_cfg), slot.dtype))
        ops.append(
            self._storage.scatter(seg.slot_column(slot.name), new_rows, init))
    ops.append(
        self._storage.scatter(_TS, new_rows, tf.zeros_like(new_ids, tf.int64)))
    return tf.group(ops)

  def _upsert(self, ids: tf.Tensor, counts: tf.Tensor, found=None):
    """Finds or inserts distinct `ids` (through the filter).

    Args:
      ids: Distinct int64 ids.
      counts: Their occurrence counts (for the hash filter).
      found: `find(ids)` if the caller already looked them up, else None.

    Returns:
      `(keep, rows)`: which ids take part in the write, and their rows
      (valid where `keep`). `keep` is None when every id takes part (no
      enabled hash filter), so callers can skip the masking.
    """
    if found is None:
      found = self._storage.find(ids)
    rows = tf.reshape(found, [-1])
    new = rows < 0
    new_pos = tf.where(new)[:, 0]
    new_ids = tf.gather(ids, new_pos)
    filtering = getattr(self._hash_filter, "enabled", True)
    if filtering:
      admitted = self._hash_filter.admit(new_ids, tf.gather(counts, new_pos))
      ins_ids = tf.boolean_mask(new_ids, admitted)
      ins_pos = tf.boolean_mask(new_pos, admitted)
    else:
      ins_ids, ins_pos = new_ids, new_pos
    ins_rows = self._storage.insert(ins_ids)
    with tf.control_dependencies([self._init_new(ins_ids, ins_rows)]):
      rows = tf.tensor_scatter_nd_update(rows, ins_pos[:, None], ins_rows)
    rows = tf.reshape(rows, [-1])
    keep = rows >= 0 if filtering else None
    return keep, rows

  def _stamp(self, rows: tf.Tensor, req_time) -> tf.Operation:
    req = tf.cast(0 if req_time is None else req_time, tf.int64)
    req = tf.reshape(req, [])
    stamp = self._storage.scatter(_TS, rows, tf.fill(tf.shape(rows), req))
    latest = self._max_ts.assign(tf.maximum(self._max_ts.read_value(), req),
                                 read_value=False)
    return tf.group(stamp, latest)

  def _write_unique(self,
                    ids,
                    values,
                    counts,
                    kind,
                    req_time,
                    lr=None,
                    global_step=None,
                    salt=None,
                    found=None) -> tf.Operation:
    """One write of distinct `ids`: upsert, then `kind` on the kept rows."""
    keep, rows = self._upsert(ids, counts, found)
    kept_ids = ids
    if keep is not None:
      rows = tf.boolean_mask(rows, keep)
      kept_ids = tf.boolean_mask(ids, keep)
      values = tf.boolean_mask(values, keep)
    ops = []
    if kind == "optimize":
      ops.extend(self._optimize(kept_ids, rows, values, lr, global_step, salt))
    else:
      for seg in self._segments:
        part = values[:, seg.offset:seg.offset + seg.dim]
        if kind == "assign_add":
          part = self._storage.gather(seg.weight_column, rows) + part
        ops.append(self._storage.scatter(seg.weight_column, rows, part))
    with tf.control_dependencies(ops):
      return self._stamp(rows, req_time)

  def _optimize(self, ids, rows, grads, lr, global_step, salt):
    """The optimizer step of every segment on distinct existing `rows`."""
    ops = []
    gs = tf.cast(global_step, tf.int64)
    for seg in self._segments:
      w = self._storage.gather(seg.weight_column, rows)
      g = grads[:, seg.offset:seg.offset + seg.dim]
      scale = seg.compressor.new_scale(gs)
      if scale is not None:
        ops.append(seg.compressor.scale.assign(scale, read_value=False))
      g = seg.compressor.backward(w, g, scale)
      slots = {
          slot.name: self._storage.gather(seg.slot_column(slot.name), rows)
          for slot in seg.rule.slots
      }
      rule_gs = tf.zeros_like(gs) if seg.stochastic_rounding else gs
      new_w, new_slots = seg.rule.update(seg.opt_cfg, w, slots, g,
                                         lr[seg.index], rule_gs)
      if seg.stochastic_rounding:
        u = hash_table_initializers.uniform_bits(
            tf.bitwise.bitwise_xor(ids, salt), self._seed, 1000 + seg.index,
            seg.dim)
        new_w = stochastic_round_to_float16(new_w, u)
      ops.append(self._storage.scatter(seg.weight_column, rows, new_w))
      for slot_name, value in new_slots.items():
        ops.append(
            self._storage.scatter(seg.slot_column(slot_name), rows, value))
    return ops

  def _write_sequential(self,
                        ids,
                        values,
                        kind,
                        req_time,
                        lr=None,
                        global_step=None,
                        base_salt=None) -> tf.Tensor:
    """Runs a write occurrence by occurrence, in rounds of distinct ids.

    Round r takes the r-th occurrence of every id, so each id sees its
    occurrences in order, as in monolith's sequential loop.
    """
    n = tf.size(ids, out_type=tf.int64)
    unique, where, counts = tf.unique_with_counts(ids, out_idx=tf.int64)
    order = tf.argsort(where, stable=True)
    starts = tf.cumsum(counts, exclusive=True)
    rank_sorted = tf.range(n) - tf.gather(starts, tf.gather(where, order))
    rank = tf.scatter_nd(
        tf.cast(order, tf.int64)[:, None], rank_sorted, tf.reshape(n, [1]))
    rounds = tf.reduce_max(tf.concat([counts, [0]], 0))
    del unique

    def body(r):
      pos = tf.where(tf.equal(rank, r))[:, 0]
      salt = None if base_salt is None else base_salt + r
      op = self._write_unique(tf.gather(ids, pos), tf.gather(values, pos),
                              tf.ones_like(pos), kind, req_time, lr,
                              global_step, salt)
      with tf.control_dependencies([op]):
        return [r + 1]

    return tf.while_loop(lambda r: r < rounds,
                         body, [tf.constant(0, tf.int64)],
                         parallel_iterations=1)[0]

  def _write(self,
             ids,
             values,
             kind,
             where,
             arg,
             req_time,
             name,
             lr=None,
             global_step=None,
             dedup=False) -> "HashTable":
    with tf.name_scope(name or where):
      ids = self._check_ids(ids, where)
      values = self._check_rows(ids, values, where, arg)
      checked = [ids, values]
      if req_time is not None:
        req_time = tf.convert_to_tensor(req_time)
        if req_time.shape.num_elements() not in (None, 1):
          raise ValueError(
              f"HashTable {self._table_name!r}.{where}: req_time must be a "
              f"scalar, got shape {req_time.shape.as_list()}")
        req_time = tf.reshape(tf.cast(req_time, tf.int64), [])
        checked.append(req_time)
      if dedup:
        # Stateless, so it need not wait for the checks or earlier writes:
        # it can run while the forward pass still computes `values`.
        unique, idx, counts = tf.unique_with_counts(ids, out_idx=tf.int64)
        selector = duplicate_selector(idx, tf.size(unique, out_type=tf.int64),
                                      values.dtype)
        # A read, so it need not wait for the checks either (only for the
        # earlier writes): the index lookup overlaps the forward pass too.
        with tf.control_dependencies(self._deps):
          found = self._storage.find(unique)
      # Every state change waits for the id and shape checks, so a failing
      # check leaves the table (index, rows, filter counters) untouched.
      with tf.control_dependencies(self._deps + checked):
        base_salt = None
        if kind == "optimize" and self._rounding_calls is not None:
          # A fresh stream of rounding draws per call (checkpointed).
          calls = self._rounding_calls.assign_add(1)
          base_salt = tf.bitwise.bitwise_xor(
              tf.cast(calls, tf.int64) * 1000003,
              tf.cast(global_step, tf.int64) * 7919)
        if dedup:
          # == sum_duplicates(values, idx, len(unique)), bit for bit.
          summed = tf.sparse.sparse_dense_matmul(selector, values)
          done = self._write_unique(unique, summed, counts, kind, req_time, lr,
                                    global_step, base_salt, found)
        else:
          done = self._write_sequential(ids, values, kind, req_time, lr,
                                        global_step, base_salt)
      return self._chained(tf.group(done))

  @_do_not_convert
  def assign(self, ids, values, req_time=None, name=None) -> "HashTable":
    """Sets the embeddings of `ids` to `values` (later duplicates win).

    A new id is initialized first (initializer + slots), then overwritten.

    Args:
      ids: int64 ids `[n]`.
      values: float `[n, D]` (`[n]` when D == 1).
      req_time: int64 seconds stamped on the entries (default 0).
      name: Name scope.

    Returns:
      The table, chained after the write.

    Raises:
      TypeError / ValueError / InvalidArgumentError: bad ids or values.
    """
    return self._write(ids, values, "assign", "assign", "values", req_time,
                       name)

  @_do_not_convert
  def assign_add(self, ids, values, req_time=None, name=None) -> "HashTable":
    """Adds `values` to the embeddings of `ids` (a new id starts from its
    initializer value).

    Args:
      ids: int64 ids `[n]`.
      values: float `[n, D]` (`[n]` when D == 1).
      req_time: int64 seconds stamped on the entries (default 0).
      name: Name scope.

    Returns:
      The table, chained after the write.

    Raises:
      TypeError / ValueError / InvalidArgumentError: bad ids or values.
    """
    return self._write(ids, values, "assign_add", "assign_add", "values",
                       req_time, name)

  @_do_not_convert
  def apply_gradients(self,
                      ids,
                      grads,
                      global_step,
                      use_multi_threads=False,
                      enable_dedup=False,
                      req_time=None,
                      name=None) -> "HashTable":
    """Takes the configured optimizer steps for `ids` with `grads`.

    Args:
      ids: int64 ids `[n]`.
      grads: float `[n, D]` (`[n]` when D == 1), d loss / d lookup(ids).
      global_step: int64 scalar (batch_softmax, one_bit scale schedule).
      use_multi_threads: Accepted for compatibility.
      enable_dedup: True: sum the gradients of equal ids, one step per
        unique id. False (monolith's default): one sequential step per
        occurrence (exact, slower when ids repeat).
      req_time: int64 seconds stamped on the entries (default 0).
      name: Name scope.

    Returns:
      The table, chained after the update.

    Raises:
      TypeError / ValueError / InvalidArgumentError: bad ids or grads.
    """
    del use_multi_threads
    with tf.name_scope(name or "apply_gradients"):
      lr = self._learning_rates()
      return self._write(ids,
                         grads,
                         "optimize",
                         "apply_gradients",
                         "grads",
                         req_time,
                         None,
                         lr=lr,
                         global_step=tf.convert_to_tensor(global_step),
                         dedup=enable_dedup)

  # ------------------------------------------------------ expiry, eviction

  def expired_mask(self, ids: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
    """Whether each entry is expired: `max_ts - ts >= expire days * 86400`."""
    ts = self._storage.gather(_TS, rows)
    limit = tf.gather(self._expire_seconds, hash_filter_ops.slot_of(ids))
    return self._max_ts.read_value() - ts >= limit

  @_do_not_convert
  def evict(self, name=None) -> "HashTable":
    """Removes expired entries now and frees their rows.

    Returns:
      The table, chained after the eviction.
    """
    with tf.name_scope(name or "evict"):
      with tf.control_dependencies(self._deps):
        ids, rows = self._storage.export()
        expired = self.expired_mask(ids, rows)
        keep = tf.logical_not(expired)
        op = self._storage.compact(tf.boolean_mask(ids, keep),
                                   tf.boolean_mask(rows, keep),
                                   tf.boolean_mask(ids, expired))
      return self._chained(op)

  # ----------------------------------------------------- save and restore

  @_do_not_convert
  def save(self, basename, name=None) -> "HashTable":
    """Writes monolith-format `EntryDump` shards `{basename}-{i:05d}-of-{n:05d}`.

    Expired entries are not written.

    Returns:
      The table, chained after the save.
    """
    from monolith.native_training import hash_table_checkpoint  # pylint: disable=g-import-not-at-top
    with tf.name_scope(name or "save"):
      with tf.control_dependencies(self._deps):
        op = hash_table_checkpoint.save(self, basename)
      return self._chained(op)

  @_do_not_convert
  def restore(self, basename, name=None) -> "HashTable":
    """Replaces the table with the entries of monolith-format shards.

    Falls back to `extra_restore_names` (directory-relative names) when no
    shard of `basename` exists.

    Returns:
      The table, chained after the restore.
    """
    from monolith.native_training import hash_table_checkpoint  # pylint: disable=g-import-not-at-top
    with tf.name_scope(name or "restore"):
      with tf.control_dependencies(self._deps):
        op = hash_table_checkpoint.restore(self, basename)
      return self._chained(op)

  @_do_not_convert
  def export_entries(self, drop_expired: bool = True):
    """All entries' state as tensors (ids, weights, slots, timestamps).

    Args:
      drop_expired: Leave out expired entries (as `save` does).

    Returns:
      A dict: `ids` int64 `[n]`; `weights` float32 `[n, D]` (raw, not
      compressed); `slots` {(segment index, slot name): `[n, width]`};
      `timestamps` int64 `[n]`.
    """
    with tf.control_dependencies(self._deps):
      ids, rows = self._storage.export()
      if drop_expired:
        keep = tf.logical_not(self.expired_mask(ids, rows))
        ids, rows = tf.boolean_mask(ids, keep), tf.boolean_mask(rows, keep)
      weights = tf.concat(
          [self._storage.gather(s.weight_column, rows) for s in self._segments],
          axis=1)
      slots = {
          (s.index, slot.name):
              self._storage.gather(s.slot_column(slot.name), rows)
          for s in self._segments for slot in s.rule.slots
      }
      return {
          "ids": ids,
          "weights": weights,
          "slots": slots,
          "timestamps": self._storage.gather(_TS, rows)
      }

  @_do_not_convert
  def import_entries(self, ids, weights, slots, timestamps) -> tf.Operation:
    """Replaces every entry with the given state (see `export_entries`).

    Slots missing from `slots` get their optimizer's initial value;
    `max_update_ts` becomes the largest timestamp.
    """
    ids = tf.convert_to_tensor(ids, tf.int64)
    n = tf.size(ids)
    values = {_TS: timestamps}
    for seg in self._segments:
      values[seg.weight_column] = weights[:, seg.offset:seg.offset + seg.dim]
      for slot in seg.rule.slots:
        value = slots.get((seg.index, slot.name))
        if value is None:
          value = tf.fill(tf.stack([n, slot.width(seg.dim)]),
                          tf.cast(slot.initial_value(seg.opt_cfg), slot.dtype))
        values[seg.slot_column(slot.name)] = value
    with tf.control_dependencies(self._deps):
      replaced = self._storage.replace_all(ids, values)
      latest = self._max_ts.assign(tf.reduce_max(
          tf.concat([tf.cast(timestamps, tf.int64), [0]], 0)),
                                   read_value=False)
    return tf.group(replaced, latest)


def hash_table_from_config(config: entry.HashTableConfigInstance,
                           hash_filter=None,
                           name_suffix: str = "",
                           sync_client=None,
                           saver_parallel: int = -1,
                           seed: int = 0) -> HashTable:
  """Builds a `HashTable` from an `entry.HashTableConfigInstance`.

  Args:
    config: The table config plus one learning rate per segment.
    hash_filter: A filter from `hash_filter_ops` (None: admit every id).
    name_suffix: Appended to the table name `MonolithHashTable`.
    sync_client: Accepted for compatibility (serving sync is not built in).
    saver_parallel: Number of shards `save` writes (-1: monolith's rule).
    seed: Seed of `random_uniform` initializers and stochastic rounding.

  Returns:
    The table.

  Raises:
    TypeError / ValueError: see `HashTable`.
  """
  del sync_client
  table = HashTable(config,
                    hash_filter=hash_filter,
                    name="MonolithHashTable" + name_suffix,
                    seed=seed)
  table.saver_parallel = saver_parallel
  return table


def _config_instance(segment,
                     learning_rate,
                     expire_time=36500,
                     extra_restore_names=None) -> entry.HashTableConfigInstance:
  table_config = embedding_hash_table_pb2.EmbeddingHashTableConfig()
  table_config.entry_config.segments.append(segment)
  table_config.cuckoo.SetInParent()
  table_config.slot_expire_time_config.default_expire_time = expire_time
  return entry.HashTableConfigInstance(table_config, [learning_rate],
                                       extra_restore_names)


def test_hash_table(dim_size: int,
                    enable_hash_filter: bool = False,
                    name_suffix: Optional[str] = None,
                    learning_rate: float = 1.0,
                    occurrence_threshold: int = 0,
                    use_adagrad: bool = False,
                    expire_time: int = 36500,
                    sync_client=None,
                    extra_restore_names=None) -> HashTable:
  """monolith's test table: zeros initializer, SGD (or Adagrad), fp32.

  Args:
    dim_size: D.
    enable_hash_filter: Use an occurrence-threshold filter.
    name_suffix: Table name suffix.
    learning_rate: The (constant) learning rate.
    occurrence_threshold: The filter's default threshold.
    use_adagrad: Adagrad instead of SGD.
    expire_time: Default expiry in days.
    sync_client: Accepted for compatibility.
    extra_restore_names: Restore fallbacks.

  Returns:
    The table.
  """
  del sync_client
  opt = (entry.AdagradOptimizer(learning_rate=learning_rate)
         if use_adagrad else entry.SgdOptimizer(learning_rate=learning_rate))
  segment = entry.CombineAsSegment(dim_size, entry.ZerosInitializer(), opt,
                                   entry.Fp32Compressor())
  config = _config_instance(segment, learning_rate, expire_time,
                            extra_restore_names)
  hash_filter = None
  if enable_hash_filter:
    threshold = embedding_hash_table_pb2.SlotOccurrenceThresholdConfig(
        default_occurrence_threshold=occurrence_threshold)
    hash_filter = hash_filter_ops.create_hash_filters(
        0, True, threshold.SerializeToString())[0]
  return hash_table_from_config(config,
                                hash_filter=hash_filter,
                                name_suffix=name_suffix or "")


def vocab_hash_table(vocab_size: int,
                     dim_size: int,
                     enable_hash_filter: bool = False,
                     learning_rate: float = 1.0) -> HashTable:
  """monolith's vocabulary test table: a `test_hash_table` with ids
  `0..vocab_size-1` assigned zeros (in graph mode run `as_op()` of the
  returned table once to insert them).

  Args:
    vocab_size: Number of ids to insert.
    dim_size: D.
    enable_hash_filter: Use an occurrence-threshold filter.
    learning_rate: The (constant) SGD learning rate.

  Returns:
    The table, chained after the insertion.
  """
  table = test_hash_table(dim_size,
                          enable_hash_filter=enable_hash_filter,
                          learning_rate=learning_rate)
  ids = tf.range(vocab_size, dtype=tf.int64)
  return table.assign(ids, tf.zeros([vocab_size, dim_size]))
