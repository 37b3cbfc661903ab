"""Periodic feature eviction for hash tables: a session hook and a callback.

A `HashTable` stamps every written entry with the write's `req_time`
(seconds, default 0) and remembers the largest `req_time` seen
(`max_update_ts`). An entry is *expired* when

    max_update_ts - entry_timestamp >= expire_days(slot) * 86400

with `expire_days` from the table's `SlotExpireTimeConfig`
(`slot_expire_times` for the id's slot `(id >> 48) & 0x7FFF`, else
`default_expire_time`; HASH_TABLE_SPEC Part B sections 5.5-5.6). Expired
entries are always left out of `save`; `HashTable.evict()` removes them from
the live table and frees their rows.

This module runs `evict()` on a wall-clock schedule, as monolith's background
thread does for tables whose config sets `enable_feature_eviction` (which
`entry.CuckooHashTableConfig(feature_evict_every_n_hours=n)` does for n > 0):
every `feature_evict_every_n_hours` hours, the first time n hours after the
schedule was created (monolith: after the table was created). Tables without
`enable_feature_eviction` are left alone. Evictions of one table are at least
10 seconds apart (monolith's thread wakes every 10 s), so a config with
`feature_evict_every_n_hours = 0` does not evict on every step.

* `EvictionScheduler`: the schedule itself; `maybe_evict()` for custom
  eager training loops.
* `EvictionHook`: a `tf.compat.v1.train.SessionRunHook` for TF1 graphs
  (`MonitoredSession`, `Estimator`); it builds the evict ops in `begin()` and
  runs the due ones after a step.
* `EvictionCallback`: a Keras callback; it evicts after a training batch.

The clock is injectable (`clock=`), which is how the tests drive it.

Example:

  cuckoo = entry.CuckooHashTableConfig(feature_evict_every_n_hours=24)
  table_config = entry.build_embedding_hash_table_config(...)  # uses cuckoo
  table = hash_table_ops.hash_table_from_config(instance)
  # TF1 graph:
  train_op = table.apply_gradients(ids, grads, step, req_time=ts).as_op()
  hook = hash_table_eviction.EvictionHook([table])
  with tf.compat.v1.train.MonitoredTrainingSession(hooks=[hook]) as sess:
    while not sess.should_stop():
      sess.run(train_op)
  # Keras:
  model.fit(dataset, callbacks=[hash_table_eviction.EvictionCallback([table])])
  # Custom eager loop:
  scheduler = hash_table_eviction.EvictionScheduler([table])
  for batch in dataset:
    train_step(batch)
    scheduler.maybe_evict()
"""

import dataclasses
import time
from typing import Callable, List, Optional, Sequence

from absl import logging
import tensorflow as tf

SECONDS_PER_HOUR = 3600.0
MIN_INTERVAL_SECONDS = 10.0

Clock = Callable[[], float]


def eviction_enabled(table) -> bool:
  """Whether `table`'s config sets `enable_feature_eviction`."""
  return bool(table.config.table_config.enable_feature_eviction)


def eviction_period_hours(table) -> float:
  """`feature_evict_every_n_hours` of `table`'s config."""
  return float(table.config.table_config.feature_evict_every_n_hours)


@dataclasses.dataclass
class _Entry:
  table: object
  period_seconds: float
  next_due: float


def _as_list(tables) -> List:
  if tables is None:
    raise ValueError("tables must be a HashTable or a sequence of them, got "
                     "None")
  if hasattr(tables, "evict"):
    return [tables]
  tables = list(tables)
  for i, table in enumerate(tables):
    if not (callable(getattr(table, "evict", None)) and
            hasattr(table, "config")):
      raise TypeError(f"tables[{i}] must be a hash_table_ops.HashTable (with "
                      f"evict() and config), got {type(table).__name__}")
  return tables


class EvictionScheduler:
  """When each feature-evicting table is due for `evict()`.

  Args:
    tables: A `HashTable` or an iterable of them. Only tables whose config
      sets `enable_feature_eviction` are scheduled; the others are ignored.
    every_n_hours: Eviction period in hours for every scheduled table (> 0);
      None uses each table's `feature_evict_every_n_hours`.
    clock: Returns the wall-clock time in seconds (default `time.time`).
    min_interval_seconds: Shortest time between two evictions of a table.

  Raises:
    TypeError: A table has no `evict()` / `config`.
    ValueError: `every_n_hours` is not a number > 0, or `min_interval_seconds`
      is negative.
  """

  def __init__(self,
               tables,
               every_n_hours: Optional[float] = None,
               clock: Clock = time.time,
               min_interval_seconds: float = MIN_INTERVAL_SECONDS):
    if every_n_hours is not None and (isinstance(every_n_hours, bool) or
                                      not isinstance(every_n_hours,
                                                     (int, float)) or
                                      not every_n_hours > 0):
      raise ValueError("every_n_hours must be None or a number > 0, got "
                       f"{every_n_hours!r}")
    if not min_interval_seconds >= 0:
      raise ValueError("min_interval_seconds must be >= 0, got "
                       f"{min_interval_seconds!r}")
    if not callable(clock):
      raise TypeError(f"clock must be callable, got {type(clock).__name__}")
    self._clock = clock
    start = float(clock())
    self._entries: List[_Entry] = []
    for table in _as_list(tables):
      if not eviction_enabled(table):
        logging.info(
            "EvictionScheduler: table %s does not set "
            "enable_feature_eviction; not evicting it",
            getattr(table, "name", table))
        continue
      hours = (float(every_n_hours)
               if every_n_hours is not None else eviction_period_hours(table))
      period = max(hours * SECONDS_PER_HOUR, float(min_interval_seconds))
      self._entries.append(_Entry(table, period, start + period))

  @property
  def tables(self) -> List:
    """The scheduled tables (those with `enable_feature_eviction`)."""
    return [e.table for e in self._entries]

  @property
  def period_seconds(self) -> List[float]:
    """Each scheduled table's eviction period in seconds."""
    return [e.period_seconds for e in self._entries]

  def due(self, now: Optional[float] = None) -> List[int]:
    """Indices (into `tables`) of the tables due now; marks them evicted.

    Args:
      now: The time; default `clock()`.

    Returns:
      The due indices. Each is next due one period after `now`.
    """
    now = float(self._clock()) if now is None else float(now)
    indices = []
    for i, e in enumerate(self._entries):
      if now >= e.next_due:
        indices.append(i)
        e.next_due = now + e.period_seconds
    return indices

  def maybe_evict(self) -> List:
    """Eagerly evicts the tables that are due.

    Returns:
      The tables evicted by this call.

    Raises:
      RuntimeError: Called while building a graph (use `EvictionHook`).
    """
    if not tf.executing_eagerly():
      raise RuntimeError("EvictionScheduler.maybe_evict runs eagerly; in a "
                         "TF1 graph use EvictionHook")
    evicted = []
    for i in self.due():
      table = self._entries[i].table
      table.evict()
      evicted.append(table)
      logging.info("Evicted expired entries of table %s",
                   getattr(table, "name", table))
    return evicted


class EvictionHook(tf.compat.v1.train.SessionRunHook):
  """Runs `evict()` on feature-evicting tables every n hours (TF1 graphs).

  The evict ops are built in `begin()` (the graph is finalized afterwards);
  after each `session.run` the ops of the tables that are due run in the same
  session.

  Args:
    tables: A `HashTable` or an iterable of them (see `EvictionScheduler`),
      as built by `hash_table_from_config` (not a table a write returned).
    every_n_hours: Period for every table (> 0); None: each table's
      `feature_evict_every_n_hours`.
    clock: Wall clock in seconds (default `time.time`).
    min_interval_seconds: Shortest time between two evictions of a table.

  Raises:
    TypeError / ValueError: see `EvictionScheduler`.
  """

  def __init__(self,
               tables,
               every_n_hours: Optional[float] = None,
               clock: Clock = time.time,
               min_interval_seconds: float = MIN_INTERVAL_SECONDS):
    self._scheduler = EvictionScheduler(tables, every_n_hours, clock,
                                        min_interval_seconds)
    self._evict_ops: Sequence[tf.Operation] = ()

  @property
  def scheduler(self) -> EvictionScheduler:
    """The schedule this hook follows."""
    return self._scheduler

  def begin(self):
    """Builds one evict op per scheduled table.

    Raises:
      ValueError: A table was chained after a write (its evict op would run
        that write again); pass the table `hash_table_from_config` built.
    """
    for table in self._scheduler.tables:
      if getattr(table, "_deps", None):
        raise ValueError(
            f"EvictionHook: table {getattr(table, 'name', table)!r} is "
            "chained after a write; pass the table as built by "
            "hash_table_from_config, not the one a write returned")
    with tf.name_scope("eviction_hook"):
      self._evict_ops = [
          table.evict().as_op() for table in self._scheduler.tables
      ]

  def after_run(self, run_context, run_values):
    """Runs the evict ops of the tables that are due."""
    del run_values
    due = self._scheduler.due()
    if due:
      run_context.session.run([self._evict_ops[i] for i in due])
      for i in due:
        logging.info("Evicted expired entries of table %s",
                     getattr(self._scheduler.tables[i], "name", i))


class EvictionCallback(tf.keras.callbacks.Callback):
  """Runs `evict()` on feature-evicting tables every n hours (Keras).

  Checks the clock after every training batch and evicts the due tables
  eagerly (the tables' variables are shared with the compiled train step).

  Args:
    tables: A `HashTable` or an iterable of them (see `EvictionScheduler`).
    every_n_hours: Period for every table (> 0); None: each table's
      `feature_evict_every_n_hours`.
    clock: Wall clock in seconds (default `time.time`).
    min_interval_seconds: Shortest time between two evictions of a table.

  Raises:
    TypeError / ValueError: see `EvictionScheduler`.
  """

  def __init__(self,
               tables,
               every_n_hours: Optional[float] = None,
               clock: Clock = time.time,
               min_interval_seconds: float = MIN_INTERVAL_SECONDS):
    super().__init__()
    self._scheduler = EvictionScheduler(tables, every_n_hours, clock,
                                        min_interval_seconds)

  @property
  def scheduler(self) -> EvictionScheduler:
    """The schedule this callback follows."""
    return self._scheduler

  def on_train_batch_end(self, batch, logs=None):
    """Evicts the tables that are due."""
    del batch, logs
    self._scheduler.maybe_evict()
