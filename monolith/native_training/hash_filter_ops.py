"""Hash filters: admit a new id into a table only after enough occurrences.

monolith's occurrence-threshold rule (HASH_TABLE_SPEC Part B section 5.3):
the filter is consulted only for ids not yet in the table. For such an id of
slot `(id >> 48) & 0x7FFF` with threshold `thr` (from a
`SlotOccurrenceThresholdConfig`), `thr <= 0` admits it; otherwise
`prev = count before this occurrence` is read, the count is increased (by the
id's multiplicity when gradients are deduplicated, else by 1 per occurrence),
and the id is admitted iff `prev >= thr`. Counts saturate at 15, so
`thr >= 16` never admits.

Memory is bounded: counts live in a fixed-size array of `capacity` counters
(one int32 each, default 2^22 = 16 MiB) indexed by a 64-bit hash of the id.
Two ids that share a counter add up, so a filter may admit an id early
(over-admit), never late.

Example:

  config = embedding_hash_table_pb2.SlotOccurrenceThresholdConfig(
      default_occurrence_threshold=3)
  filters = create_hash_filters(1, True, config.SerializeToString())
  table = hash_table_ops.hash_table_from_config(instance, filters[0])
"""

from typing import List, Optional, Union

import tensorflow as tf

from monolith.native_training import hash_table_initializers
from monolith.native_training.runtime.hash_table import embedding_hash_table_pb2

MAX_COUNT = 15
NUM_SLOTS = 1 << 15
DEFAULT_CAPACITY = 1 << 22


def slot_of(ids: tf.Tensor) -> tf.Tensor:
  """monolith's fid-v2 slot of int64 ids: `(id >> 48) & 0x7FFF`."""
  return tf.bitwise.bitwise_and(tf.bitwise.right_shift(ids, 48),
                                tf.constant(0x7FFF, tf.int64))


class HashFilter(tf.Module):
  """An occurrence-threshold filter with bounded memory.

  Args:
    config: A `SlotOccurrenceThresholdConfig` (or its serialized bytes).
    capacity: Number of counters (>= 1).
    name: Name of the filter.

  Raises:
    ValueError: If `capacity < 1` or a slot is outside [0, 32768).
    TypeError: If `config` is neither bytes nor the message.
  """

  def __init__(self,
               config: Union[bytes,
                             embedding_hash_table_pb2.SlotOccurrenceThresholdConfig],
               capacity: int = DEFAULT_CAPACITY,
               name: str = "hash_filter"):
    super().__init__(name=name)
    self.config = _parse_config(config)
    if isinstance(capacity, bool) or not isinstance(capacity, int) or (
        capacity < 1):
      raise ValueError(
          f"HashFilter: capacity must be an int >= 1, got {capacity!r}")
    self.capacity = capacity
    thresholds = [self.config.default_occurrence_threshold] * NUM_SLOTS
    for entry in self.config.slot_occurrence_thresholds:
      if entry.slot >= NUM_SLOTS:
        raise ValueError(
            f"HashFilter: slot_occurrence_thresholds slot must be in "
            f"[0, {NUM_SLOTS}), got {entry.slot}")
      thresholds[entry.slot] = entry.occurrence_threshold
    self.enabled = any(t > 0 for t in thresholds)
    with tf.name_scope(name):
      self._thresholds = tf.constant(thresholds, tf.int64, name="thresholds")
      self.counts = tf.Variable(tf.zeros([capacity], tf.int32),
                                trainable=False,
                                name="counts")

  def _buckets(self, ids: tf.Tensor) -> tf.Tensor:
    hashed = hash_table_initializers.mix64(tf.bitcast(ids, tf.uint64))
    return tf.cast(hashed % tf.constant(self.capacity, tf.uint64), tf.int64)

  def admit(self, ids: tf.Tensor, counts: tf.Tensor) -> tf.Tensor:
    """Counts `counts` occurrences of the distinct new `ids`; says who passes.

    Args:
      ids: Distinct int64 ids not in the table.
      counts: int64 occurrences of each id in this write.

    Returns:
      bool `[len(ids)]`: admitted. The counters are updated once the result
      is available.
    """
    thresholds = tf.gather(self._thresholds, slot_of(ids))
    if not self.enabled:
      return tf.ones_like(ids, tf.bool)
    buckets = self._buckets(ids)
    prev = tf.cast(tf.gather(self.counts, buckets), tf.int64)
    unique_buckets, where = tf.unique(buckets)
    added = tf.math.unsorted_segment_sum(counts, where,
                                         tf.size(unique_buckets))
    before = tf.cast(tf.gather(self.counts, unique_buckets), tf.int64)
    after = tf.minimum(before + added, MAX_COUNT)
    with tf.control_dependencies([prev]):
      update = tf.raw_ops.ResourceScatterUpdate(resource=self.counts.handle,
                                                indices=unique_buckets,
                                                updates=tf.cast(
                                                    after, tf.int32))
    admitted = tf.logical_or(thresholds <= 0, prev >= thresholds)
    with tf.control_dependencies([update]):
      return tf.identity(admitted)


class DummyHashFilter:
  """A filter that admits every id (monolith's default)."""

  enabled = False

  def admit(self, ids: tf.Tensor, counts: tf.Tensor) -> tf.Tensor:
    """Returns all True."""
    del counts
    return tf.ones_like(ids, tf.bool)


def _parse_config(config) -> embedding_hash_table_pb2.SlotOccurrenceThresholdConfig:
  if isinstance(config, embedding_hash_table_pb2.SlotOccurrenceThresholdConfig):
    return config
  if isinstance(config, (bytes, bytearray)):
    parsed = embedding_hash_table_pb2.SlotOccurrenceThresholdConfig()
    parsed.ParseFromString(bytes(config))
    return parsed
  raise TypeError(
      "config must be a serialized SlotOccurrenceThresholdConfig (bytes) or "
      f"the message, got {type(config).__name__}")


def create_dummy_hash_filter(name_suffix: str = "") -> DummyHashFilter:
  """A filter that never filters (monolith's default)."""
  del name_suffix
  return DummyHashFilter()


def create_hash_filter(capacity: int = DEFAULT_CAPACITY,
                       config: bytes = b"",
                       name_suffix: str = "") -> HashFilter:
  """One occurrence-threshold filter (see `HashFilter`)."""
  return HashFilter(config, capacity=capacity, name="hash_filter" + name_suffix)


def create_hash_filters(ps_num: int,
                        enable_hash_filter: bool,
                        config: bytes = b"",
                        capacity: int = DEFAULT_CAPACITY,
                        **unused_monolith_kwargs
                       ) -> List[Union[HashFilter, DummyHashFilter]]:
  """One filter per parameter server (one in all when `ps_num == 0`).

  Args:
    ps_num: Number of parameter servers (0: local training).
    enable_hash_filter: False gives dummy filters that admit everything.
    config: A serialized `SlotOccurrenceThresholdConfig` (b"": threshold 0).
    capacity: Counters per filter (bounded memory; see `HashFilter`).
    **unused_monolith_kwargs: monolith's sliding-filter tuning arguments
      (`split_num`, `max_step`, ...), accepted and ignored.

  Returns:
    `max(ps_num, 1)` filters.

  Raises:
    ValueError: If `ps_num < 0`.
  """
  if isinstance(ps_num, bool) or not isinstance(ps_num, int) or ps_num < 0:
    raise ValueError(f"create_hash_filters: ps_num must be an int >= 0, "
                     f"got {ps_num!r}")
  count = max(ps_num, 1)
  if not enable_hash_filter:
    return [create_dummy_hash_filter() for _ in range(count)]
  return [
      HashFilter(config, capacity=capacity, name=f"hash_filter_{i}")
      for i in range(count)
  ]


def make_filter(hash_filter: Optional[object]):
  """The filter to use: `hash_filter`, or a dummy one when None."""
  return DummyHashFilter() if hash_filter is None else hash_filter
