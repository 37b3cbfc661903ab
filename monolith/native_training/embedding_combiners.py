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

Choosing the formulation. Each `combine` call builds one of three
formulations, decided while the graph is built, without starting the
TensorFlow runtime (so `tf.config.threading` etc. still work afterwards):

* XLA: when the graph is compiled by XLA now (`tf.function(jit_compile=True)`,
  detected by `monolith.native_training._tf_compat.xla_context_state`); also
  the *portable* formulation: with `portable=True` on the combiner, inside
  `with portable_formulation():`, on devices other than CPU and GPU, and
  when TensorFlow's private XLA-context helper is missing (cannot tell).
  Only ops with CPU, GPU and XLA kernels, so the graph compiles under XLA
  wherever and whenever it runs.
* CPU: when the combiner's ops are placed on a CPU (`tf.device("/CPU:0")`
  while `combine` is called, even on a machine with GPUs), or not placed and
  no GPU is visible (`tf.config.get_visible_devices`).
* GPU: when placed on a GPU, or not placed and a GPU is visible.

The fastest CPU kernels (`SegmentSum`, `SegmentMean`, `RaggedTensorToTensor`,
`RaggedTensorToSparse`) have no XLA kernel, the two ragged ones no GPU kernel
either. So a graph traced outside XLA -- a `tf.function` traced first on its
own, a SavedModel exported on a CPU machine -- does not compile when it is
later called inside `tf.function(jit_compile=True)` ("Detected unsupported
operations ... RaggedTensorToSparse"), unless its combiners were built
portable.

Run-time checks: when static shapes cannot show whether the embedding (and
weights) have one row per id, an `Assert` checks it at run time -- except
under XLA, which drops asserts: there a wrong row count gives a silently
wrong result (static checks still raise). Portable graphs keep the asserts
(they check outside XLA; XLA ignores them, logging "Ignoring Assert
operator").

The formulations, op by op, are described in `embedding_combiner_ops`.
"""

import abc
from typing import Optional, Tuple, Union

import numpy as np
import tensorflow as tf

from monolith.native_training import embedding_combiner_ops as _ops

# The combiners never branch on tensor values; keep AutoGraph out of them.
_do_not_convert = tf.autograph.experimental.do_not_convert

# Within the block, every combiner builds its portable formulation.
portable_formulation = _ops.portable_formulation


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
  _REDUCTION = ""

  def __init__(self, portable: bool = False):
    super().__init__(0)
    self._portable = _ops.check_portable(portable, self._NAME)

  @property
  def portable(self) -> bool:
    """Whether this combiner always builds the portable formulation."""
    return self._portable

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
        static shapes cannot show them -- except under XLA, which drops
        run-time checks: there a wrong row count gives a silently wrong
        result.
    """
    with tf.name_scope(name or self._NAME):
      p = _ops.prepare(key, embedding, self._NAME, self._portable)
      compute_dtype = tf.float32 if p.embedding.dtype in _ops.HALF_TYPES else (
          p.embedding.dtype)
      values = tf.cast(p.embedding, compute_dtype)
      if weights is None:
        out, _ = _ops.pool(values, p, self._REDUCTION)
      else:
        w = _ops.prepare_weights(weights, key, p, compute_dtype, self._NAME)
        summed, row_ids = _ops.pool(values * w[:, None], p, "sum")
        out = self._weighted(summed, w, row_ids, p)
      out = tf.cast(out, p.embedding.dtype)
      if not tf.executing_eagerly():
        out.set_shape([p.static_nrows, p.static_dim])
      return out

  def _weighted(self, summed, w, row_ids, p):
    raise NotImplementedError


class ReduceSum(_PoolingCombiner):
  """Sums the embeddings of each row (0 for empty rows).

  Args:
    portable: build the portable formulation (ops with CPU, GPU and XLA
      kernels) wherever `combine` is called, for graphs that may be compiled
      by XLA later (see the module docstring).

  Example:

    key = tf.RaggedTensor.from_row_lengths([1, 2, 3], [1, 2])
    emb = [[1.0], [2.0], [3.0]]
    ReduceSum().combine(key, emb)  # [[1.], [5.]]
    ReduceSum().combine(key, emb, weights=[1.0, 0.5, 2.0])  # [[1.], [7.]]
  """

  _NAME = "ReduceSum"
  _REDUCTION = "sum"

  def _weighted(self, summed, w, row_ids, p):
    return summed


class ReduceMean(_PoolingCombiner):
  """Averages the embeddings of each row (0 for empty rows, never NaN).

  With `weights`, computes `sum(w * e) / sum(w)` per row (0 where
  `sum(w) == 0`).

  Args:
    portable: as for `ReduceSum`.

  Example:

    key = tf.RaggedTensor.from_row_lengths([1, 2, 3], [1, 2, 0])
    ReduceMean().combine(key, [[1.0], [2.0], [3.0]])  # [[1.], [2.5], [0.]]
  """

  _NAME = "ReduceMean"
  _REDUCTION = "mean"

  def _weighted(self, summed, w, row_ids, p):
    denom = _ops.sum_per_row(w, row_ids, p)
    return tf.math.divide_no_nan(summed, denom[:, None])


class ReduceSqrtN(_PoolingCombiner):
  """Sums the embeddings of each row divided by sqrt(row length).

  0 for empty rows. With `weights`, computes `sum(w * e) / sqrt(sum(w**2))`
  per row (0 where `sum(w**2) == 0`), like `tf.nn.embedding_lookup_sparse`'s
  `combiner="sqrtn"`.

  Args:
    portable: as for `ReduceSum`.

  Example:

    key = tf.RaggedTensor.from_row_lengths([1, 2, 3, 4], [0, 4])
    ReduceSqrtN().combine(key, [[1.0], [1.0], [1.0], [1.0]])  # [[0.], [2.]]
  """

  _NAME = "ReduceSqrtN"
  _REDUCTION = "sqrtn"

  def _weighted(self, summed, w, row_ids, p):
    denom = tf.sqrt(_ops.sum_per_row(w * w, row_ids, p))
    return tf.math.divide_no_nan(summed, denom[:, None])


class FirstN(Combiner):
  """Keeps the first `seq_length` embeddings of each row, zero-padded.

  Memory is O(nrows * seq_length * dim + num_ids * dim) however long the
  longest row is.

  Args:
    seq_length: number of embeddings kept per row, a positive int.
    portable: as for `ReduceSum`.

  Raises:
    ValueError: `seq_length` is not a positive int.
    TypeError: `portable` is not a bool.

  Example:

    key = tf.RaggedTensor.from_row_lengths([1, 2, 3, 4, 5, 6], [1, 2, 3])
    emb = [[1.0], [2.0], [3.0], [4.0], [5.0], [6.0]]
    FirstN(2).combine(key, emb)
    # [[[1.], [0.]], [[2.], [3.]], [[4.], [5.]]]
    out, lengths = FirstN(2).combine_with_lengths(key, emb)  # lengths [1, 2, 2]
  """

  def __init__(self, seq_length: int, portable: bool = False):
    if (isinstance(seq_length, (bool, np.bool_)) or
        not isinstance(seq_length, (int, np.integer)) or seq_length <= 0):
      raise ValueError(
          f"FirstN: seq_length must be a positive int, got {seq_length!r}")
    super().__init__(int(seq_length))
    self._portable = _ops.check_portable(portable, "FirstN")

  @property
  def portable(self) -> bool:
    """Whether this combiner always builds the portable formulation."""
    return self._portable

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
        static shapes cannot show it -- except under XLA, which drops
        run-time checks: there a wrong row count gives a silently wrong
        result.
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
    lengths = tf.minimum(_ops.row_lengths(p),
                         tf.constant(self._max_seq_length, p.splits.dtype))
    return out, lengths

  def _combine(self, key, embedding, name):
    n = self._max_seq_length
    with tf.name_scope(name or "FirstN"):
      p = _ops.prepare(key, embedding, "FirstN", self._portable)
      static_ids = p.embedding.shape[0]
      if p.kind == _ops.XLA and static_ids is not None and static_ids > 0:
        out = _ops.first_n_xla_gather(p, n)
      elif p.kind == _ops.CPU:
        out = _ops.first_n_cpu(p, n)
      else:
        out = _ops.first_n_portable(p, n)
      if not tf.executing_eagerly():
        out.set_shape([p.static_nrows, n, p.static_dim])
      return out, p
