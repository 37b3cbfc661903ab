"""monolith's hash table checkpoint format (`EntryDump` shards) on stock TF ops.

`HashTable.save(basename)`, `HashTable.restore(basename)` and
`HashTable.lookup_entry(ids)` call `save`, `restore` and
`lookup_entry_dumps` here. The format is monolith's (HASH_TABLE_SPEC Part B
section 5.9), so tables move both ways between monolith and monolith-tf:

* `save` writes uncompressed TFRecord shards `{basename}-{i:05d}-of-{n:05d}`,
  `n = table.saver_parallel` when it is > 0, else
  `min(4, max(1, size // 1e6))` (a table without the attribute counts as
  -1; monolith's `saver_parallel == 0` would write no shard at all, so it
  counts as "automatic" too). Entries are sorted by id and split into `n`
  contiguous, equally sized runs.
* Each record is a serialized `EntryDump`: `id`; `num`, all D raw float32
  weights (never compressed); `opt.dump`, one `SingleOptimizerDump` per
  segment in order, whose member is named after the `OptimizerConfig`
  member and holds the slots of `hash_table_optimizers.RULES` under their
  names (adagrad `norm`; ftrl `zero`, `norm`; adam `m`, `v`, `beta1_power`,
  `beta2_power`; sgd an empty `sgd`; moving_average contributes no
  `SingleOptimizerDump` at all, as in monolith, so the dumps of later
  segments move up one place); `last_update_ts_sec`.
* Expired entries (slot expiry against the largest `req_time` seen) are not
  written.
* `restore` reads every shard of `basename`, replaces the whole table with
  the entries read (the table is left untouched if reading fails) and sets
  `max_update_ts` to the largest restored timestamp. A missing
  `last_update_ts_sec` counts as 0; weights missing from `num` and slots
  missing from the dump (another optimizer, an older dump) get their
  initializer / optimizer initial values; ids dumped twice keep the last
  dump (monolith's upsert). Adam / amsgrad `beta1_power` and `beta2_power`
  go back to their own slots (monolith's Adam restore puts the dumped
  `beta2_power` into `beta1_power`, Part B section 2.5; Part A.4).
* When no shard of `basename` exists, `restore` tries the table's
  `extra_restore_names` in order: each replaces the last path component of
  `basename` (the table-name part: monolith's restorer names a table's
  shards `{asset_dir}/{table name}`), with `:` and `/` in the name turned
  into `-` as monolith does. `dir/MonolithHashTable_a` with extra name
  `MonolithHashTable_old` falls back to `dir/MonolithHashTable_old`. With no
  shard anywhere it raises `NotFoundError` naming every pattern tried.

Not in the format (as in monolith): the one_bit scale (a restored table
looks up with `init_scale` until its next `global_step % step_size == 0`
step, Part B section 4.4), the stochastic-rounding state and the hash filter
counts. `tf.train.Checkpoint` / `tf.compat.v1.train.Saver` checkpoints of
the table do keep the scale.

Stock ops only, so `save` and `restore` work in TF1 graphs, eagerly, inside
`tf.function` and on whichever device (a remote parameter server) the
table's ops are placed: `EntryDump`s are built with `tf.io.encode_proto` and
read with `tf.io.decode_proto` against a `FileDescriptorSet` built once from
the Python descriptors; shards are written with the `DatasetToTFRecord` op
and read with `tf.data.TFRecordDataset`. The basename may be a string
tensor (a placeholder, as monolith's checkpoint listeners feed it).

Atomicity. monolith writes each shard to a temporary name and renames it.
TensorFlow has no stock op that renames (or deletes) a file, and a Python
rename would run on the client, not on the parameter server that wrote the
shard, so shards are written in place and `restore` refuses to read an
inconsistent set instead:

* a shard cut short by a crash fails the TFRecord length/CRC checks
  (`DataLossError`), unless the cut falls exactly between two records;
* a missing shard of the set raises `NotFoundError` naming it;
* shards of saves with different shard counts under one basename (stale
  files of an earlier save) raise `InvalidArgumentError`.

A crash while overwriting a complete save of the same shard count can still
leave a mix of old and new shards; save each checkpoint to a fresh basename
(monolith's listeners put the global step in the path). The directory of
`basename` must exist (`DatasetToTFRecord` does not create it).

Example:

  table = hash_table_ops.hash_table_from_config(instance)
  table = table.save("/ckpt/model.ckpt-100.assets/" + table.name)
  restored = other_table.restore("/ckpt/model.ckpt-100.assets/" + table.name)
"""

from typing import Dict, List, Optional, Sequence, Tuple

import tensorflow as tf
from google.protobuf import descriptor_pb2

from monolith.native_training import hash_table_ops
from monolith.native_training.runtime.hash_table import embedding_hash_table_pb2

_PACKAGE = "monolith.hash_table."
_ENTRY_DUMP = _PACKAGE + "EntryDump"
_OPTIMIZER_DUMP = _PACKAGE + "OptimizerDump"
_SINGLE_DUMP = _PACKAGE + "SingleOptimizerDump"
_SHARD_PATTERN = "-?????-of-?????"
_SHARD_REGEX = ".*-[0-9]{5}-of-[0-9]{5}"
_MAX_AUTO_SHARDS = 4
_ENTRIES_PER_AUTO_SHARD = 1000000
# Reads every record of a checkpoint as one batch.
_ALL_RECORDS = 1 << 62
# Longest path the NotFoundError trick of `_not_found` may use.
_MAX_MESSAGE_CHARS = 3000


def _file_descriptor_set() -> bytes:
  """The `FileDescriptorSet` of embedding_hash_table.proto and its imports."""
  fds = descriptor_pb2.FileDescriptorSet()
  seen = set()

  def add(file_descriptor):
    if file_descriptor.name in seen:
      return
    seen.add(file_descriptor.name)
    for dependency in file_descriptor.dependencies:
      add(dependency)
    file_descriptor.CopyToProto(fds.file.add())

  add(embedding_hash_table_pb2.DESCRIPTOR)
  return fds.SerializeToString()


_DESCRIPTOR_SOURCE = b"bytes://" + _file_descriptor_set()
_SINGLE_DUMP_FIELDS = (
    embedding_hash_table_pb2.SingleOptimizerDump.DESCRIPTOR.fields_by_name)


def _dump_message(member: str) -> Optional[str]:
  """The `*OptimizerDump` message of optimizer `member` (None: no dump)."""
  field = _SINGLE_DUMP_FIELDS.get(member)
  return None if field is None else field.message_type.full_name


def _dumped_segments(table) -> List[Tuple[int, object, str]]:
  """`(position in opt.dump, segment, dump message)` of segments with a dump.

  Raises:
    ValueError: A slot of a segment's rule is not a field of its dump
      message (the slot layout and the proto disagree).
  """
  dumped = []
  for seg in table.segments:
    message = _dump_message(seg.opt_member)
    if message is None:
      continue
    fields = _SINGLE_DUMP_FIELDS[seg.opt_member].message_type.fields_by_name
    for slot in seg.rule.slots:
      if slot.name not in fields:
        raise ValueError(
            f"HashTable {table.name!r}: segment {seg.index} optimizer "
            f"{seg.opt_member!r} keeps slot {slot.name!r}, which {message} "
            f"has no field for; fields: {sorted(fields)}")
    dumped.append((len(dumped), seg, message))
  return dumped


def _encode(values: Sequence[Tuple[str, tf.Tensor, object]], message: str,
            n: tf.Tensor) -> tf.Tensor:
  """Serializes `n` messages of type `message`.

  Args:
    values: `(field name, [n, k] values, count)` per field; `count` is the
      number of values each message takes (an int, or int32 `[n]`).
    message: Full message name.
    n: Number of messages.

  Returns:
    string `[n]`.
  """
  if not values:
    return tf.fill(tf.reshape(n, [1]), "")
  sizes = []
  for _, _, count in values:
    if isinstance(count, int):
      count = tf.fill(tf.reshape(n, [1]), count)
    sizes.append(tf.cast(count, tf.int32))
  return tf.io.encode_proto(tf.stack(sizes, axis=1), [v for _, v, _ in values],
                            [name for name, _, _ in values],
                            message,
                            descriptor_source=_DESCRIPTOR_SOURCE)


def _decode(records: tf.Tensor, message: str,
            fields: Sequence[Tuple[str, tf.DType]]):
  """Parses string `[n]` records (n may be 0).

  Returns:
    `(sizes, values)`: int32 `[n, len(fields)]` value counts and one
    `[n, max count]` tensor per field.
  """
  # DecodeProto rejects an empty batch: parse one extra empty message.
  padded = tf.concat([records, [""]], 0)
  sizes, values = tf.io.decode_proto(padded,
                                     message, [name for name, _ in fields],
                                     [dtype for _, dtype in fields],
                                     descriptor_source=_DESCRIPTOR_SOURCE)
  return sizes[:-1], [v[:-1] for v in values]


def _columns(values: tf.Tensor, width: int) -> tf.Tensor:
  """`values` `[n, k]` cut or padded (zeros / "") to `[n, width]`."""
  values = values[:, :width]
  pad = width - tf.shape(values)[1]
  zero = "" if values.dtype == tf.string else tf.zeros([], values.dtype)
  values = tf.pad(values, [[0, 0], [0, pad]], constant_values=zero)
  values.set_shape([None, width])
  return values


def _present(sizes: tf.Tensor, width: int) -> tf.Tensor:
  """bool `[n, width]`: column j < the decoded count `sizes` `[n]`."""
  return tf.range(width)[None, :] < sizes[:, None]


def encode_entries(table, ids: tf.Tensor, weights: tf.Tensor,
                   slots: Dict[Tuple[int, str],
                               tf.Tensor], timestamps: tf.Tensor) -> tf.Tensor:
  """Serialized `EntryDump`s of entries given as in `export_entries`.

  Args:
    table: The `HashTable` (its segments give the dump layout).
    ids: int64 `[n]`.
    weights: float32 `[n, D]`, raw (uncompressed) weights.
    slots: `{(segment index, slot name): [n, width]}`, every slot.
    timestamps: int64 `[n]`.

  Returns:
    string `[n]`.
  """
  n = tf.size(ids)
  dumps = []
  for _, seg, message in _dumped_segments(table):
    fields = []
    for slot in seg.rule.slots:
      width = slot.width(seg.dim)
      fields.append(
          (slot.name, tf.cast(slots[(seg.index, slot.name)],
                              slot.dtype), width))
    member = _encode(fields, message, n)
    dumps.append(
        _encode([(seg.opt_member, member[:, None], 1)], _SINGLE_DUMP, n))
  if dumps:
    opt = _encode([("dump", tf.stack(dumps, axis=1), len(dumps))],
                  _OPTIMIZER_DUMP, n)
  else:
    opt = tf.fill(tf.reshape(n, [1]), "")
  return _encode([
      ("id", tf.cast(ids, tf.int64)[:, None], 1),
      ("num", tf.cast(weights, tf.float32), table.dim_size),
      ("opt", opt[:, None], 1),
      ("last_update_ts_sec", tf.cast(timestamps, tf.int64)[:, None], 1),
  ], _ENTRY_DUMP, n)


def decode_entries(table, records: tf.Tensor) -> Dict[str, object]:
  """Parses `EntryDump`s into the arguments of `import_entries`.

  Values a dump lacks get what a new entry gets: the initializer's weights,
  the optimizer's initial slots, timestamp 0. Ids dumped more than once keep
  their last dump.

  Args:
    table: The `HashTable` to restore into.
    records: string `[n]` serialized `EntryDump`s.

  Returns:
    A dict with `ids`, `weights`, `slots`, `timestamps` (see
    `HashTable.export_entries`).
  """
  sizes, (ids, num, opt, ts) = _decode(records, _ENTRY_DUMP,
                                       [("id", tf.int64), ("num", tf.float32),
                                        ("opt", tf.string),
                                        ("last_update_ts_sec", tf.int64)])
  # Keep the last dump of each id (monolith upserts dump after dump).
  ids = _columns(ids, 1)[:, 0]
  unique_ids, where = tf.unique(ids, out_idx=tf.int32)
  last = tf.math.unsorted_segment_max(tf.range(tf.size(ids)), where,
                                      tf.size(unique_ids))
  sizes = tf.gather(sizes, last)
  ids = unique_ids
  num = tf.gather(_columns(num, table.dim_size), last)
  opt = tf.gather(_columns(opt, 1)[:, 0], last)
  timestamps = tf.gather(_columns(ts, 1)[:, 0], last)

  seed = table.seed
  init = tf.concat([
      seg.init_fn(seg.init_cfg, ids, seg.dim, seed, seg.index)
      for seg in table.segments
  ],
                   axis=1)
  weights = tf.where(_present(sizes[:, 1], table.dim_size), num, init)

  slots = {}
  n = tf.size(ids)
  dumped = _dumped_segments(table)
  if dumped:
    _, (dump,) = _decode(opt, _OPTIMIZER_DUMP, [("dump", tf.string)])
    dump = _columns(dump, len(dumped))
  for position, seg, message in dumped:
    _, (member,) = _decode(dump[:, position], _SINGLE_DUMP,
                           [(seg.opt_member, tf.string)])
    member = _columns(member, 1)[:, 0]
    if not seg.rule.slots:
      continue
    slot_sizes, values = _decode(member, message,
                                 [(s.name, s.dtype) for s in seg.rule.slots])
    for j, slot in enumerate(seg.rule.slots):
      width = slot.width(seg.dim)
      initial = tf.fill(tf.stack([n, width]),
                        tf.cast(slot.initial_value(seg.opt_cfg), slot.dtype))
      slots[(seg.index,
             slot.name)] = tf.where(_present(slot_sizes[:, j], width),
                                    _columns(values[j], width), initial)
  for seg in table.segments:
    for slot in seg.rule.slots:
      if (seg.index, slot.name) not in slots:  # A segment without a dump.
        slots[(seg.index, slot.name)] = tf.fill(
            tf.stack([n, slot.width(seg.dim)]),
            tf.cast(slot.initial_value(seg.opt_cfg), slot.dtype))
  return {
      "ids": ids,
      "weights": weights,
      "slots": slots,
      "timestamps": timestamps
  }


def _shard_names(basename: tf.Tensor, shards: tf.Tensor,
                 num_shards: tf.Tensor) -> tf.Tensor:
  """`{basename}-{shard:05d}-of-{num_shards:05d}` (shards may be a vector)."""
  return tf.strings.join([
      basename, "-",
      tf.strings.as_string(shards, width=5, fill="0"), "-of-",
      tf.strings.as_string(num_shards, width=5, fill="0")
  ])


def _write_records(filename: tf.Tensor, records: tf.Tensor) -> tf.Operation:
  """Writes `records` as an uncompressed TFRecord file (a stock op)."""
  dataset = tf.data.Dataset.from_tensor_slices(records)
  return tf.raw_ops.DatasetToTFRecord(
      input_dataset=tf.data.experimental.to_variant(dataset),
      filename=filename,
      compression_type="")


def num_shards(table) -> tf.Tensor:
  """The number of shards `save` writes (int32 scalar).

  `table.saver_parallel` when it is > 0, else
  `min(4, max(1, size // 1e6))` with `size` the number of entries.
  """
  parallel = int(getattr(table, "saver_parallel", -1))
  if parallel > 0:
    return tf.constant(parallel, tf.int32)
  size = tf.cast(table.storage.size(), tf.int64)
  return tf.cast(
      tf.clip_by_value(size // _ENTRIES_PER_AUTO_SHARD, 1, _MAX_AUTO_SHARDS),
      tf.int32)


def save(table, basename, name: Optional[str] = None) -> tf.Operation:
  """Writes the table's unexpired entries as monolith `EntryDump` shards.

  Args:
    table: The `HashTable`.
    basename: string scalar (Python or tensor); shards are
      `{basename}-{i:05d}-of-{n:05d}`. Its directory must exist.
    name: Name scope.

  Returns:
    The op that writes every shard.
  """
  with tf.name_scope(name or "save_entry_dumps"):
    basename = tf.convert_to_tensor(basename, tf.string)
    entries = table.export_entries(drop_expired=True)
    order = tf.argsort(entries["ids"], stable=True)
    records = encode_entries(table, tf.gather(
        entries["ids"], order), tf.gather(entries["weights"], order), {
            k: tf.gather(v, order) for k, v in entries["slots"].items()
        }, tf.gather(entries["timestamps"], order))
    count = tf.size(records, out_type=tf.int64)
    shards = num_shards(table)
    # Entry k (in id order) goes to shard k * n // count: n equal runs.
    shard_of = tf.cast(
        tf.range(count) * tf.cast(shards, tf.int64) // tf.maximum(count, 1),
        tf.int32)

    def write(i):
      filename = _shard_names(basename, i, shards)
      return _write_records(filename,
                            tf.boolean_mask(records, tf.equal(shard_of, i)))

    parallel = int(getattr(table, "saver_parallel", -1))
    if parallel > 0:
      return tf.group([write(i) for i in range(parallel)])

    def conditional_write(i):
      with tf.control_dependencies([write(i)]):
        return tf.constant(True)

    return tf.group([
        tf.cond(i < shards,
                lambda i=i: conditional_write(i),
                lambda: tf.constant(False)) for i in range(_MAX_AUTO_SHARDS)
    ])


def restore_candidates(table, basename) -> tf.Tensor:
  """The basenames `restore` tries, in order (string `[1 + extra names]`).

  `basename`, then each of `table.extra_restore_names` in place of the last
  path component of `basename` (`:` and `/` in a name become `-`).
  """
  basename = tf.convert_to_tensor(basename, tf.string)
  directory = tf.strings.regex_replace(basename, "[^/]*$", "")
  candidates = [basename]
  for extra in table.extra_restore_names:
    cleaned = str(extra).replace(":", "-").replace("/", "-")
    candidates.append(tf.strings.join([directory, cleaned]))
  return tf.stack(candidates)


def _not_found(message: tf.Tensor) -> tf.Tensor:
  """Fails with `NotFoundError: {message}; No such file or directory`.

  No stock op raises an arbitrary error, but reading a file that cannot
  exist raises `NotFoundError` with its path in the message, in every mode
  and on every device. `message` must not start with `/`.

  Returns:
    An empty string `[0]` computed from the failed read (never produced).
  """
  contents = tf.io.read_file(tf.strings.substr(message, 0, _MAX_MESSAGE_CHARS))
  return tf.boolean_mask(tf.reshape(contents, [1]), [False])


def find_shards(table, basename) -> tf.Tensor:
  """The shard files `restore` reads (string `[n]`).

  The first candidate of `restore_candidates` with any shard wins; its
  shards must all have the same count `n`, and all `n` are returned
  (reading a missing one raises `NotFoundError`).

  Raises (when run):
    NotFoundError: No candidate has a shard.
    InvalidArgumentError: The winner's shards have different counts.
  """
  candidates = restore_candidates(table, basename)
  num_candidates = int(candidates.shape[0])
  files, owner = [], []
  for k in range(num_candidates):
    matched = tf.io.matching_files(candidates[k] + _SHARD_PATTERN)
    matched = tf.boolean_mask(
        matched, tf.strings.regex_full_match(matched, _SHARD_REGEX))
    files.append(matched)
    owner.append(tf.fill(tf.shape(matched), k))
  files, owner = tf.concat(files, 0), tf.concat(owner, 0)

  def found():
    first = tf.reduce_min(owner)
    chosen = tf.gather(candidates, first)
    own = tf.boolean_mask(files, tf.equal(owner, first))
    counts = tf.strings.to_number(tf.strings.substr(own, -5, 5), tf.int32)
    n = tf.reduce_max(counts)
    same = tf.debugging.Assert(tf.equal(tf.reduce_min(counts), n), [
        f"HashTable {table.name!r}.restore: the shards of", chosen,
        "have different shard counts (stale shards of an earlier "
        "save?):", own
    ],
                               summarize=16)
    with tf.control_dependencies([same]):
      return _shard_names(chosen, tf.range(n), n)

  def missing():
    tried = tf.strings.reduce_join(candidates + _SHARD_PATTERN, separator=", ")
    return _not_found(
        tf.strings.join([
            f"HashTable {table.name!r}.restore: no checkpoint shard found; "
            "tried ", tried, " (basename, then extra_restore_names)"
        ]))

  return tf.cond(tf.size(files) > 0, found, missing)


def read_records(files: tf.Tensor) -> tf.Tensor:
  """Every record of the TFRecord `files`, as one string `[n]` tensor."""
  dataset = tf.data.TFRecordDataset(files).batch(_ALL_RECORDS)
  dataset = dataset.concatenate(
      tf.data.Dataset.from_tensors(tf.zeros([0], tf.string))).take(1)
  return dataset.get_single_element()


def restore(table, basename, name: Optional[str] = None) -> tf.Operation:
  """Replaces the table's entries with those of monolith `EntryDump` shards.

  Args:
    table: The `HashTable`.
    basename: string scalar (Python or tensor), as given to `save`.
    name: Name scope.

  Returns:
    The op that restores the table.

  Raises (when run):
    NotFoundError: No shard of `basename` nor of an extra restore name, or
      a shard of the set is missing.
    InvalidArgumentError: Shards with different counts under the basename.
    DataLossError: A shard is truncated or corrupt.
  """
  with tf.name_scope(name or "restore_entry_dumps"):
    records = read_records(find_shards(table, basename))
    entries = decode_entries(table, records)
    return table.import_entries(entries["ids"], entries["weights"],
                                entries["slots"], entries["timestamps"])


def lookup_entry_dumps(table, ids: tf.Tensor) -> tf.Tensor:
  """Serialized `EntryDump` of each id (`b""` for ids not in the table).

  Args:
    table: The `HashTable`.
    ids: int64 `[n]`.

  Returns:
    string `[n]`.
  """
  storage = table.storage
  rows = tf.reshape(storage.find(ids), [-1])
  found = rows >= 0
  safe = tf.where(found, rows, tf.zeros_like(rows))
  weights = tf.concat(
      [storage.gather(seg.weight_column, safe) for seg in table.segments],
      axis=1)
  slots = {
      (seg.index, slot.name): storage.gather(seg.slot_column(slot.name), safe)
      for seg in table.segments for slot in seg.rule.slots
  }
  timestamps = storage.gather(hash_table_ops._TS, safe)  # pylint: disable=protected-access
  records = encode_entries(table, ids, weights, slots, timestamps)
  return tf.where(found, records, tf.fill(tf.shape(records), ""))
