"""Storage of a dynamic hash table: an id -> row index plus growable columns.

`EntryStorage` keeps

* `index`: a `tf.lookup.experimental.DenseHashTable` mapping an int64 id to
  its int64 row (`-1` when missing). It reserves two keys, `EMPTY_KEY` and
  `DELETED_KEY` (the two smallest int64 values), which ids may not take;
* `num_rows`: an int64 scalar variable, the number of rows in use;
* one `tf.Variable` of shape `[capacity + 1, width]` per column (a
  segment's weights, an optimizer slot, the timestamps), all with the same
  capacity. Row `r` of the table is row `r + 1` of each variable: row 0 of
  every variable stays zero, so `gather` of row `-1` (a missing id) gives
  zeros with no masking, and growing is one gather. Rows `[0, num_rows)` are
  in use; the rest are zero padding.

Columns grow on demand by `grow_factor` (a `tf.cond` that reassigns each
variable with a zero-padded copy), in graph and eager mode alike. `compact`
keeps a subset of the entries and shrinks the columns to fit, which is how
eviction frees memory. Every method returns ops/tensors that carry their
control dependencies, so they can be chained in a TF1 graph.

Everything here uses stock TensorFlow ops only.
"""

import dataclasses
from typing import Dict, List, Sequence, Tuple

import tensorflow as tf

EMPTY_KEY = -(1 << 63)
DELETED_KEY = -(1 << 63) + 1
RESERVED_KEYS = (EMPTY_KEY, DELETED_KEY)
_MIN_CAPACITY = 16
# TF >= 2.12 (older versions copy on every grow instead).
_HAS_DISABLE_COPY_ON_READ = hasattr(tf.raw_ops, "DisableCopyOnRead")


@dataclasses.dataclass(frozen=True)
class Column:
  """One per-entry array of the table.

  Attributes:
    name: Unique name (used for the variable).
    width: Values per entry (0 for a rank-1 column such as timestamps).
    dtype: Element type.
  """
  name: str
  width: int
  dtype: tf.DType = tf.float32

  def shape(self, rows) -> List:
    """The shape of `rows` rows of this column."""
    return [rows] if self.width == 0 else [rows, self.width]


class EntryStorage(tf.Module):
  """Id -> row index and the growable per-entry columns of one table.

  Args:
    columns: The columns, in a fixed order.
    initial_capacity: Rows reserved at creation (at least 16).
    grow_factor: Capacity multiplier when full (> 1).
    name: Name scope of the variables.
  """

  def __init__(self,
               columns: Sequence[Column],
               initial_capacity: int = _MIN_CAPACITY,
               grow_factor: float = 1.5,
               name: str = "storage"):
    super().__init__(name=name)
    self.columns = tuple(columns)
    self.grow_factor = float(grow_factor)
    capacity = max(int(initial_capacity), _MIN_CAPACITY)
    with self.name_scope:
      # A TF1 Saver keys a DenseHashTable by its `name`: a graph-unique one
      # keeps two tables' indexes from overwriting each other on save.
      index_name = "index"
      if not tf.executing_eagerly():
        index_name = tf.compat.v1.get_default_graph().unique_name(
            "index", mark_as_used=False)
      self.index = tf.lookup.experimental.DenseHashTable(
          key_dtype=tf.int64,
          value_dtype=tf.int64,
          default_value=-1,
          empty_key=EMPTY_KEY,
          deleted_key=DELETED_KEY,
          name=index_name)
      self.num_rows = tf.Variable(tf.constant(0, tf.int64),
                                  trainable=False,
                                  name="num_rows")
      self.vars: Dict[str, tf.Variable] = {}
      for col in self.columns:
        self.vars[col.name] = tf.Variable(tf.zeros(col.shape(capacity + 1),
                                                   col.dtype),
                                          shape=tf.TensorShape(col.shape(None)),
                                          trainable=False,
                                          name=col.name)

  @property
  def variables_in_order(self) -> List[tf.Variable]:
    """The column variables in column order."""
    return [self.vars[c.name] for c in self.columns]

  def capacity(self) -> tf.Tensor:
    """Rows currently allocated (int64)."""
    first = self.vars[self.columns[0].name]
    # VariableShape reads no values: tf.shape(var) would read (and, once a
    # sparse op put the variable in copy-on-read mode, copy) the column.
    shape = tf.raw_ops.VariableShape(input=first.handle, out_type=tf.int64)
    return shape[0] - 1  # row 0 of the variables is the zero row

  def find(self, ids: tf.Tensor) -> tf.Tensor:
    """Rows of `ids` (int64), `-1` for missing ids."""
    return self.index.lookup(ids)

  def gather(self, name: str, rows: tf.Tensor) -> tf.Tensor:
    """Rows `rows` of column `name`; row `-1` gives zeros."""
    var = self.vars[name]
    return tf.raw_ops.ResourceGather(resource=var.handle,
                                     indices=rows + 1,
                                     dtype=var.dtype)

  def scatter(self, name: str, rows: tf.Tensor,
              values: tf.Tensor) -> tf.Operation:
    """Writes `values` into the distinct rows `rows` of column `name`."""
    var = self.vars[name]
    return tf.raw_ops.ResourceScatterUpdate(resource=var.handle,
                                            indices=rows + 1,
                                            updates=tf.cast(values, var.dtype))

  def _resize(self, new_capacity: tf.Tensor, keep_rows=None) -> tf.Operation:
    """Reassigns every column with `new_capacity` rows.

    Args:
      new_capacity: int64 scalar.
      keep_rows: None to keep rows [0, min(old, new)) in place; else the old
        rows to move to rows [0, len(keep_rows)).
    """
    # One gather per column builds the new variable: kept rows first, then
    # copies of the zero row 0 (no read copy + pad, which a variable in
    # copy-on-read mode would need).
    if keep_rows is None:
      old_capacity = self.capacity()
      rows = tf.range(new_capacity, dtype=tf.int64)
      rows = tf.where(rows < old_capacity, rows, -1)
    else:
      pad = new_capacity - tf.size(keep_rows, out_type=tf.int64)
      rows = tf.concat([
          tf.cast(keep_rows, tf.int64),
          tf.fill(tf.reshape(pad, [1]), tf.constant(-1, tf.int64))
      ], 0)
    rows = tf.concat([tf.constant([-1], tf.int64), rows], 0)  # zero row 0
    ops = []
    for col in self.columns:
      var = self.vars[col.name]
      value = self.gather(col.name, rows)
      ready = [value]
      if _HAS_DISABLE_COPY_ON_READ:
        # A variable that sparse ops put in copy-on-read mode copies every
        # assigned value; leaving that mode first lets the assignment take
        # the gathered buffer as is (the next sparse op re-enters the mode
        # without a copy). Halves the cost of a grow.
        with tf.control_dependencies([value]):
          ready = [tf.raw_ops.DisableCopyOnRead(resource=var.handle)]
      with tf.control_dependencies(ready):
        ops.append(var.assign(value, read_value=False))
    return tf.group(ops)

  def ensure_capacity(self, needed: tf.Tensor) -> tf.Tensor:
    """Grows the columns so that `needed` rows fit.

    Returns:
      `needed` (int64), available once any growth has happened.
    """
    needed = tf.convert_to_tensor(needed, tf.int64)
    capacity = self.capacity()

    def grow():
      grown = tf.cast(
          tf.math.ceil(tf.cast(capacity, tf.float64) * self.grow_factor),
          tf.int64)
      new_capacity = tf.maximum(needed, grown)
      with tf.control_dependencies([self._resize(new_capacity)]):
        return tf.identity(needed)

    return tf.cond(needed > capacity, grow, lambda: tf.identity(needed))

  def insert(self, new_ids: tf.Tensor) -> tf.Tensor:
    """Gives each of the distinct, absent `new_ids` a fresh row.

    Grows the columns when needed. The new rows' column values are whatever
    was there (zeros); the caller initializes them.

    Returns:
      The new rows (int64), available once the index knows them.
    """
    count = tf.size(new_ids, out_type=tf.int64)
    start = self.num_rows.read_value()
    needed = self.ensure_capacity(start + count)
    with tf.control_dependencies([needed]):
      rows = tf.range(start, start + count, dtype=tf.int64)
      ops = [
          self.index.insert(new_ids, rows),
          self.num_rows.assign(start + count, read_value=False)
      ]
    with tf.control_dependencies(ops):
      return tf.identity(rows)

  def export(self) -> Tuple[tf.Tensor, tf.Tensor]:
    """All entries as `(ids, rows)`, in unspecified order."""
    keys, rows = self.index.export()
    keys, rows = tf.reshape(keys, [-1]), tf.reshape(rows, [-1])
    valid = tf.logical_and(tf.not_equal(keys, EMPTY_KEY),
                           tf.not_equal(keys, DELETED_KEY))
    return tf.boolean_mask(keys, valid), tf.boolean_mask(rows, valid)

  def size(self) -> tf.Tensor:
    """Number of entries (int64)."""
    return self.index.size()

  def compact(self, ids: tf.Tensor, rows: tf.Tensor,
              drop_ids: tf.Tensor) -> tf.Operation:
    """Keeps only entries `ids` (at `rows`) and erases `drop_ids`.

    The kept entries move to rows `[0, len(ids))` and the columns shrink to
    `max(len(ids) * grow_factor, 16)` rows, freeing the dropped rows' memory.
    """
    count = tf.size(ids, out_type=tf.int64)
    new_capacity = tf.maximum(
        tf.cast(tf.math.ceil(tf.cast(count, tf.float64) * self.grow_factor),
                tf.int64), _MIN_CAPACITY)
    resized = self._resize(new_capacity, keep_rows=rows)
    with tf.control_dependencies([resized]):
      # Erase the kept ids too: DenseHashTable.insert stops at the first
      # deleted bucket of a probe chain, so re-inserting a present key after
      # an erase can leave a stale duplicate further down the chain.
      erased = self.index.erase(tf.concat([ids, drop_ids], 0))
    with tf.control_dependencies([erased]):
      new_rows = tf.range(count, dtype=tf.int64)
      inserted = self.index.insert(ids, new_rows)
      counted = self.num_rows.assign(count, read_value=False)
    return tf.group(inserted, counted)

  def replace_all(self, ids: tf.Tensor,
                  values: Dict[str, tf.Tensor]) -> tf.Operation:
    """Clears the table, then stores `ids` with their column `values`.

    Args:
      ids: Distinct int64 ids.
      values: Column name -> `[len(ids), width]` values; missing columns
        are zero.
    """
    count = tf.size(ids, out_type=tf.int64)
    old_ids, _ = self.export()
    erased = self.index.erase(old_ids)
    capacity = tf.maximum(count, _MIN_CAPACITY)
    assigns = []
    for col in self.columns:
      value = values.get(col.name)
      if value is None:
        value = tf.zeros(col.shape(count), col.dtype)
      pad = tf.zeros(col.shape(capacity - count), col.dtype)
      zero_row = tf.zeros(col.shape(1), col.dtype)
      assigns.append(self.vars[col.name].assign(tf.concat(
          [zero_row, tf.cast(value, col.dtype), pad], 0),
                                                read_value=False))
    with tf.control_dependencies([erased] + assigns):
      inserted = self.index.insert(ids, tf.range(count, dtype=tf.int64))
      counted = self.num_rows.assign(count, read_value=False)
    return tf.group(inserted, counted)
