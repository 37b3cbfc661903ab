"""Embedding combiners: pool the embeddings of a ragged batch of feature ids.

A drop-in re-implementation of `monolith.native_training.embedding_combiners`
on stock TensorFlow ops (no custom kernels). `key` is a `tf.RaggedTensor` of
ids with `ragged_rank == 1`; `embedding` is a `[num_ids, dim]` tensor whose row
`i` belongs to `key.values[i]`.

Example:

  key = tf.RaggedTensor.from_row_lengths([7, 8, 9], [1, 2])
  emb = [[1.0], [2.0], [3.0]]
  ReduceSum().combine(key, emb)   # [[1.], [5.]]
  FirstN(2).combine(key, emb)     # [[[1.], [0.]], [[2.], [3.]]]

Every combiner returns exactly `key.nrows()` rows; empty rows (trailing ones
too) give zeros, never NaN. float16/bfloat16 embeddings are accumulated in
float32 and cast back. Gradients w.r.t. `embedding` are exact.

Formulations and TF ops. Three contexts are told apart when the graph is
built: plain CPU (no GPU visible), GPU visible, and XLA compilation
(`tf.function(jit_compile=True)`, detected by
`monolith.native_training._tf_compat.in_xla_context`). No formulation uses an
op without a kernel on the device it targets: `SegmentSum`,
`RaggedTensorToTensor` and `RaggedTensorToSparse` have no XLA kernel, the two
ragged ones no GPU kernel either.

* Row id / position of every id (never `RaggedTensor.value_rowids()`, which
  builds a `[nrows, longest row]` mask -- milliseconds on skewed batches):
  - CPU: `RaggedTensorToSparse` (one O(num_ids) pass over the row splits)
    + `StridedSlice`.
  - GPU, XLA: `UnsortedSegmentSum` of ones at `row_splits[1:-1]` + `Cumsum`
    (a cumulative histogram of the row boundaries); positions
    `Range - GatherV2(row_splits, row_ids)`.
* `ReduceSum`:
  - CPU: two `SegmentSum`s over the two halves of the rows (the CPU kernel is
    single-threaded; the halves run in parallel on the inter-op pool), each
    `Pad`ded for trailing empty rows, `ConcatV2`; leading-dim `StridedSlice`s
    of the embedding (no copy). Custom gradient: one `GatherV2` of the output
    gradient at the row ids.
  - GPU: one `SegmentSum` + `Pad`; gradient `GatherV2` + `Slice`
    (TensorFlow's own).
  - XLA: `UnsortedSegmentSum(num_segments=nrows)` with a custom `GatherV2`
    gradient (the built-in one adds a `Select` and a zero fill over the whole
    embedding).
* `ReduceMean`, `ReduceSqrtN`: as `ReduceSum`, then `Mul` by
  `1 / max(row length, 1)` resp. its square root (`Sub`, `Cast`, `Maximum`,
  `Reciprocal` / `Rsqrt`).
* `weights`: `Mul` of the embedding by the weights, the (squared) weights summed
  per row as above, `Sqrt`, `DivNoNan`.
* `FirstN`:
  - CPU: `RaggedTensorToTensor` (shape `[nrows, n, dim]`, truncating); custom
    gradient: `GatherV2` of the output gradient at `row_id * n + position`,
    where ids at position >= n gather an appended zero row (`ConcatV2`), under
    a `Cond` that skips the concat when no row is longer than n (`Max`).
  - XLA with a static, non-zero number of ids: `GatherV2` at
    `row_start + k` + `SelectV2` zeroing `k >= row length` (fused by XLA).
  - GPU, other XLA: `UnsortedSegmentSum` into `[nrows * n + 1, dim]` (ids at
    position >= n go to the last slot, dropped by a `StridedSlice`), `Reshape`;
    the same gather gradient (always with the zero row).
  Memory is O(nrows * n * dim + num_ids) in every formulation.
* Half types (float16, bfloat16): `Cast` to float32 around the sums.
* A runtime `Assert` that the embedding (and weights) have one row per id when
  static shapes cannot show it (skipped under XLA, which ignores asserts), with
  `Identity` ops carrying the control dependency.
"""

import abc
import functools
from typing import Optional, Tuple, Union

import numpy as np
import tensorflow as tf

from monolith.native_training import _tf_compat

# The combiners never branch on tensor values; keep AutoGraph out of them.
_do_not_convert = tf.autograph.experimental.do_not_convert

_HALF_TYPES = (tf.float16, tf.bfloat16)
_FLOAT_TYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)


class Combiner(abc.ABC):
  """Base class of the combiners.

  Args:
    max_seq_length: the number of embeddings kept per row in the output
      (`0` for combiners that reduce a row to one embedding).

  Example:

    class ReduceMax(Combiner):

      def __init__(self):
        super().__init__(0)

      def combine(self, key, embedding, name=None):
        ...
  """

  def __init__(self, max_seq_length: int):
    self._max_seq_length = max_seq_length

  @property
  def max_seq_length(self) -> int:
    """The sequence length of the output (0 for reducing combiners)."""
    return self._max_seq_length

  @abc.abstractmethod
  def combine(self,
              key: tf.RaggedTensor,
              embedding: tf.Tensor,
              name: Optional[str] = None) -> tf.Tensor:
    """Combines the embeddings of each row of `key`.

    Args:
      key: `tf.RaggedTensor` of ids, `ragged_rank == 1`.
      embedding: `[num_ids, dim]` tensor (or list / numpy array); row `i`
        belongs to `key.values[i]`.
      name: name scope of the created ops.

    Returns:
      The combined embeddings, `key.nrows()` rows.
    """


class _PoolingCombiner(Combiner):
  """Shared implementation of the reducing combiners."""

  _NAME = ""

  def __init__(self):
    super().__init__(0)

  @_do_not_convert
  def combine(
      self,
      key: tf.RaggedTensor,
      embedding: tf.Tensor,
      name: Optional[str] = None,
      weights: Optional[Union[tf.Tensor, tf.RaggedTensor]] = None) -> tf.Tensor:
    """Pools the embeddings of each row of `key` into one embedding.

    Args:
      key: `tf.RaggedTensor` of ids, `ragged_rank == 1`, int32 or int64 row
        partition.
      embedding: `[num_ids, dim]` float tensor (or list / numpy array); row `i`
        belongs to `key.values[i]`.
      name: name scope of the created ops (defaults to the class name).
      weights: optional per-id weights, like `tf.nn.embedding_lookup_sparse`'s
        `sp_weights`: a `tf.RaggedTensor` with the same row partition as `key`
        or a 1-D tensor aligned with `key.values`.

    Returns:
      `[key.nrows(), dim]` tensor of `embedding`'s dtype.

    Raises:
      TypeError: `key` is not a `tf.RaggedTensor`, or `embedding` / `weights`
        are not floating point.
      ValueError: `key.ragged_rank != 1`, `embedding` is not rank 2, or static
        shapes show that `embedding` / `weights` do not have one row per id.
      tf.errors.InvalidArgumentError: (at run time) the same mismatches when
        static shapes cannot show them.
    """
    with tf.name_scope(name or self._NAME):
      p = _prepare(key, embedding, self._NAME)
      compute_dtype = tf.float32 if p.embedding.dtype in _HALF_TYPES else (
          p.embedding.dtype)
      values = tf.cast(p.embedding, compute_dtype)
      w = None
      if weights is not None:
        w = _prepare_weights(weights, key, p, compute_dtype, self._NAME)
        values = values * w[:, None]
      row_ids = _row_ids(p)
      summed = _segment_sum(values, row_ids, p)
      out = self._finish(summed, w, row_ids, p, compute_dtype)
      out = tf.cast(out, p.embedding.dtype)
      if not tf.executing_eagerly():
        out.set_shape([p.static_nrows, p.static_dim])
      return out

  def _finish(self, summed, w, row_ids, p, compute_dtype):
    raise NotImplementedError


class ReduceSum(_PoolingCombiner):
  """Sums the embeddings of each row (0 for empty rows).

  Example:

    key = tf.RaggedTensor.from_row_lengths([1, 2, 3], [1, 2])
    emb = [[1.0], [2.0], [3.0]]
    ReduceSum().combine(key, emb)  # [[1.], [5.]]
    ReduceSum().combine(key, emb, weights=[1.0, 0.5, 2.0])  # [[1.], [7.]]
  """

  _NAME = "ReduceSum"

  def _finish(self, summed, w, row_ids, p, compute_dtype):
    return summed


class ReduceMean(_PoolingCombiner):
  """Averages the embeddings of each row (0 for empty rows, never NaN).

  With `weights`, computes `sum(w * e) / sum(w)` per row (0 where
  `sum(w) == 0`).

  Example:

    key = tf.RaggedTensor.from_row_lengths([1, 2, 3], [1, 2, 0])
    ReduceMean().combine(key, [[1.0], [2.0], [3.0]])  # [[1.], [2.5], [0.]]
  """

  _NAME = "ReduceMean"

  def _finish(self, summed, w, row_ids, p, compute_dtype):
    if w is None:
      lengths = tf.cast(_row_lengths(p), compute_dtype)
      scale = tf.math.reciprocal(tf.maximum(lengths, 1))
      return summed * scale[:, None]
    denom = _sum_per_row(w, row_ids, p)
    return tf.math.divide_no_nan(summed, denom[:, None])


class ReduceSqrtN(_PoolingCombiner):
  """Sums the embeddings of each row divided by sqrt(row length).

  0 for empty rows. With `weights`, computes `sum(w * e) / sqrt(sum(w**2))`
  per row (0 where `sum(w**2) == 0`), like `tf.nn.embedding_lookup_sparse`'s
  `combiner="sqrtn"`.

  Example:

    key = tf.RaggedTensor.from_row_lengths([1, 2, 3, 4], [0, 4])
    ReduceSqrtN().combine(key, [[1.0], [1.0], [1.0], [1.0]])  # [[0.], [2.]]
  """

  _NAME = "ReduceSqrtN"

  def _finish(self, summed, w, row_ids, p, compute_dtype):
    if w is None:
      lengths = tf.cast(_row_lengths(p), compute_dtype)
      scale = tf.math.rsqrt(tf.maximum(lengths, 1))
      return summed * scale[:, None]
    denom = tf.sqrt(_sum_per_row(w * w, row_ids, p))
    return tf.math.divide_no_nan(summed, denom[:, None])


class FirstN(Combiner):
  """Keeps the first `seq_length` embeddings of each row, zero-padded.

  Memory is O(nrows * seq_length * dim) however long the longest row is.

  Args:
    seq_length: number of embeddings kept per row, a positive int.

  Raises:
    ValueError: `seq_length` is not a positive int.

  Example:

    key = tf.RaggedTensor.from_row_lengths([1, 2, 3, 4, 5, 6], [1, 2, 3])
    emb = [[1.0], [2.0], [3.0], [4.0], [5.0], [6.0]]
    FirstN(2).combine(key, emb)
    # [[[1.], [0.]], [[2.], [3.]], [[4.], [5.]]]
    out, lengths = FirstN(2).combine_with_lengths(key, emb)  # lengths [1, 2, 2]
  """

  def __init__(self, seq_length: int):
    if (isinstance(seq_length, (bool, np.bool_)) or
        not isinstance(seq_length, (int, np.integer)) or seq_length <= 0):
      raise ValueError(
          f"FirstN: seq_length must be a positive int, got {seq_length!r}")
    super().__init__(int(seq_length))

  @_do_not_convert
  def combine(self,
              key: tf.RaggedTensor,
              embedding: tf.Tensor,
              name: Optional[str] = None) -> tf.Tensor:
    """Returns the first `max_seq_length` embeddings of each row.

    Args:
      key: `tf.RaggedTensor` of ids, `ragged_rank == 1`, int32 or int64 row
        partition.
      embedding: `[num_ids, dim]` float tensor (or list / numpy array); row `i`
        belongs to `key.values[i]`.
      name: name scope of the created ops (defaults to "FirstN").

    Returns:
      `[key.nrows(), max_seq_length, dim]` tensor of `embedding`'s dtype; rows
      shorter than `max_seq_length` are zero-padded.

    Raises:
      TypeError: `key` is not a `tf.RaggedTensor` or `embedding` is not
        floating point.
      ValueError: `key.ragged_rank != 1`, `embedding` is not rank 2, or static
        shapes show that `embedding` does not have one row per id.
      tf.errors.InvalidArgumentError: (at run time) the same mismatch when
        static shapes cannot show it.
    """
    return self._combine(key, embedding, name)[0]

  @_do_not_convert
  def combine_with_lengths(
      self,
      key: tf.RaggedTensor,
      embedding: tf.Tensor,
      name: Optional[str] = None) -> Tuple[tf.Tensor, tf.Tensor]:
    """Like `combine`, also returning the number of valid positions per row.

    Args:
      key: as in `combine`.
      embedding: as in `combine`.
      name: as in `combine`.

    Returns:
      `(output, lengths)`: `output` as returned by `combine`; `lengths`, a
      `[key.nrows()]` tensor of the row partition's dtype, is
      `min(row length, max_seq_length)` (so `tf.sequence_mask(lengths,
      max_seq_length)` is the mask of the non-padding positions).

    Raises:
      As `combine`.
    """
    out, p = self._combine(key, embedding, name)
    lengths = tf.minimum(_row_lengths(p),
                         tf.constant(self._max_seq_length, p.splits.dtype))
    return out, lengths

  def _combine(self, key, embedding, name):
    n = self._max_seq_length
    with tf.name_scope(name or "FirstN"):
      p = _prepare(key, embedding, "FirstN")
      static_ids = p.embedding.shape[0]
      if (_tf_compat.in_xla_context() and static_ids is not None and
          static_ids > 0):
        out = _first_n_xla_gather(p, n)
      elif _use_portable_formulation():
        out = _first_n_portable(p, n)
      else:
        out = _first_n_ragged_to_tensor(p, n)
      if not tf.executing_eagerly():
        out.set_shape([p.static_nrows, n, p.static_dim])
      return out, p


# ----------------------------------------------------------------------------
# Implementation.


class _Prepared:
  """Validated inputs: embedding tensor, row partition and static sizes.

  Derived tensors are cached per graph: a custom gradient may be traced into
  other graphs (backward functions) than the forward pass.
  """

  def __init__(self, embedding, key, key_values, static_dim):
    self.embedding = embedding
    self.splits = key.row_splits
    self.key_values = key_values
    self.static_nrows = key.shape[0]
    self.static_dim = static_dim
    self._cache = {}

  def cached(self, name, make):
    """Returns `make()`, computed once per graph (eagerly: once)."""
    graph = None if tf.executing_eagerly() else tf.compat.v1.get_default_graph()
    entry = self._cache.get(name)
    if entry is None or entry[0] is not graph:
      entry = (graph, make())
      self._cache[name] = entry
    return entry[1]

  @property
  def nrows(self):
    return self.cached(
        "nrows",
        lambda: tf.shape(self.splits, out_type=self.splits.dtype)[0] - 1)

  @property
  def nvals(self):
    """Number of rows of `embedding` (checked equal to the number of ids)."""
    return self.cached(
        "nvals",
        lambda: tf.shape(self.embedding, out_type=self.splits.dtype)[0])


def _check_key(key, combiner_name):
  if not isinstance(key, tf.RaggedTensor):
    raise TypeError(f"{combiner_name}: key must be a tf.RaggedTensor, got "
                    f"{type(key).__name__}")
  if key.ragged_rank != 1:
    raise ValueError(f"{combiner_name}: key must have ragged_rank 1, got "
                     f"ragged_rank {key.ragged_rank}")
  if key.values.shape.rank is not None and key.values.shape.rank != 1:
    raise ValueError(f"{combiner_name}: key must be a 2-D [batch, (ids)] "
                     f"RaggedTensor, got shape {key.shape}")


def _prepare(key, embedding, combiner_name) -> _Prepared:
  """Validates `key` and `embedding` and returns their tensors."""
  _check_key(key, combiner_name)
  if isinstance(embedding, tf.RaggedTensor):
    raise TypeError(
        f"{combiner_name}: embedding must be a dense [num_ids, dim] "
        "tensor, got a tf.RaggedTensor")
  embedding = tf.convert_to_tensor(
      embedding,
      # Python lists of numbers are float32; NumPy arrays keep their dtype.
      dtype_hint=None if isinstance(embedding, np.ndarray) else tf.float32,
      name="embedding")
  if embedding.dtype not in _FLOAT_TYPES:
    raise TypeError(f"{combiner_name}: embedding must be float16, bfloat16, "
                    f"float32 or float64, got {embedding.dtype.name}")
  rank = embedding.shape.rank
  if rank is not None and rank != 2:
    raise ValueError(f"{combiner_name}: embedding must be rank 2 "
                     f"[num_ids, dim], got shape {embedding.shape}")
  if rank is None:
    embedding = tf.ensure_shape(embedding, [None, None])
  splits = key.row_splits
  key_values = key.values
  static_ids = key.values.shape[0]
  static_rows = embedding.shape[0]
  if static_ids is not None and static_rows is not None:
    if static_ids != static_rows:
      raise ValueError(
          f"{combiner_name}: embedding has {static_rows} rows but key has "
          f"{static_ids} ids; they must be equal (row i of embedding belongs "
          "to key.values[i])")
  elif not _tf_compat.in_xla_context():
    n_emb = tf.shape(embedding, out_type=splits.dtype)[0]
    n_ids = splits[-1]
    check = tf.debugging.Assert(tf.equal(n_emb, n_ids), [
        f"{combiner_name}: embedding must have one row per id of key, got "
        "embedding rows:", n_emb, "number of ids:", n_ids
    ],
                                name="check_embedding_rows")
    with tf.control_dependencies([check]):
      embedding = tf.identity(embedding)
      key_values = tf.identity(key_values)
  return _Prepared(embedding, key, key_values, embedding.shape[1])


def _prepare_weights(weights, key, p, compute_dtype, combiner_name):
  """Returns the weights as a 1-D tensor aligned with `key.values`."""
  checks = []
  if isinstance(weights, tf.RaggedTensor):
    if weights.ragged_rank != 1 or (weights.values.shape.rank is not None and
                                    weights.values.shape.rank != 1):
      raise ValueError(f"{combiner_name}: ragged weights must have the same "
                       f"shape as key, got {weights.shape} and {key.shape}")
    if weights.row_splits is not key.row_splits:
      w_splits = tf.cast(weights.row_splits, p.splits.dtype)
      ws, ks = w_splits.shape[0], p.splits.shape[0]
      if ws is not None and ks is not None and ws != ks:
        raise ValueError(f"{combiner_name}: weights must have the same row "
                         f"partition as key; got {ws - 1} rows for "
                         f"{ks - 1} rows of key")
      if tf.executing_eagerly():
        if not np.array_equal(w_splits.numpy(), p.splits.numpy()):
          raise ValueError(f"{combiner_name}: weights must have the same row "
                           "partition as key")
      elif not _tf_compat.in_xla_context():
        checks.append(
            tf.debugging.assert_equal(
                w_splits,
                p.splits,
                message=(f"{combiner_name}: weights must have the same row "
                         "partition as key")))
    weights = weights.values
  else:
    weights = tf.convert_to_tensor(weights,
                                   dtype_hint=compute_dtype,
                                   name="weights")
    if weights.shape.rank is not None and weights.shape.rank != 1:
      raise ValueError(f"{combiner_name}: weights must be a tf.RaggedTensor "
                       "like key or a 1-D tensor aligned with key.values, got "
                       f"shape {weights.shape}")
    n_w, n_emb = weights.shape[0], p.embedding.shape[0]
    if n_w is not None and n_emb is not None:
      if n_w != n_emb:
        raise ValueError(f"{combiner_name}: weights has {n_w} entries but key "
                         f"has {n_emb} ids; they must be equal")
    elif not _tf_compat.in_xla_context():
      nw = tf.shape(weights, out_type=p.splits.dtype)[0]
      checks.append(
          tf.debugging.Assert(tf.equal(nw, p.nvals), [
              f"{combiner_name}: weights must have one entry per id of key, "
              "got weights:", nw, "number of ids:", p.nvals
          ],
                              name="check_weights_size"))
  if not weights.dtype.is_floating:
    raise TypeError(f"{combiner_name}: weights must be floating point, got "
                    f"{weights.dtype.name}")
  weights = tf.cast(weights, compute_dtype)
  checks = [c for c in checks if c is not None]
  if checks:
    with tf.control_dependencies(checks):
      weights = tf.identity(weights)
  return weights


@functools.lru_cache(maxsize=None)
def _gpu_visible() -> bool:
  return bool(tf.config.list_logical_devices("GPU"))


def _use_portable_formulation() -> bool:
  """Whether to avoid the CPU-only / non-XLA kernels (see module docstring)."""
  return _tf_compat.in_xla_context() or _gpu_visible()


def _use_unsorted_segment_sum() -> bool:
  """Whether `SegmentSum` (no XLA kernel) must be avoided."""
  return _tf_compat.in_xla_context()


def _row_lengths(p):
  return p.splits[1:] - p.splits[:-1]


def _row_ids(p):
  """Row id of every id, `[num_ids]` int, O(num_ids + nrows).

  Never `RaggedTensor.value_rowids()`, which builds a `[nrows, longest row]`
  mask (milliseconds on skewed batches).
  """
  if _use_portable_formulation():
    return _portable_row_ids(p)
  return _ragged_indices(p)[0]


def _ragged_indices(p):
  """CPU: `(row id, position in row)` of every id, int64, one kernel.

  `RaggedTensorToSparse` walks the row splits once (CPU kernel only).
  """

  def make():
    indices, _, _ = tf.raw_ops.RaggedTensorToSparse(
        rt_nested_splits=[p.splits], rt_dense_values=p.key_values)
    return indices[:, 0], indices[:, 1]

  return p.cached("ragged_indices", make)


def _portable_row_ids(p):
  """XLA/GPU: row ids as a cumulative histogram of the row boundaries.

  `row_ids[j]` is the number of row boundaries `row_splits[1:-1]` that are
  `<= j`: `UnsortedSegmentSum` of ones then `Cumsum` (CPU, GPU and XLA
  kernels; the CPU `Cumsum` is slow, hence `_ragged_indices` there).
  """
  boundaries = p.splits[1:-1]
  counts = tf.math.unsorted_segment_sum(
      tf.ones_like(boundaries, dtype=tf.int32), boundaries, p.nvals + 1)
  return tf.cumsum(counts[:-1])


def _row_ids_and_positions(p):
  """Row id and position in its row of every id, row partition dtype."""
  if _use_portable_formulation():
    row_ids = tf.cast(_portable_row_ids(p), p.splits.dtype)
    pos = tf.range(p.nvals, dtype=p.splits.dtype) - tf.gather(p.splits, row_ids)
    return row_ids, pos
  return tuple(tf.cast(t, p.splits.dtype) for t in _ragged_indices(p))


def _input_grad_only(grad_wrt_input):
  """Makes a `tf.custom_gradient` grad_fn that ignores captured variables.

  In graph mode `tf.custom_gradient` passes `variables` when a variable is
  read anywhere upstream of the output (e.g. `key` built from a variable);
  none of them gets a gradient here.
  """

  def grad(dy, variables=None):
    dx = grad_wrt_input(dy)
    if variables:
      return dx, [None] * len(variables)
    return dx

  return grad


def _gather_rows_grad(row_ids):
  """Gradient of a per-row sum: each id receives its row's gradient."""
  return _input_grad_only(lambda dy: tf.gather(dy, row_ids))


def _segment_sum(values, row_ids, p):
  """Sums `values` (rank 1 or 2) per row, `[nrows, ...]`."""
  if _use_unsorted_segment_sum():

    @tf.custom_gradient
    def unsorted(v):
      return (tf.math.unsorted_segment_sum(v, row_ids,
                                           p.nrows), _gather_rows_grad(row_ids))

    return unsorted(values)
  if values.shape.rank != 2 or _use_portable_formulation():
    return _padded_segment_sum(values, row_ids, p.nrows)

  @tf.custom_gradient
  def two_halves(v):
    return _two_way_segment_sum(v, row_ids, p), _gather_rows_grad(row_ids)

  return two_halves(values)


def _padded_segment_sum(values, row_ids, nrows):
  """`SegmentSum` (gradient: a gather) padded with the trailing empty rows."""
  summed = tf.math.segment_sum(values, row_ids)
  missing = tf.cast(nrows, tf.int32) - tf.shape(summed)[0]
  paddings = [[0, missing]] + [[0, 0]] * (values.shape.rank - 1)
  return tf.pad(summed, paddings)


def _two_way_segment_sum(values, row_ids, p):
  """CPU: two independent `SegmentSum`s over the two halves of the rows.

  The CPU `SegmentSum` kernel is single-threaded; the two halves run in
  parallel on the inter-op thread pool (zero-copy leading-dim slices, one
  `ConcatV2` of the `[nrows, dim]` output).
  """
  half = p.nrows // 2
  mid = p.splits[half]
  half_ids = tf.cast(half, row_ids.dtype)
  first = _padded_segment_sum(values[:mid], row_ids[:mid], half)
  second = _padded_segment_sum(values[mid:], row_ids[mid:] - half_ids,
                               p.nrows - half)
  return tf.concat([first, second], axis=0)


def _sum_per_row(w, row_ids, p):
  """Sums the 1-D `w` per row, `[nrows]`."""
  return _segment_sum(w, row_ids, p)


def _first_n_grad(dy, p, n):
  """Gradient of FirstN w.r.t. the embedding: a gather of `dy`.

  Ids at position >= n get 0: they gather an appended zero row, which costs a
  copy of `dy` -- skipped on CPU when no row is longer than n.
  """
  row_ids, pos = _row_ids_and_positions(p)
  flat_index = row_ids * n + pos
  dim = tf.shape(dy)[2]
  dy_flat = tf.reshape(dy, tf.stack([-1, dim]))

  def masked():
    zero_slot = tf.shape(dy_flat, out_type=flat_index.dtype)[0]
    padded = tf.concat([dy_flat, tf.zeros_like(dy_flat[:1])], axis=0)
    return tf.gather(padded, tf.where(pos < n, flat_index, zero_slot))

  if _use_portable_formulation():
    return masked()
  longest = tf.reduce_max(_row_lengths(p))
  return tf.cond(longest <= n, lambda: tf.gather(dy_flat, flat_index), masked)


def _first_n_ragged_to_tensor(p, n):
  """FirstN as one `RaggedTensorToTensor` (CPU), gather gradient."""

  @tf.custom_gradient
  def first_n(emb):
    rt = tf.RaggedTensor.from_row_splits(emb, p.splits, validate=False)
    # A known dim matters: with -1 the kernel is ~25% slower.
    dim = p.static_dim
    if dim is None:
      dim = tf.shape(emb, out_type=p.splits.dtype)[1]
      shape = tf.stack([tf.constant(-1, p.splits.dtype), n, dim])
    else:
      shape = [None, n, dim]
    out = rt.to_tensor(shape=shape)
    return out, _input_grad_only(lambda dy: _first_n_grad(dy, p, n))

  return first_n(p.embedding)


def _first_n_portable(p, n):
  """FirstN from XLA/GPU-friendly ops, gather gradient."""

  @tf.custom_gradient
  def first_n(emb):
    row_ids, pos = _row_ids_and_positions(p)
    nrows = p.nrows
    slots = nrows * n
    target = tf.where(pos < n, row_ids * n + pos, tf.fill(tf.shape(pos), slots))
    # Half types: not every device has a half UnsortedSegmentSum kernel.
    values = tf.cast(emb, tf.float32) if emb.dtype in _HALF_TYPES else emb
    out = tf.math.unsorted_segment_sum(values, target, slots + 1)[:-1]
    out = tf.cast(out, emb.dtype)
    dim = tf.shape(emb, out_type=p.splits.dtype)[1]
    out = tf.reshape(out, tf.stack([nrows, n, dim]))
    return out, _input_grad_only(lambda dy: _first_n_grad(dy, p, n))

  return first_n(p.embedding)


def _first_n_xla_gather(p, n):
  """XLA with a known, non-zero number of ids: `GatherV2` + `SelectV2`.

  Gathers `[nrows, n]` rows at `row_start + k` and zeroes `k >= row length`;
  XLA fuses the select into the gather. (A gather from a 0-row operand does
  not compile, hence the `UnsortedSegmentSum` formulation otherwise.)
  """

  @tf.custom_gradient
  def first_n(emb):
    starts = p.splits[:-1]
    positions = tf.range(n, dtype=p.splits.dtype)
    valid = positions[None, :] < (p.splits[1:] - starts)[:, None]
    index = tf.where(valid, starts[:, None] + positions[None, :],
                     tf.zeros_like(valid, dtype=p.splits.dtype))
    gathered = tf.gather(emb, index)
    out = tf.where(valid[:, :, None], gathered, tf.zeros_like(gathered))
    return out, _input_grad_only(lambda dy: _first_n_grad(dy, p, n))

  return first_n(p.embedding)
