"""Hash filters: admit a new id into a table only after enough occurrences.

monolith's occurrence-threshold rule (HASH_TABLE_SPEC Part B section 5.3).
The filter is consulted only for ids not yet in the table. For such an id of
slot `(id >> 48) & 0x7FFF` with threshold `thr` (from a
`SlotOccurrenceThresholdConfig`: `slot_occurrence_thresholds`, else
`default_occurrence_threshold`):

* `thr <= 0` admits the id and counts nothing;
* otherwise `prev`, the count before this write, is read, the count grows by
  the id's multiplicity (`apply_gradients(enable_dedup=True)`: one check per
  unique id) or by 1 per occurrence (every other write: `assign`,
  `assign_add` and non-deduplicated `apply_gradients` take one check per
  occurrence, in order), and the id is admitted iff `prev >= thr`;
* counts saturate at 15, so `thr >= 16` never admits.

A filtered id is skipped entirely: no insert, no update. Once an id is in the
table its count no longer matters.

Memory is bounded: the counts live in one fixed-size int32 variable of
`capacity` counters, indexed by a 64-bit hash of the id. Ids that share a
counter add up, so under collisions a filter may admit an id early
(over-admit), never late: a counter is always at least the count of every id
mapped to it (or 15). Updates are atomic `scatter_add`s, so concurrent writes
(two tables sharing one filter in a TF1 step) never lose counts.

The counters are a `tf.Variable` of a `tf.Module`: a table keeps its filter as
an attribute, so `tf.train.Checkpoint` (and `tf.compat.v1.train.Saver`, as a
global variable) saves and restores the counts with the table.

Example:

  config = embedding_hash_table_pb2.SlotOccurrenceThresholdConfig(
      default_occurrence_threshold=3)
  config.slot_occurrence_thresholds.add(slot=7, occurrence_threshold=0)
  filters = create_hash_filters(0, True, config.SerializeToString())
  table = hash_table_ops.hash_table_from_config(instance, filters[0])
  # An id of slot 7 is inserted on its first write; any other new id on the
  # write after three earlier occurrences were counted.
"""

import enum
from typing import List, Union

import tensorflow as tf
from google.protobuf import message as proto_message

from monolith.native_training import hash_table_initializers
from monolith.native_training.runtime.hash_table import embedding_hash_table_pb2

MAX_COUNT = 15
NUM_SLOTS = 1 << 15
DEFAULT_CAPACITY = 1 << 22
MAX_CAPACITY = 1 << 32
HASH_FILTER_SPLIT_NUM = 7

SlotOccurrenceThresholdConfig = (
    embedding_hash_table_pb2.SlotOccurrenceThresholdConfig)
ConfigLike = Union[bytes, bytearray, SlotOccurrenceThresholdConfig]


class FilterType(enum.Enum):
  """monolith's filter kinds (`create_hash_filters(filter_type=...)`)."""
  SLIDING_HASH_FILTER = "sliding_hash_filter"
  PROBABILISTIC_FILTER = "probabilistic_filter"


def slot_of(ids: tf.Tensor) -> tf.Tensor:
  """monolith's fid-v2 slot of int64 ids: `(id >> 48) & 0x7FFF`."""
  return tf.bitwise.bitwise_and(tf.bitwise.right_shift(ids, 48),
                                tf.constant(0x7FFF, tf.int64))


def parse_config(config: ConfigLike) -> SlotOccurrenceThresholdConfig:
  """A validated `SlotOccurrenceThresholdConfig` from bytes or the message.

  Args:
    config: The message, or its serialization (b"": every threshold 0).

  Returns:
    The message (a copy when `config` is bytes).

  Raises:
    TypeError: `config` is neither bytes nor a `SlotOccurrenceThresholdConfig`.
    ValueError: `config` bytes do not parse, or a slot is outside
      [0, 32768).
  """
  if isinstance(config, SlotOccurrenceThresholdConfig):
    parsed = config
  elif isinstance(config, (bytes, bytearray)):
    parsed = SlotOccurrenceThresholdConfig()
    try:
      parsed.ParseFromString(bytes(config))
    except proto_message.DecodeError as e:
      raise ValueError(
          "config must be a serialized SlotOccurrenceThresholdConfig; "
          f"parsing {len(config)} bytes failed: {e}") from e
  else:
    raise TypeError(
        "config must be a serialized SlotOccurrenceThresholdConfig (bytes) or "
        f"the message, got {type(config).__name__}")
  for item in parsed.slot_occurrence_thresholds:
    if item.slot >= NUM_SLOTS:
      raise ValueError(
          "config.slot_occurrence_thresholds: slot must be in "
          f"[0, {NUM_SLOTS}) (fid v2 slots are 15 bits), got {item.slot}")
  return parsed


def _check_capacity(capacity, where: str) -> int:
  if isinstance(capacity, bool) or not isinstance(
      capacity, int) or not (1 <= capacity <= MAX_CAPACITY):
    raise ValueError(f"{where}: capacity must be an int in [1, 2**32], got "
                     f"{capacity!r}")
  return capacity


class HashFilter(tf.Module):
  """An occurrence-threshold filter with bounded memory.

  `capacity` int32 counters (4 bytes each; the default 2^22 counters take
  16 MiB) shared by all ids through a hash. Give more counters when many
  distinct new ids arrive between admissions: collisions only make the filter
  admit earlier than the exact rule.

  Args:
    config: A `SlotOccurrenceThresholdConfig`, or its serialized bytes.
    capacity: Number of counters, in [1, 2**32].
    name: Name of the filter (and its variable scope).

  Raises:
    TypeError: `config` is neither bytes nor the message.
    ValueError: `capacity` is out of range, the config does not parse, or a
      slot is outside [0, 32768).
  """

  def __init__(self,
               config: ConfigLike,
               capacity: int = DEFAULT_CAPACITY,
               name: str = "hash_filter"):
    super().__init__(name=name)
    self.config = parse_config(config)
    self.capacity = _check_capacity(capacity, f"HashFilter {name!r}")
    # Thresholds above 16 behave like 16 (never admitted); clamping keeps the
    # table int32.
    default = min(self.config.default_occurrence_threshold, MAX_COUNT + 1)
    overrides = {
        item.slot: min(item.occurrence_threshold, MAX_COUNT + 1)
        for item in self.config.slot_occurrence_thresholds
    }
    self.enabled = default > 0 or any(t > 0 for t in overrides.values())
    self._default = default
    self._thresholds = None
    with self.name_scope:
      if overrides:
        table = [default] * NUM_SLOTS
        for slot, threshold in overrides.items():
          table[slot] = threshold
        self._thresholds = tf.constant(table, tf.int32, name="thresholds")
      self.counts = tf.Variable(tf.zeros([capacity], tf.int32),
                                trainable=False,
                                name="counts")

  def thresholds_of(self, ids: tf.Tensor) -> tf.Tensor:
    """The int32 threshold of each id's slot (clamped to 16)."""
    if self._thresholds is None:
      return tf.fill(tf.shape(ids), tf.constant(self._default, tf.int32))
    return tf.gather(self._thresholds, slot_of(ids))

  def buckets(self, ids: tf.Tensor) -> tf.Tensor:
    """The counter index of each int64 id, in [0, capacity)."""
    hashed = hash_table_initializers.mix64(tf.bitcast(ids, tf.uint64))
    # Multiply-shift range reduction of the top 32 hash bits (no modulo).
    high = tf.bitwise.right_shift(hashed, tf.constant(32, tf.uint64))
    scaled = high * tf.constant(self.capacity, tf.uint64)
    return tf.cast(tf.bitwise.right_shift(scaled, tf.constant(32, tf.uint64)),
                   tf.int64)

  def read_counts(self, ids: tf.Tensor) -> tf.Tensor:
    """The (possibly over-estimated) int32 count of each id, at most 15."""
    return tf.minimum(tf.gather(self.counts, self.buckets(ids)), MAX_COUNT)

  def admit(self, ids: tf.Tensor, counts: tf.Tensor, name=None) -> tf.Tensor:
    """Counts the occurrences of new ids and says which ones pass.

    Args:
      ids: Distinct int64 ids `[n]` not in the table.
      counts: Integer occurrences of each id in this check `[n]`.
      name: Name scope.

    Returns:
      bool `[n]`: admitted (`thr <= 0` or count before this check `>= thr`).
      The counters have been updated once the result is available.
    """
    with tf.name_scope(name or "admit"):
      ids = tf.convert_to_tensor(ids, tf.int64)
      if not self.enabled:
        return tf.ones_like(ids, tf.bool)
      thresholds = self.thresholds_of(ids)
      counted = thresholds > 0
      buckets = self.buckets(ids)
      prev = tf.minimum(tf.gather(self.counts, buckets), MAX_COUNT)
      added = tf.where(counted, tf.cast(counts, tf.int32),
                       tf.zeros_like(thresholds))
      unique_buckets, where = tf.unique(buckets, out_idx=tf.int64)
      total = tf.math.unsorted_segment_sum(added, where,
                                           tf.size(unique_buckets))
      before = tf.gather(self.counts, unique_buckets)
      # Saturating add as a delta, so concurrent adds keep every count.
      delta = tf.maximum(
          tf.minimum(before + total, MAX_COUNT) - tf.minimum(before, MAX_COUNT),
          0)
      with tf.control_dependencies([prev]):
        update = tf.raw_ops.ResourceScatterAdd(resource=self.counts.handle,
                                               indices=unique_buckets,
                                               updates=delta)
      admitted = tf.logical_or(tf.logical_not(counted), prev >= thresholds)
      with tf.control_dependencies([update]):
        return tf.identity(admitted)


class DummyHashFilter:
  """A filter that admits every id (monolith's default); holds no state."""

  enabled = False

  def admit(self, ids: tf.Tensor, counts: tf.Tensor, name=None) -> tf.Tensor:
    """Returns all True."""
    del counts, name
    return tf.ones_like(tf.convert_to_tensor(ids, tf.int64), tf.bool)


def create_dummy_hash_filter(name_suffix: str = "") -> DummyHashFilter:
  """A filter that never filters (monolith's default).

  Args:
    name_suffix: Accepted for compatibility.

  Returns:
    A `DummyHashFilter`.
  """
  del name_suffix
  return DummyHashFilter()


def create_hash_filter(capacity: int = DEFAULT_CAPACITY,
                       split_num: int = HASH_FILTER_SPLIT_NUM,
                       config: ConfigLike = b"",
                       name_suffix: str = "") -> HashFilter:
  """One occurrence-threshold filter (monolith's argument order).

  Args:
    capacity: Number of counters (see `HashFilter`).
    split_num: monolith's sliding-filter split count; accepted and ignored.
    config: A (serialized) `SlotOccurrenceThresholdConfig`.
    name_suffix: Appended to the name `hash_filter`.

  Returns:
    A `HashFilter`.

  Raises:
    TypeError / ValueError: see `HashFilter`.
  """
  del split_num
  return HashFilter(config, capacity=capacity, name="hash_filter" + name_suffix)


def create_hash_filters(
    ps_num: int,
    enable_hash_filter: bool,
    config: ConfigLike = b"",
    filter_capacity: int = DEFAULT_CAPACITY,
    filter_split_num: int = HASH_FILTER_SPLIT_NUM,
    filter_equal_probability: bool = False,
    filter_type: FilterType = FilterType.SLIDING_HASH_FILTER
) -> List[Union[HashFilter, DummyHashFilter]]:
  """One filter per parameter server (one in all when `ps_num == 0`).

  Args:
    ps_num: Number of parameter servers (0: local training).
    enable_hash_filter: False gives dummy filters that admit everything.
    config: A serialized `SlotOccurrenceThresholdConfig` (b"": threshold 0,
      i.e. admit everything).
    filter_capacity: Counters per filter (bounded memory; see `HashFilter`).
      monolith's default is 3e8; here it is 2^22.
    filter_split_num: monolith's sliding-filter tuning; accepted and ignored.
    filter_equal_probability: Only for the probabilistic filter; ignored.
    filter_type: `FilterType.SLIDING_HASH_FILTER` (or its name); every
      counting filter here is exact up to hash collisions.

  Returns:
    `max(ps_num, 1)` filters, `DummyHashFilter`s when not enabled.

  Raises:
    ValueError: `ps_num` is not an int >= 0, `filter_type` is not supported,
      or the config / capacity is invalid (see `HashFilter`).
    TypeError: `config` is neither bytes nor the message.
  """
  del filter_split_num, filter_equal_probability
  if isinstance(ps_num, bool) or not isinstance(ps_num, int) or ps_num < 0:
    raise ValueError(f"create_hash_filters: ps_num must be an int >= 0, "
                     f"got {ps_num!r}")
  count = max(ps_num, 1)
  if not enable_hash_filter:
    return [create_dummy_hash_filter() for _ in range(count)]
  kind = filter_type
  if isinstance(kind, str):
    kind = {t.name: t for t in FilterType}.get(kind.upper(), kind)
  if kind != FilterType.SLIDING_HASH_FILTER:
    raise ValueError(
        f"create_hash_filters: filter_type must be "
        f"FilterType.SLIDING_HASH_FILTER (the counting filter), got "
        f"{filter_type!r}; PROBABILISTIC_FILTER is not implemented")
  config = parse_config(config)
  _check_capacity(filter_capacity, "create_hash_filters")
  return [
      HashFilter(config, capacity=filter_capacity, name=f"hash_filter_{i}")
      for i in range(count)
  ]


def make_filter(hash_filter) -> Union[HashFilter, DummyHashFilter]:
  """The filter a table uses: `hash_filter`, or a dummy one when None.

  Raises:
    TypeError: `hash_filter` has no `admit` method.
  """
  if hash_filter is None:
    return DummyHashFilter()
  if not callable(getattr(hash_filter, "admit", None)):
    raise TypeError("hash_filter must be a hash_filter_ops filter (with an "
                    f"admit method) or None, got {type(hash_filter).__name__}")
  return hash_filter
