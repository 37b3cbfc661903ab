"""The stock-TF formulations of the embedding combiners (internal).

`embedding_combiners` holds the public combiner classes; this module chooses
the formulation of each `combine` call (CPU, GPU or XLA; see
`embedding_combiners`' docstring) and builds it.

Formulations and TF ops:

* Row id / position of every id (never `RaggedTensor.value_rowids()`, which
  builds a `[nrows, longest row]` mask -- milliseconds on skewed batches):
  - CPU: `RaggedTensorToSparse` (one O(num_ids) pass over the row splits)
    + `StridedSlice`; for large pooled batches one per half of the rows.
  - GPU, XLA: `UnsortedSegmentSum` of ones at `row_splits[1:-1]` + `Cumsum`
    (a cumulative histogram of the row boundaries); positions
    `Range - GatherV2(row_splits, row_ids)`.
* `ReduceSum`, `ReduceMean`, `ReduceSqrtN` (one custom gradient each: one
  `GatherV2` of the output gradient at the row ids, after a `RealDiv` by the
  row divisor `max(row length, 1)` resp. its `Sqrt` for the mean / sqrt-n):
  - CPU: one sorted-segment kernel, `Pad`ded for trailing empty rows:
    `SegmentSum`; `SegmentMean`, which divides as it reduces, so the mean
    costs no more than the sum; for the sqrt-n `SegmentSum`, then a `Mul` of
    the `[nrows, dim]` sums by `Rsqrt(max(row length, 1))` (cheaper than
    `SparseSegmentSqrtN`, which is slower than `SegmentSum` by more than
    that). These kernels are single-threaded, so when num_ids * (dim + 24)
    is at least 2M (and the process may use 2 CPUs or more), each half of
    the rows gets its own row ids and kernel, run in parallel by the
    inter-op threads, and a `ConcatV2` joins them. Whole or halves is
    decided from static shapes when they are known, else at run time (a
    `Cond` in functions, a `Switch` / `Merge` in TF1 graphs).
  - GPU: `SegmentSum` + `Pad`, then `RealDiv` by the row divisor.
  - XLA: `UnsortedSegmentSum(num_segments=nrows)`, then `RealDiv`.
  A 0-row batch: TF 2.21's Grappler turns a `Mul` by an all-ones constant
  into a `Tile` and divides by zero (SIGFPE) computing the multiples when
  the other operand is a non-constant `[0, 1]` factor -- the pattern that
  `dy * factor` hands it in a gradient when the loss is a sum or mean (`dy`
  folds into a constant of ones). So gradients divide by the row divisor
  (`RealDiv` is never rewritten that way), and the only per-row `Mul` is the
  CPU sqrt-n's forward one, whose other operand (the sums) is never
  constant.
* `weights`: `Mul` of the embedding by the weights, summed per row as above,
  the (squared) weights summed per row, `Sqrt`, `DivNoNan`.
* `FirstN`:
  - CPU: `RaggedTensorToTensor` (shape `[nrows, n, dim]`, truncating); for
    outputs of 32 MiB or more (and 2 CPUs or more; decided like the halves
    above), a `GatherV2` from the embedding with a zero row
    appended (`Pad`) at `row_start + k`, or at the zero row where
    `k >= row length`: it writes the output on all intra-op threads. Custom
    gradient: `GatherV2` of the output gradient at `row_id * n + position`,
    where ids at position >= n gather an appended zero row (`ConcatV2`),
    skipped when no row is longer than n (`Max`): a `Cond` in functions, a
    `Switch` / `Merge` in TF1 graphs (a `Cond` would start the runtime).
  - XLA with a static, non-zero number of ids: `GatherV2` at
    `row_start + k` + `SelectV2` zeroing `k >= row length` (fused by XLA).
  - GPU, other XLA: `UnsortedSegmentSum` into `[nrows * n + 1, dim]` (ids at
    position >= n go to the last slot, dropped by a `StridedSlice`), `Reshape`;
    the same gather gradient (always with the zero row).
  Memory is O(nrows * n * dim + num_ids) in every formulation, plus a copy
  of the embedding (num_ids * dim) in the CPU gather of large outputs.
* Half types (float16, bfloat16): `Cast` to float32 around the sums.
* The run-time `Assert`s (raw `Assert` ops: `tf.debugging.Assert` would add a
  `Cond`), with `Identity` ops carrying the control dependency.
"""

import contextlib
import os
import threading
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf

from monolith.native_training import _tf_compat

HALF_TYPES = (tf.float16, tf.bfloat16)
_FLOAT_TYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)

# ----------------------------------------------------------------------------
# Choice of formulation.

_local = threading.local()


@contextlib.contextmanager
def portable_formulation():
  """Within the block, every combiner builds its portable formulation.

  Same effect as `portable=True` on every combiner whose `combine` is called
  (traced) inside the block: only ops with CPU, GPU and XLA kernels, so the
  graph can be compiled by XLA later (see `embedding_combiners`' docstring).

  Example:

    with embedding_combiners.portable_formulation():
      tf.saved_model.save(model, path)  # traces the combiners portably

  Yields:
    None.
  """
  depth = getattr(_local, "portable_depth", 0)
  _local.portable_depth = depth + 1
  try:
    yield
  finally:
    _local.portable_depth = depth


def _portable_requested() -> bool:
  return getattr(_local, "portable_depth", 0) > 0


def check_portable(portable, combiner_name) -> bool:
  """Returns `portable` as a bool; raises TypeError if it is not one."""
  if not isinstance(portable, (bool, np.bool_)):
    raise TypeError(f"{combiner_name}: portable must be a bool, got "
                    f"{portable!r}")
  return bool(portable)


# Formulations (see the module docstring).
CPU = "cpu"
GPU = "gpu"
XLA = "xla"


class _Formulation(NamedTuple):
  kind: str  # CPU, GPU or XLA (the XLA-compatible ops, aka portable).
  checks: bool  # Whether to add run-time asserts.


def _select_formulation(in_xla: Optional[bool], portable: bool,
                        device_type: Optional[str],
                        gpu_available) -> _Formulation:
  """Decides the formulation of one `combine` call.

  Args:
    in_xla: whether the graph being built is compiled by XLA (`None`: cannot
      tell).
    portable: whether the portable formulation was requested.
    device_type: the device type the combiner's ops are pinned to ("CPU",
      "GPU", ...), or `None` when they are not pinned.
    gpu_available: callable returning whether a GPU is visible; only called
      when the ops are not pinned.

  Returns:
    A `_Formulation`. Under XLA: the XLA ops without asserts (XLA ignores
    them). Requested portable, or unknown whether XLA compiles: the XLA ops
    with asserts (they check in plain graphs, XLA ignores them). Otherwise by
    placement: pinned to a CPU -> CPU ops, to a GPU -> GPU ops, to any other
    device -> XLA ops; not pinned -> GPU ops when a GPU is visible, else CPU
    ops.
  """
  if in_xla:
    return _Formulation(XLA, False)
  if portable or in_xla is None:
    return _Formulation(XLA, True)
  if device_type == "CPU":
    return _Formulation(CPU, True)
  if device_type == "GPU":
    return _Formulation(GPU, True)
  if device_type:
    return _Formulation(XLA, True)
  return _Formulation(GPU if gpu_available() else CPU, True)


def _gpu_available() -> bool:
  """Whether TensorFlow can see a GPU, without initializing its runtime.

  `tf.config.list_logical_devices` would initialize it, after which
  `tf.config.threading` and `tf.config.set_logical_device_configuration`
  raise; the visible physical devices are enough here.
  """
  return bool(tf.config.get_visible_devices("GPU"))


def _device_type(device_name) -> Optional[str]:
  if not device_name:
    return None
  try:
    return tf.DeviceSpec.from_string(device_name).device_type or None
  except (ValueError, TypeError):  # pragma: no cover - malformed scope.
    return None


def _formulation(portable, probe) -> _Formulation:
  """The formulation of a `combine` call whose first created op is `probe`.

  The device comes from the op's own placement: the `tf.device` scope the
  graph op `probe` was created under, or the eager device scope.
  """
  if tf.executing_eagerly():
    device = _tf_compat.eager_device_name()
  else:
    device = probe.op.device
  return _select_formulation(_tf_compat.xla_context_state(),
                             portable or _portable_requested(),
                             _device_type(device), _gpu_available)


# ----------------------------------------------------------------------------
# Implementation.


class Prepared:
  """Validated inputs: embedding tensor, row partition and static sizes.

  Derived tensors are cached per graph: a custom gradient may be traced into
  other graphs (backward functions) than the forward pass.
  """

  def __init__(self, embedding, key, key_values, static_dim, form, nrows):
    self.embedding = embedding
    self.splits = key.row_splits
    self.key_values = key_values
    self.static_nrows = key.shape[0]
    self.static_dim = static_dim
    self.kind = form.kind
    self.checks = form.checks
    self._cache = {}
    self.cached("nrows", lambda: nrows)

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
    return self.cached("nrows", lambda: _nrows(self.splits))

  @property
  def nvals(self):
    """Number of rows of `embedding` (checked equal to the number of ids)."""
    return self.cached(
        "nvals",
        lambda: tf.shape(self.embedding, out_type=self.splits.dtype)[0])


def _nrows(splits):
  return tf.shape(splits, out_type=splits.dtype)[0] - 1


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


def prepare(key, embedding, combiner_name, portable) -> Prepared:
  """Validates `key` and `embedding`, picks the formulation."""
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
  # The first op this call creates: its placement picks the formulation.
  nrows = _nrows(splits)
  form = _formulation(portable, nrows)
  static_ids = key.values.shape[0]
  static_rows = embedding.shape[0]
  if static_ids is not None and static_rows is not None:
    if static_ids != static_rows:
      raise ValueError(
          f"{combiner_name}: embedding has {static_rows} rows but key has "
          f"{static_ids} ids; they must be equal (row i of embedding belongs "
          "to key.values[i])")
  elif form.checks:
    n_emb = tf.shape(embedding, out_type=splits.dtype)[0]
    n_ids = splits[-1]
    check = _assert(tf.equal(n_emb, n_ids), [
        f"{combiner_name}: embedding must have one row per id of key, got "
        "embedding rows:", n_emb, "number of ids:", n_ids
    ], "check_embedding_rows")
    with tf.control_dependencies([check]):
      embedding = tf.identity(embedding)
      key_values = tf.identity(key_values)
  return Prepared(embedding, key, key_values, embedding.shape[1], form, nrows)


def prepare_weights(weights, key, p, compute_dtype, combiner_name):
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
      elif p.checks:
        checks.append(
            _assert(_equal_vectors(w_splits, p.splits), [
                f"{combiner_name}: weights must have the same row partition "
                "as key"
            ], "check_weights_partition"))
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
    elif p.checks:
      nw = tf.shape(weights, out_type=p.splits.dtype)[0]
      checks.append(
          _assert(tf.equal(nw, p.nvals), [
              f"{combiner_name}: weights must have one entry per id of key, "
              "got weights:", nw, "number of ids:", p.nvals
          ], "check_weights_size"))
  if not weights.dtype.is_floating:
    raise TypeError(f"{combiner_name}: weights must be floating point, got "
                    f"{weights.dtype.name}")
  weights = tf.cast(weights, compute_dtype)
  if checks:
    with tf.control_dependencies(checks):
      weights = tf.identity(weights)
  return weights


def _assert(condition, data, name):
  """A graph-mode `Assert` op, without `tf.debugging.Assert`'s `tf.cond`.

  `tf.debugging.Assert` wraps the op in a `tf.cond` unless all `data` are
  int32 or strings; in a graph that registers a function with the eager
  context, which starts the TensorFlow runtime (after which
  `tf.config.threading` etc. raise).
  """
  return tf.raw_ops.Assert(condition=condition,
                           data=data,
                           summarize=3,
                           name=name)


def _equal_vectors(a, b):
  """Scalar: whether the 1-D `a` and `b` are equal (sizes may differ)."""
  na, nb = tf.size(a), tf.size(b)
  m = tf.minimum(na, nb)
  return tf.logical_and(tf.equal(na, nb), tf.reduce_all(tf.equal(a[:m], b[:m])))


def row_lengths(p):
  """`[nrows]` row lengths, row partition dtype."""
  return p.splits[1:] - p.splits[:-1]


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

  O(num_ids + nrows); never `RaggedTensor.value_rowids()`, which builds a
  `[nrows, longest row]` mask (milliseconds on skewed batches).

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
  if p.kind != CPU:
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


def _row_divisor(p, reduction, dtype):
  """`[nrows, 1]` divisor of the row sums: `max(len, 1)` or its sqrt.

  A divisor, not a reciprocal factor: Grappler's arithmetic optimizer turns
  `dy * factor`, `dy` folded into a constant of ones (the gradient of a sum
  or mean loss), into a `Tile` of the factor, and divides by zero (SIGFPE,
  TF 2.21) computing the tile multiples when the factor is `[0, 1]` (a 0-row
  batch with static shapes). `RealDiv` is not rewritten that way.
  """
  lengths = tf.maximum(tf.cast(row_lengths(p), dtype), 1)
  if reduction == "sqrtn":
    lengths = tf.sqrt(lengths)
  return lengths[:, None]


def pool(values, p, reduction):
  """Reduces `values` `[num_ids, dim]` per row: "sum", "mean" or "sqrtn".

  One custom gradient whatever the formulation: the output gradient
  (divided by the row divisor for "mean" / "sqrtn") gathered at the row ids.

  Returns:
    `(pooled [nrows, dim], row ids [num_ids])`.
  """
  # The row ids: computed by the CPU forward itself (per half of the rows),
  # beforehand otherwise.
  row_ids = [None if p.kind == CPU else _portable_row_ids(p)]

  def grad(dy):
    if reduction != "sum":
      dy = dy / _row_divisor(p, reduction, dy.dtype)
    return tf.gather(dy, row_ids[0])

  @tf.custom_gradient
  def pooled(v):
    if p.kind == CPU:
      out, row_ids[0] = _cpu_pool(v, p, reduction)
    else:
      if p.kind == XLA:
        out = tf.math.unsorted_segment_sum(v, row_ids[0], p.nrows)
      else:
        out = _padded_segment_sum(v, row_ids[0], p.nrows)
      if reduction != "sum":
        out = out / _row_divisor(p, reduction, out.dtype)
    return out, _input_grad_only(grad)

  out = pooled(values)
  return out, row_ids[0]


def sum_per_row(w, row_ids, p):
  """Sums the 1-D `w` per row, `[nrows]`."""
  if p.kind == XLA:

    @tf.custom_gradient
    def unsorted(v):
      return (tf.math.unsorted_segment_sum(v, row_ids,
                                           p.nrows), _gather_rows_grad(row_ids))

    return unsorted(w)
  return _padded_segment_sum(w, row_ids, p.nrows)


def _pad_rows(x, nrows):
  """Pads `x` with zero rows (the trailing empty rows) to `nrows` rows."""
  missing = tf.cast(nrows, tf.int32) - tf.shape(x)[0]
  paddings = [[0, missing]] + [[0, 0]] * (x.shape.rank - 1)
  return tf.pad(x, paddings)


def _padded_segment_sum(values, row_ids, nrows):
  """`SegmentSum` (gradient: a gather) padded with the trailing empty rows."""
  return _pad_rows(tf.math.segment_sum(values, row_ids), nrows)


# The CPU pooling splits the rows in two halves reduced in parallel (the
# segment kernels and `RaggedTensorToSparse` are single-threaded) when the
# work, num_ids * (dim + 24), is at least this: below it, the extra ops and
# the hand-over to a second thread cost more than the half saved (measured
# with benchmarks/combiners.py on 2 cores: workload c, 0.9M, is slower
# halved; b, 4M, and a, 7M, take 0.6x as long).
_MIN_PARALLEL_WORK = 1 << 21


def _cpu_count() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # pragma: no cover - not on Linux.
    return os.cpu_count() or 1


def _cpu_pool(values, p, reduction):
  """CPU pooling: `(pooled [nrows, dim], row ids [num_ids] int64)`.

  Small batches (or one CPU): one `RaggedTensorToSparse` for the row ids and
  one sorted-segment kernel (`_cpu_segment_reduce`). Large ones: the same
  for each half of the rows, the two halves running in parallel on the
  inter-op threads, then `ConcatV2` of the two results. Static shapes pick
  one of the two while the graph is built; without them a `Cond` (a
  `Switch` / `Merge` in TF1 graphs) picks it at run time.
  """

  def whole(values, splits, key_values):
    row_ids = _sparse_row_ids(splits, key_values)
    return _cpu_segment_reduce(values, row_ids, splits, reduction), row_ids

  def halves(values, splits, key_values):
    half = _nrows(splits) // 2
    mid = splits[half]
    first, second = splits[:half + 1], splits[half:] - mid
    ids_first = _sparse_row_ids(first, key_values[:mid])
    ids_second = _sparse_row_ids(second, key_values[mid:])
    out = tf.concat([
        _cpu_segment_reduce(values[:mid], ids_first, first, reduction),
        _cpu_segment_reduce(values[mid:], ids_second, second, reduction)
    ], 0)
    return out, tf.concat([ids_first, ids_second + tf.cast(half, tf.int64)], 0)

  inputs = (values, p.splits, p.key_values)
  if _cpu_count() < 2:
    return whole(*inputs)
  nvals, dim = values.shape
  if p.static_nrows is not None and nvals is not None and dim is not None:
    big = p.static_nrows >= 2 and nvals * (dim + 24) >= _MIN_PARALLEL_WORK
    return halves(*inputs) if big else whole(*inputs)
  shape = tf.shape(values, out_type=tf.int64)
  work = shape[0] * (shape[1] + 24)
  big = tf.logical_and(work >= _MIN_PARALLEL_WORK, p.nrows >= 2)
  return _cond(big, inputs, halves, whole)


def _sparse_row_ids(splits, key_values):
  """CPU: the row id of every id, int64, by `RaggedTensorToSparse`."""
  indices, _, _ = tf.raw_ops.RaggedTensorToSparse(rt_nested_splits=[splits],
                                                  rt_dense_values=key_values)
  return indices[:, 0]


def _cpu_segment_reduce(values, row_ids, splits, reduction):
  """CPU: one sorted-segment kernel, padded for the trailing empty rows.

  `SegmentSum`, or `SegmentMean` (which divides as it reduces: the mean
  costs no more than the sum). The sqrt-n: `SegmentSum`, then one `Mul` of
  the `[nrows, dim]` sums by `rsqrt(max(row length, 1))` -- cheaper than
  `SparseSegmentSqrtN`, whose indirection makes it slower than `SegmentSum`
  by more than that. (A forward `Mul` is safe from Grappler's
  `ReplaceMulWithBroadcastByTile` crash: the sums are not constant; the
  gradient divides.)

  One kernel, not two over halves of the rows: the segment kernels are
  single-threaded, but on a shared machine the halves rarely find a free
  core, and their extra ops then cost more than they save.
  """
  nrows = _nrows(splits)
  if reduction == "mean":
    return _pad_rows(tf.math.segment_mean(values, row_ids), nrows)
  out = _pad_rows(tf.math.segment_sum(values, row_ids), nrows)
  if reduction == "sqrtn":
    lengths = tf.maximum(tf.cast(splits[1:] - splits[:-1], values.dtype), 1)
    out = out * tf.math.rsqrt(lengths)[:, None]
  return out


def _first_n_grad(dy, p, n):
  """Gradient of FirstN w.r.t. the embedding: a gather of `dy`.

  Ids at position >= n get 0: they gather an appended zero row, which costs a
  copy of `dy` -- skipped on CPU when no row is longer than n.
  """
  row_ids, pos = _row_ids_and_positions(p)
  flat_index = row_ids * n + pos
  dim = tf.shape(dy)[2]
  dy_flat = tf.reshape(dy, tf.stack([-1, dim]))

  def masked(dy_flat, flat_index, pos):
    zero_slot = tf.shape(dy_flat, out_type=flat_index.dtype)[0]
    padded = tf.concat([dy_flat, tf.zeros_like(dy_flat[:1])], axis=0)
    return tf.gather(padded, tf.where(pos < n, flat_index, zero_slot))

  def unmasked(dy_flat, flat_index, pos):
    del pos
    return tf.gather(dy_flat, flat_index)

  if p.kind != CPU:
    return masked(dy_flat, flat_index, pos)
  longest = tf.reduce_max(row_lengths(p))
  return _cond(longest <= n, (dy_flat, flat_index, pos), unmasked, masked)


def _cond(pred, inputs, true_fn, false_fn):
  """`true_fn(*inputs)` if `pred` else `false_fn(*inputs)`.

  Eagerly a Python `if`; in a `tf.function` (or any function graph) a
  `tf.cond`. In a plain TF1 graph, a `Switch` of the inputs and a `Merge` of
  the results: `tf.cond` would build functions there (control flow v2) and
  register them with the eager context, which starts the TensorFlow runtime
  while the graph is built (after which `tf.config.threading` etc. raise).
  Both fns must compute their results from their arguments only.
  """
  if tf.executing_eagerly():
    return true_fn(*inputs) if bool(pred) else false_fn(*inputs)
  if tf.compat.v1.get_default_graph().building_function:
    return tf.cond(pred, lambda: true_fn(*inputs), lambda: false_fn(*inputs))
  switched = [tf.raw_ops.Switch(data=x, pred=pred) for x in inputs]
  out_false = false_fn(*[s.output_false for s in switched])
  out_true = true_fn(*[s.output_true for s in switched])
  if isinstance(out_false, tuple):
    return tuple(
        tf.raw_ops.Merge(inputs=[f, t]).output
        for f, t in zip(out_false, out_true))
  return tf.raw_ops.Merge(inputs=[out_false, out_true]).output


# CPU FirstN outputs of at least this many bytes are gathered (GatherV2 copies
# rows on all intra-op threads) instead of written by RaggedTensorToTensor (one
# thread). Below it, the one-thread kernel is faster than gathering from the
# embedding plus a zero row (which copies the embedding); above it, where each
# output is new memory from the OS (glibc's largest mmap threshold is 32 MiB)
# and page faults dominate, the gather takes ~0.6x as long
# (benchmarks/combiners.py, FirstN(50) on workload a: 52 MB).
_FIRST_N_GATHER_MIN_BYTES = 32 << 20


def first_n_cpu(p, n):
  """CPU FirstN: `RaggedTensorToTensor`, or a gather for large outputs.

  Gradient: `_first_n_grad`'s gather of the output gradient.
  """

  def to_tensor(emb, splits):
    rt = tf.RaggedTensor.from_row_splits(emb, splits, validate=False)
    # A known dim matters: with -1 the kernel is ~25% slower.
    dim = p.static_dim
    if dim is None:
      dim = tf.shape(emb, out_type=splits.dtype)[1]
      shape = tf.stack([tf.constant(-1, splits.dtype), n, dim])
    else:
      shape = [None, n, dim]
    return rt.to_tensor(shape=shape)

  def gather(emb, splits):
    # Position k of row r is embedding row splits[r] + k, or the zero row
    # appended at index num_ids when k >= the row's length.
    starts = splits[:-1]
    positions = tf.range(n, dtype=splits.dtype)
    valid = positions[None, :] < (splits[1:] - starts)[:, None]
    zero_row = tf.shape(emb, out_type=splits.dtype)[0]
    index = tf.where(valid, starts[:, None] + positions[None, :], zero_row)
    # Pad, not a concat of `zeros_like(emb[:1])`: that has no row when
    # there are no ids.
    return tf.gather(tf.pad(emb, [[0, 1], [0, 0]]), index)

  @tf.custom_gradient
  def first_n(emb):
    row_bytes = n * emb.dtype.size
    if _cpu_count() < 2:
      out = to_tensor(emb, p.splits)
    elif p.static_nrows is not None and p.static_dim is not None:
      big = p.static_nrows * row_bytes * p.static_dim >= (
          _FIRST_N_GATHER_MIN_BYTES)
      out = gather(emb, p.splits) if big else to_tensor(emb, p.splits)
    else:
      out_bytes = (tf.cast(p.nrows, tf.int64) * row_bytes *
                   tf.shape(emb, out_type=tf.int64)[1])
      out = _cond(out_bytes >= _FIRST_N_GATHER_MIN_BYTES, (emb, p.splits),
                  gather, to_tensor)
    return out, _input_grad_only(lambda dy: _first_n_grad(dy, p, n))

  return first_n(p.embedding)


def first_n_portable(p, n):
  """FirstN from XLA/GPU-friendly ops, gather gradient."""

  @tf.custom_gradient
  def first_n(emb):
    row_ids, pos = _row_ids_and_positions(p)
    nrows = p.nrows
    slots = nrows * n
    target = tf.where(pos < n, row_ids * n + pos, tf.fill(tf.shape(pos), slots))
    # Half types: not every device has a half UnsortedSegmentSum kernel.
    values = tf.cast(emb, tf.float32) if emb.dtype in HALF_TYPES else emb
    out = tf.math.unsorted_segment_sum(values, target, slots + 1)[:-1]
    out = tf.cast(out, emb.dtype)
    dim = tf.shape(emb, out_type=p.splits.dtype)[1]
    out = tf.reshape(out, tf.stack([nrows, n, dim]))
    return out, _input_grad_only(lambda dy: _first_n_grad(dy, p, n))

  return first_n(p.embedding)


def first_n_xla_gather(p, n):
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
