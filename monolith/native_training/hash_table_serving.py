"""The SERVING form of a hash table: compressed values, lookups only.

A `ServingHashTable` holds what a model needs to answer requests and nothing
else (HASH_TABLE_SPEC Part A.5, Part B sections 1.1 and 4.1): no optimizer
slots, no timestamps, and each segment stored in its compressor's encoding:

| comp_config       | stored per entry and segment      | lookup returns        |
|-------------------|-----------------------------------|-----------------------|
| fp32 (or none)    | `d` float32                       | the value             |
| fp16              | `d` float16 (round to nearest)    | the float16 value     |
| fixed_r8          | `d` int8 codes (`r` is a constant)| `code * r / 128`      |
| one_bit           | `ceil(d / 8)` uint8, one sign bit | `+-amplitude`         |

The ids are one sorted int64 variable (8 bytes per entry) searched with
`tf.searchsorted`, so a table costs `8 + stored value bytes` per entry plus
one sentinel row. Every op is a stock TensorFlow op: a SavedModel holding
serving tables loads in a process that has only `tensorflow` installed, and
unmodified TensorFlow Serving serves it.

Tables can be updated in place without re-exporting (monolith's parameter
sync): `update(ids, values)` upserts a delta of float32 rows (encoded here),
`remove(ids)` deletes ids, and `load_entry_dumps(pattern)` reads
monolith-format `EntryDump` shards (what `HashTable.save` writes) with
`tf.data` and `tf.io.decode_proto` and replaces the table's contents.
"""

from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from monolith.native_training.runtime.hash_table import embedding_hash_table_pb2

_SENTINEL = np.iinfo(np.int64).max
_do_not_convert = tf.autograph.experimental.do_not_convert


class SegmentCodec:
  """Encoding and decoding of one segment's SERVING form.

  Args:
    member: The compressor member ("fp32", "fp16", "fixed_r8", "one_bit"),
      or None (stored as fp32).
    cfg: The member's config message (None for fp32).
    dim: The segment's dims.
  """

  def __init__(self, member: Optional[str], cfg, dim: int):
    self.member = member or "fp32"
    self.dim = int(dim)
    self.r = float(cfg.r) if self.member == "fixed_r8" else None
    self.amplitude = (float(cfg.amplitude)
                      if self.member == "one_bit" else None)
    self.init_scale = (float(cfg.init_scale)
                       if self.member == "one_bit" else None)

  @property
  def dtype(self) -> tf.DType:
    """The stored element type."""
    return {
        "fp32": tf.float32,
        "fp16": tf.float16,
        "fixed_r8": tf.int8,
        "one_bit": tf.uint8
    }[self.member]

  @property
  def width(self) -> int:
    """Stored elements per entry."""
    return (self.dim + 7) // 8 if self.member == "one_bit" else self.dim

  @property
  def bytes_per_entry(self) -> int:
    """Stored bytes per entry."""
    return self.width * self.dtype.size

  def encode(self, w: tf.Tensor) -> tf.Tensor:
    """float32 `[n, dim]` raw weights -> stored `[n, width]`."""
    w = tf.convert_to_tensor(w, tf.float32)
    if self.member == "fp16":
      return tf.cast(w, tf.float16)
    if self.member == "fixed_r8":
      step = self.r / 128.0
      t = tf.where(w >= 0, w + step / 2, w - step / 2)
      q = tf.clip_by_value(t / step, -128.0, 127.0)
      q = tf.where(tf.math.is_nan(q), tf.zeros_like(q), q)
      return tf.cast(tf.cast(q, tf.int32), tf.int8)
    if self.member == "one_bit":
      positive = self.amplitude * tf.tanh(self.init_scale * w) > 0
      bits = tf.cast(positive, tf.int32)
      pad = self.width * 8 - self.dim
      bits = tf.pad(bits, [[0, 0], [0, pad]])
      bits = tf.reshape(bits, [-1, self.width, 8])
      weights = tf.constant([1 << i for i in range(8)], tf.int32)
      return tf.cast(tf.reduce_sum(bits * weights, axis=2), tf.uint8)
    return w

  def decode(self, stored: tf.Tensor) -> tf.Tensor:
    """Stored `[n, width]` -> float32 `[n, dim]`."""
    if self.member == "fp16":
      return tf.cast(stored, tf.float32)
    if self.member == "fixed_r8":
      return tf.cast(stored, tf.float32) * (self.r / 128.0)
    if self.member == "one_bit":
      shifts = tf.constant([i % 8 for i in range(self.dim)], tf.int32)
      cols = tf.constant([i // 8 for i in range(self.dim)], tf.int32)
      packed = tf.cast(tf.gather(stored, cols, axis=1), tf.int32)
      bits = tf.bitwise.bitwise_and(tf.bitwise.right_shift(packed, shifts), 1)
      return (tf.cast(bits, tf.float32) * 2.0 - 1.0) * self.amplitude
    return stored


def codecs_from_config(
    config: embedding_hash_table_pb2.EmbeddingHashTableConfig
) -> List[SegmentCodec]:
  """The codecs of a table config's segments, in order."""
  codecs = []
  for seg in config.entry_config.segments:
    member = (seg.comp_config.WhichOneof("type")
              if seg.HasField("comp_config") else None)
    cfg = getattr(seg.comp_config, member) if member else None
    codecs.append(SegmentCodec(member, cfg, seg.dim_size))
  return codecs


class ServingHashTable(tf.Module):
  """A read-only (updatable in place) hash table in SERVING form.

  Args:
    config: The table's `EmbeddingHashTableConfig` (segments, compressors).
    ids: int64 ids `[n]` (distinct).
    weights: float32 raw weights `[n, D]`.
    name: Name of the table.

  Raises:
    ValueError: If `ids` and `weights` disagree in length or width.
  """

  def __init__(self,
               config: embedding_hash_table_pb2.EmbeddingHashTableConfig,
               ids,
               weights,
               name: str = "serving_table"):
    super().__init__(name=_clean(name))
    self.table_name = name
    self.codecs = codecs_from_config(config)
    self._config_bytes = config.SerializeToString()
    self.dim_size = sum(c.dim for c in self.codecs)
    ids = np.asarray(ids, np.int64).reshape([-1])
    weights = np.asarray(weights, np.float32).reshape([-1, self.dim_size])
    if len(ids) != len(weights):
      raise ValueError(f"ServingHashTable {name!r}: {len(ids)} ids but "
                       f"{len(weights)} weight rows")
    ids, weights = _sorted_with_sentinel(ids, weights)
    # In a graph, initial values are fed (not embedded as constants in the
    # GraphDef): run the initializers with `initializer_feed`.
    self.initializer_feed = {}
    with self.name_scope:
      self.ids = tf.Variable(self._initial(ids, tf.int64, [None]),
                             shape=tf.TensorShape([None]),
                             trainable=False,
                             name="ids")
      self.codes = []
      offset = 0
      for k, codec in enumerate(self.codecs):
        part = weights[:, offset:offset + codec.dim]
        offset += codec.dim
        encoded = _encode_numpy(codec, part)
        self.codes.append(
            tf.Variable(self._initial(encoded, codec.dtype,
                                      [None, codec.width]),
                        shape=tf.TensorShape([None, codec.width]),
                        trainable=False,
                        name=f"codes{k}"))

  def _initial(self, value: np.ndarray, dtype: tf.DType, shape):
    if tf.executing_eagerly():
      return tf.constant(value, dtype)
    placeholder = tf.compat.v1.placeholder(dtype, shape)
    self.initializer_feed[placeholder] = value
    return placeholder

  def bytes_per_entry(self) -> int:
    """Stored bytes per entry: 8 (the id) plus every segment's codes."""
    return 8 + sum(c.bytes_per_entry for c in self.codecs)

  def size(self) -> tf.Tensor:
    """Number of entries (int64)."""
    return tf.shape(self.ids, out_type=tf.int64)[0] - 1

  def _positions(self, ids: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    table_ids = self.ids.read_value()
    pos = tf.searchsorted(table_ids, ids, side="left", out_type=tf.int64)
    found = tf.equal(tf.gather(table_ids, pos), ids)
    found = tf.logical_and(found, tf.not_equal(ids, _SENTINEL))
    return pos, found

  @_do_not_convert
  def lookup(self, ids, name: Optional[str] = None) -> tf.Tensor:
    """Decoded `[len(ids), D]` float32 values; missing ids give zeros.

    Args:
      ids: int64 ids (int32 is cast), flattened.
      name: Name scope.

    Returns:
      float32 `[len(ids), D]`.
    """
    with tf.name_scope(name or "lookup"):
      ids = tf.reshape(tf.cast(ids, tf.int64), [-1])
      pos, found = self._positions(ids)
      parts = [
          codec.decode(tf.gather(var, pos))
          for codec, var in zip(self.codecs, self.codes)
      ]
      values = parts[0] if len(parts) == 1 else tf.concat(parts, axis=1)
      values = tf.where(found[:, None], values, tf.zeros_like(values))
      values.set_shape([ids.shape[0], self.dim_size])
      return values

  def _replace(self, ids: tf.Tensor, codes: Sequence[tf.Tensor]):
    ops = [self.ids.assign(ids, read_value=False)]
    ops += [
        var.assign(c, read_value=False) for var, c in zip(self.codes, codes)
    ]
    return tf.group(ops)

  @_do_not_convert
  def update(self, ids, values, name: Optional[str] = None) -> tf.Operation:
    """Upserts float32 rows: `ids` `[n]`, `values` `[n, D]` raw weights.

    Later duplicates win. Runs in a serving process (stock ops only).

    Returns:
      The update op (the new size is visible once it has run).
    """
    with tf.name_scope(name or "update"):
      ids = tf.reshape(tf.cast(ids, tf.int64), [-1])
      values = tf.ensure_shape(tf.cast(values, tf.float32),
                               [None, self.dim_size])
      check = tf.debugging.assert_equal(
          tf.shape(values)[0],
          tf.shape(ids)[0],
          message="update: values must have one row per id")
      with tf.control_dependencies([check]):
        ids = tf.identity(ids)
      all_ids = tf.concat([self.ids.read_value()[:-1], ids], 0)
      offset, all_codes = 0, []
      for codec, var in zip(self.codecs, self.codes):
        new = codec.encode(values[:, offset:offset + codec.dim])
        offset += codec.dim
        all_codes.append(tf.concat([var.read_value()[:-1], new], 0))
      keep = _last_of_each_id(all_ids)
      return self._replace(*_sorted_kept(all_ids, all_codes, keep))

  @_do_not_convert
  def remove(self, ids, name: Optional[str] = None) -> tf.Operation:
    """Deletes `ids` (missing ones are ignored)."""
    with tf.name_scope(name or "remove"):
      ids = tf.reshape(tf.cast(ids, tf.int64), [-1])
      table_ids = self.ids.read_value()[:-1]
      dropped = _isin(table_ids, ids)
      keep = tf.logical_not(dropped)
      codes = [var.read_value()[:-1] for var in self.codes]
      return self._replace(*_sorted_kept(table_ids, codes, keep))

  @_do_not_convert
  def load_entry_dumps(self,
                       file_pattern,
                       name: Optional[str] = None) -> tf.Operation:
    """Replaces the contents with monolith-format `EntryDump` shards.

    Args:
      file_pattern: A glob such as `"/ckpt/table-*-of-*"` (string tensor).
      name: Name scope.

    Returns:
      The op; it fails with NotFoundError when no file matches.
    """
    with tf.name_scope(name or "load_entry_dumps"):
      files = tf.io.matching_files(file_pattern)
      check = tf.debugging.assert_greater(
          tf.size(files), 0, message="load_entry_dumps: no file matches")
      with tf.control_dependencies([check]):
        files = tf.identity(files)
      records = tf.data.TFRecordDataset(files)
      all_records = records.batch(1 << 62).reduce(
          tf.zeros([0], tf.string), lambda acc, x: tf.concat([acc, x], 0))
      ids, nums = _decode_entry_dumps(all_records, self.dim_size)
      empty_ids = tf.zeros([0], tf.int64)
      kept_ids = tf.concat([empty_ids, ids], 0)
      codes, offset = [], 0
      for codec in self.codecs:
        codes.append(codec.encode(nums[:, offset:offset + codec.dim]))
        offset += codec.dim
      keep = _last_of_each_id(kept_ids)
      return self._replace(*_sorted_kept(kept_ids, codes, keep))


_DESCRIPTOR_SOURCE = None


def _descriptor_source() -> str:
  """`bytes://` + a FileDescriptorSet holding `EntryDump` and its deps."""
  global _DESCRIPTOR_SOURCE
  if _DESCRIPTOR_SOURCE is None:
    from google.protobuf import descriptor_pb2  # pylint: disable=g-import-not-at-top
    files = descriptor_pb2.FileDescriptorSet()
    seen = set()

    def add(fd):
      if fd.name in seen:
        return
      seen.add(fd.name)
      for dep in fd.dependencies:
        add(dep)
      proto = files.file.add()
      fd.CopyToProto(proto)

    add(embedding_hash_table_pb2.DESCRIPTOR)
    _DESCRIPTOR_SOURCE = "bytes://" + files.SerializeToString().decode(
        "latin-1")
  return _DESCRIPTOR_SOURCE


def _decode_entry_dumps(records: tf.Tensor, dim: int):
  """ids `[n]` and the first `dim` nums `[n, dim]` of serialized EntryDumps."""
  _, (ids, nums) = tf.io.decode_proto(
      records,
      "monolith.hash_table.EntryDump", ["id", "num"], [tf.int64, tf.float32],
      descriptor_source=_descriptor_source().encode("latin-1"))
  ids = tf.reshape(ids[:, :1], [-1]) if ids.shape.rank == 2 else ids
  nums = tf.pad(nums, [[0, 0], [0, tf.maximum(dim - tf.shape(nums)[1], 0)]])
  return ids, nums[:, :dim]


def _isin(values: tf.Tensor, candidates: tf.Tensor) -> tf.Tensor:
  """Whether each of `values` occurs in `candidates` (sort + searchsorted)."""
  sorted_c = tf.sort(candidates)
  pos = tf.searchsorted(sorted_c, values, side="left", out_type=tf.int64)
  pos = tf.minimum(pos, tf.maximum(tf.size(sorted_c, out_type=tf.int64) - 1, 0))
  padded = tf.concat([sorted_c, [_SENTINEL]], 0)
  return tf.equal(tf.gather(padded, pos), values)


def _last_of_each_id(ids: tf.Tensor) -> tf.Tensor:
  """bool mask: True at the last occurrence of each id."""
  n = tf.size(ids)
  unique, where = tf.unique(ids)
  last = tf.math.unsorted_segment_max(tf.range(n), where, tf.size(unique))
  marks = tf.scatter_nd(last[:, None], tf.ones_like(last), [n])
  return marks > 0


def _sorted_kept(ids: tf.Tensor, codes: Sequence[tf.Tensor], keep: tf.Tensor):
  """Keeps `keep`, sorts by id and appends the sentinel row."""
  ids = tf.boolean_mask(ids, keep)
  order = tf.argsort(ids)
  ids = tf.concat([tf.gather(ids, order), [_SENTINEL]], 0)
  out = []
  for c in codes:
    c = tf.gather(tf.boolean_mask(c, keep), order)
    out.append(tf.concat([c, tf.zeros([1, tf.shape(c)[1]], c.dtype)], 0))
  return ids, out


def _encode_numpy(codec: SegmentCodec, part: np.ndarray) -> np.ndarray:
  """`codec.encode` in NumPy (same rounding), usable while building a graph."""
  part = np.asarray(part, np.float32)
  if codec.member == "fp16":
    return part.astype(np.float16)
  if codec.member == "fixed_r8":
    step = np.float32(codec.r / 128.0)
    t = np.where(part >= 0, part + step / 2, part - step / 2)
    with np.errstate(invalid="ignore"):
      q = np.clip(t / step, -128.0, 127.0)
    q = np.where(np.isnan(q), 0.0, q)
    return np.trunc(q).astype(np.int8)
  if codec.member == "one_bit":
    positive = (np.float32(codec.amplitude) *
                np.tanh(np.float32(codec.init_scale) * part)) > 0
    return np.packbits(positive, axis=1,
                       bitorder="little").reshape([-1, codec.width])
  return part


def _sorted_with_sentinel(ids: np.ndarray, weights: np.ndarray):
  order = np.argsort(ids, kind="stable")
  ids = np.concatenate([ids[order], [_SENTINEL]])
  weights = np.concatenate(
      [weights[order],
       np.zeros([1, weights.shape[1]], np.float32)])
  return ids, weights


def _clean(name: str) -> str:
  cleaned = "".join(c if (c.isalnum() or c == "_") else "_" for c in name)
  return cleaned if cleaned and not cleaned[0].isdigit() else "t_" + cleaned
