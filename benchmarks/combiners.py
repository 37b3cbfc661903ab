"""Benchmark of monolith-tf's embedding combiners against TensorFlow's own ways.

Compares ``monolith.native_training.embedding_combiners`` (``ReduceSum``,
``ReduceMean``, ``ReduceSqrtN``, ``FirstN``) with the stock TensorFlow ways
of computing the same thing, side by side in one run:

* reductions: ``tf.math.segment_sum`` / ``segment_mean`` (padded for trailing
  empty rows), ``tf.math.unsorted_segment_sum`` / ``_mean`` / ``_sqrt_n``,
  ``tf.sparse.segment_sum`` / ``_mean`` / ``_sqrt_n`` (with ``num_segments``),
  ``tf.reduce_sum`` / ``tf.reduce_mean`` on a ragged tensor,
  ``tf.nn.embedding_lookup_sparse`` (as is -- it drops trailing empty rows,
  so it differs on workload ``a`` -- and padded, with and without
  ``allow_fast_lookup=True``; also on sparse ids prebuilt outside the timed
  function) and ``tf.nn.safe_embedding_lookup_sparse``;
* FirstN: ``ragged[:, :n].to_tensor(shape=...)``, ``ragged.to_tensor(shape)``
  truncation, a gather + mask formulation, and monolith's own formulation
  (``key.to_sparse().indices`` -> ``tf.scatter_nd`` into
  ``[nrows, max(n, longest row), dim]`` -> slice ``[:, :n]``).

The "ragged" input of the ragged baselines is
``tf.RaggedTensor.from_row_splits(embedding, key.row_splits)``; the sparse ids
of the ``embedding_lookup_sparse`` baselines are ``key.to_sparse()`` with the
values replaced by the positions ``0..N-1`` (the params are the embedding
rows). Every variant derives what it needs from ``key`` inside the timed
function, as a user would -- except the ``(prebuilt sp_ids)`` ones, which
get the ``tf.SparseTensor`` of ids ready-made, as from an input pipeline that
produces sparse ids.

Correctness first: every variant's output (and, for fwd+bwd, its gradient) is
compared with a NumPy float64 reference before it is timed. A variant with a
wrong result is never timed nor chosen as the "best baseline". It is reported
as ``differs (expected: <why>)`` when it is a stock TF way that is wrong by
design on this input (``tf.reduce_mean`` on a ragged tensor: NaN for empty
rows; ``embedding_lookup_sparse`` unpadded: drops trailing empty rows), and
as ``WRONG`` (with the reason) otherwise. Variants that fail to build/run are
``ERROR``; under ``--xla`` those without an XLA kernel are
``n/a (no XLA kernel)``.

Modes:

* ``fwd``: the combiner output.
* ``fwdbwd``: output and the vector-Jacobian product with a random cotangent
  (the gradient of ``sum(output * cotangent)``) w.r.t. the embedding, the
  cotangent being fed as the upstream gradient (``output_gradients`` of
  ``tf.GradientTape`` inside ``tf.function``, ``grad_ys`` of ``tf.gradients``
  in TF1 graph mode), as a loss above the combiner would feed it; so no
  variant pays for an extra elementwise product and reduction over its output. Gradient form (``--grad-form``): by
  default (``dense``) the timed step densifies the gradient
  (``tf.convert_to_tensor`` of ``tf.IndexedSlices``), because the embedding
  rows are a dense ``[N, dim]`` tensor (rows looked up from a hash table or
  gathered from a dense variable) whose update consumes a dense per-row
  gradient; variants whose natural gradient is ``IndexedSlices`` pay that
  cost, as a training step would. ``--grad-form natural`` times the form the
  user gets from the tape (IndexedSlices values + indices, no densify). The
  correctness check always densifies (in NumPy, outside the timing).

Executors (``--exec``):

* ``function``: a concrete ``tf.function`` (autograph off) called with the
  input tensors; the run is synchronized by fetching a one-element slice of
  the result to the host.
* ``graph``: TF1 ``tf.compat.v1.Graph`` + ``Session``; inputs live in
  variables initialised once from placeholders (so feeding is not timed and
  Grappler cannot constant-fold the work), ``Session.make_callable`` fetches a
  scalar that depends on all results plus a group of them (no big copies).
* ``xla`` (with ``--xla``): ``tf.function(jit_compile=True)``.

Timing: ``--warmup`` untimed calls, then the median of ``--repeats`` timed
calls, the variants of a case being timed in rounds (one call each per
round, in a fresh random order each round, so load fluctuations of a shared
machine and cache effects of the preceding call hit all alike); the call
overhead (a trivial function / session run with the same inputs and the same
synchronization, timed in the same rounds) is subtracted, the net time being
clamped at 10% of the raw time. Reported: net ms, ratio to the best correct
baseline of the same case, and ratio to a memory-bandwidth floor = (bytes the
op must read + write) / bandwidth, with the bandwidth measured in the same run
(best of: NumPy copy (CPU only), ``x + 1`` and ``tf.reduce_sum(x)`` over a
large buffer on the device, call overhead subtracted).

Workloads (fixed seed; ``--quick`` shrinks them 16x and, unless ``--workloads``
/ ``--ops`` are given, runs only workload ``a`` with sum, mean and firstn10):

* ``a``: batch 4096, row lengths uniform in [0, 40], some empty rows including
  trailing ones, dim 64. The FirstN ops (n = 10, 50) run on this workload
  (``--firstn-workloads``).
* ``b``: batch 1024, Poisson(100) row lengths, dim 16.
* ``c``: skewed: batch 4096, most rows have 1-3 ids, 8 rows have 1,000 ids,
  dim 32.

At the end it prints summary lines (geometric mean of ours / best baseline
over the ``function`` and ``graph`` cases, the worst case, and the geometric
mean of FirstN fwd+bwd ours / monolith's formulation) next to the targets
(<= 0.70, <= 1.00, <= 0.2), writes JSON with ``--json`` and a PNG bar chart
with ``--plot`` (needs matplotlib).

Examples::

  python benchmarks/combiners.py --quick
  python benchmarks/combiners.py --json /tmp/combiners.json
  python benchmarks/combiners.py --workloads a --ops sum,firstn10 --modes fwd
  python benchmarks/combiners.py --device /GPU:0 --xla --plot /tmp/c.png
"""

import argparse
import inspect
import json
import math
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from monolith.native_training import embedding_combiners

SCHEMA_VERSION = 2

ALL_WORKLOADS = ("a", "b", "c")
ALL_OPS = ("sum", "mean", "sqrtn", "firstn10", "firstn50")
ALL_MODES = ("fwd", "fwdbwd")
ALL_EXECS = ("function", "graph")
SUMMARY_EXECS = ("function", "graph")
# --quick defaults: one workload (with empty and trailing empty rows) and the
# ops that cover every distinct code path (sqrtn / firstn50 differ from mean /
# firstn10 only by a constant).
QUICK_WORKLOADS = ("a",)
QUICK_OPS = ("sum", "mean", "firstn10")

TARGET_GEOMEAN = 0.70
TARGET_WORST = 1.00
TARGET_FIRSTN_VS_MONOLITH = 0.2

OURS = "ours"
MONOLITH_FIRSTN = "monolith scatter_nd FirstN"
ELS = "tf.nn.embedding_lookup_sparse"
PREBUILT_ELS = "tf.nn.embedding_lookup_sparse(prebuilt sp_ids)"

STATUS_OK = "ok"
STATUS_WRONG = "WRONG"
STATUS_DIFFERS = "differs"
STATUS_NA = "n/a"
STATUS_ERROR = "ERROR"

_TOLERANCE = {
    "float64": 1e-9,
    "float32": 1e-4,
    "float16": 2e-2,
    "bfloat16": 5e-2,
}

# ----------------------------------------------------------------------------
# Workloads.
# ----------------------------------------------------------------------------


class Workload:
  """A fixed-seed ragged batch of embedding rows plus its NumPy views.

  Attributes:
    name: workload letter.
    description: human-readable description.
    dim: embedding width.
    lengths: int64 row lengths, shape [nrows].
    splits: int64 row splits, shape [nrows + 1].
    ids: int64 feature ids (key.values), shape [N].
    embedding: float64 embedding rows (already rounded to the benchmark
      dtype), shape [N, dim].
  """

  def __init__(self, name, description, lengths, dim, rng, dtype):
    self.name = name
    self.description = description
    self.dim = int(dim)
    self.lengths = np.asarray(lengths, dtype=np.int64)
    self.splits = np.concatenate([[0],
                                  np.cumsum(self.lengths)]).astype(np.int64)
    nnz = int(self.splits[-1])
    self.ids = rng.integers(0, 2**40, size=nnz, dtype=np.int64)
    emb = rng.standard_normal((nnz, self.dim)).astype(np.float32)
    self.embedding = emb.astype(dtype.as_numpy_dtype).astype(np.float64)

  @property
  def nrows(self):
    return int(self.lengths.shape[0])

  @property
  def nnz(self):
    return int(self.splits[-1])

  def info(self):
    """Returns a JSON-able description of the workload."""
    trailing = 0
    for length in self.lengths[::-1]:
      if length:
        break
      trailing += 1
    return {
        "description": self.description,
        "nrows": self.nrows,
        "nnz": self.nnz,
        "dim": self.dim,
        "empty_rows": int(np.sum(self.lengths == 0)),
        "trailing_empty_rows": trailing,
        "max_row_length": int(self.lengths.max()) if self.nrows else 0,
        "mean_row_length": float(self.lengths.mean()) if self.nrows else 0.0,
    }


def make_workload(name, quick, seed, dtype):
  """Generates workload `name` ('a', 'b' or 'c') with a fixed seed."""
  rng = np.random.default_rng([seed, ord(name)])
  scale = 16 if quick else 1
  if name == "a":
    batch = 4096 // scale
    lengths = rng.integers(0, 41, size=batch)
    lengths[rng.choice(batch, size=batch // 32, replace=False)] = 0
    lengths[-3:] = 0  # Trailing empty rows.
    desc = "batch %d, lengths U[0,40], empty rows incl. 3 trailing, dim 64"
    return Workload(name, desc % batch, lengths, 64, rng, dtype)
  if name == "b":
    batch = 1024 // scale
    lengths = rng.poisson(100, size=batch)
    desc = "batch %d, lengths Poisson(100), dim 16" % batch
    return Workload(name, desc, lengths, 16, rng, dtype)
  if name == "c":
    batch = 4096 // scale
    n_long, long_len = (2, 1000) if quick else (8, 1000)
    lengths = rng.integers(1, 4, size=batch)
    lengths[rng.choice(batch, size=n_long, replace=False)] = long_len
    desc = "skewed: batch %d, lengths U[1,3] + %d rows of %d, dim 32" % (
        batch, n_long, long_len)
    return Workload(name, desc, lengths, 32, rng, dtype)
  raise ValueError("unknown workload %r" % name)


# ----------------------------------------------------------------------------
# Ops, NumPy references and the memory-traffic floor.
# ----------------------------------------------------------------------------


def op_first_n(op):
  """Returns n for 'firstnN' ops, else 0."""
  return int(op[len("firstn"):]) if op.startswith("firstn") else 0


def row_scale(op, lengths):
  """Per-row factor applied to row sums for reduce ops ([nrows])."""
  safe = np.maximum(lengths, 1).astype(np.float64)
  if op == "sum":
    return np.ones_like(safe)
  if op == "mean":
    return 1.0 / safe
  if op == "sqrtn":
    return 1.0 / np.sqrt(safe)
  raise ValueError(op)


def reference_output(wl, op):
  """NumPy float64 reference output of `op` on workload `wl`."""
  n = op_first_n(op)
  emb = wl.embedding
  if n:
    out = np.zeros((wl.nrows, n, wl.dim), np.float64)
    for r in range(wl.nrows):
      start, length = wl.splits[r], min(int(wl.lengths[r]), n)
      out[r, :length] = emb[start:start + length]
    return out
  csum = np.concatenate([np.zeros((1, wl.dim)), np.cumsum(emb, axis=0)])
  sums = csum[wl.splits[1:]] - csum[wl.splits[:-1]]
  # Exact zeros for empty rows (the cumsum difference could leave noise).
  sums[wl.lengths == 0] = 0.0
  return sums * row_scale(op, wl.lengths)[:, None]


def reference_grad(wl, op, cotangent):
  """NumPy reference of d sum(out * cotangent) / d embedding ([N, dim])."""
  n = op_first_n(op)
  rowids = np.repeat(np.arange(wl.nrows), wl.lengths)
  if n:
    pos = np.arange(wl.nnz) - wl.splits[rowids]
    grad = np.zeros((wl.nnz, wl.dim), np.float64)
    keep = pos < n
    grad[keep] = cotangent[rowids[keep], pos[keep]]
    return grad
  scale = row_scale(op, wl.lengths)
  return cotangent[rowids] * scale[rowids][:, None]


def floor_bytes(wl, op, mode, itemsize):
  """Bytes an ideal kernel must read + write for (workload, op, mode)."""
  n = op_first_n(op)
  split_bytes = (wl.nrows + 1) * 8
  if n:
    used_rows = int(np.minimum(wl.lengths, n).sum())
    fwd = used_rows * wl.dim * itemsize + split_bytes
    out = wl.nrows * n * wl.dim * itemsize
    ct_needed = used_rows * wl.dim * itemsize
  else:
    fwd = wl.nnz * wl.dim * itemsize + split_bytes
    out = wl.nrows * wl.dim * itemsize
    ct_needed = out
  total = fwd + out
  if mode == "fwdbwd":
    total += ct_needed + wl.nnz * wl.dim * itemsize
  return int(total)


# ----------------------------------------------------------------------------
# Variants. Each takes (key: RaggedTensor of ids, emb: [N, dim]) -> output.
# ----------------------------------------------------------------------------

# `allow_fast_lookup` appeared in TF 2.15's embedding_lookup_sparse.
_HAS_FAST_LOOKUP = ("allow_fast_lookup" in inspect.signature(
    tf.nn.embedding_lookup_sparse).parameters)


def _pad_rows(x, nrows):
  """Pads the leading dim of `x` with zero rows up to `nrows`."""
  pad = tf.cast(nrows, tf.int32) - tf.shape(x)[0]
  paddings = [[0, pad]] + [[0, 0]] * (x.shape.rank - 1)
  return tf.pad(x, paddings)


def _ragged(key, emb):
  return tf.RaggedTensor.from_row_splits(emb, key.row_splits, validate=False)


def _sparse_positions(key, emb):
  """key.to_sparse() with values = positions 0..N-1 (ids into `emb`)."""
  sp = key.to_sparse()
  nnz = tf.shape(emb, out_type=tf.int64)[0]
  return tf.sparse.SparseTensor(sp.indices, tf.range(nnz, dtype=tf.int64),
                                sp.dense_shape)


def _scale_rows(x, key, op):
  """Applies the mean / sqrt-n row scaling to row sums `x`."""
  if op == "sum":
    return x
  lengths = tf.cast(tf.maximum(key.row_lengths(), 1), x.dtype)
  if op == "mean":
    return x / lengths[:, None]
  return x * tf.math.rsqrt(lengths)[:, None]


def ours_combiner(op):
  """Returns this package's combiner object for `op`."""
  n = op_first_n(op)
  if n:
    return embedding_combiners.FirstN(n)
  cls = {"sum": "ReduceSum", "mean": "ReduceMean", "sqrtn": "ReduceSqrtN"}[op]
  if not hasattr(embedding_combiners, cls):
    raise NotImplementedError("embedding_combiners has no %s" % cls)
  return getattr(embedding_combiners, cls)()


def reduce_variants(op):
  """Returns [(name, fn)] of the ways to compute reduce op `op`."""
  tf_combiner = {"sum": "sum", "mean": "mean", "sqrtn": "sqrtn"}[op]
  unsorted = {
      "sum": tf.math.unsorted_segment_sum,
      "mean": tf.math.unsorted_segment_mean,
      "sqrtn": tf.math.unsorted_segment_sqrt_n,
  }[op]
  sparse_seg = {
      "sum": tf.sparse.segment_sum,
      "mean": tf.sparse.segment_mean,
      "sqrtn": tf.sparse.segment_sqrt_n,
  }[op]

  def segment(key, emb):
    rowids = key.value_rowids()
    if op == "mean":
      return _pad_rows(tf.math.segment_mean(emb, rowids), key.nrows())
    out = _pad_rows(tf.math.segment_sum(emb, rowids), key.nrows())
    return _scale_rows(out, key, op)

  def unsorted_segment(key, emb):
    return unsorted(emb, key.value_rowids(), key.nrows())

  def sparse_segment(key, emb):
    nnz = tf.shape(emb, out_type=tf.int64)[0]
    return sparse_seg(emb,
                      tf.range(nnz, dtype=tf.int64),
                      key.value_rowids(),
                      num_segments=key.nrows())

  def ragged_reduce(key, emb):
    rt = _ragged(key, emb)
    if op == "mean":
      return tf.reduce_mean(rt, axis=1)
    return _scale_rows(tf.reduce_sum(rt, axis=1), key, op)

  def ragged_sum_scaled(key, emb):
    return _scale_rows(tf.reduce_sum(_ragged(key, emb), axis=1), key, op)

  def els(fast, pad):

    def fn(key, emb):
      kwargs = {"allow_fast_lookup": True} if fast else {}
      out = tf.nn.embedding_lookup_sparse(emb,
                                          _sparse_positions(key, emb),
                                          None,
                                          combiner=tf_combiner,
                                          **kwargs)
      return _pad_rows(out, key.nrows()) if pad else out

    return fn

  def els_prebuilt(fast, pad):

    def fn(key, emb, sp_ids):
      kwargs = {"allow_fast_lookup": True} if fast else {}
      out = tf.nn.embedding_lookup_sparse(emb,
                                          sp_ids,
                                          None,
                                          combiner=tf_combiner,
                                          **kwargs)
      return _pad_rows(out, key.nrows()) if pad else out

    fn.prebuilt_sparse = True
    return fn

  def safe_els(key, emb):
    return tf.nn.safe_embedding_lookup_sparse(emb,
                                              _sparse_positions(key, emb),
                                              None,
                                              combiner=tf_combiner)

  seg_name = {
      "sum": "tf.math.segment_sum+pad",
      "mean": "tf.math.segment_mean+pad",
      "sqrtn": "tf.math.segment_sum+pad*rsqrt(len)",
  }[op]
  ragged_name = {
      "sum": "tf.reduce_sum(ragged)",
      "mean": "tf.reduce_mean(ragged)",
      "sqrtn": "tf.reduce_sum(ragged)*rsqrt(len)",
  }[op]
  variants = [
      (seg_name, segment),
      ("tf.math.unsorted_segment_%s" % {
          "sum": "sum",
          "mean": "mean",
          "sqrtn": "sqrt_n"
      }[op], unsorted_segment),
      ("tf.sparse.segment_%s" % {
          "sum": "sum",
          "mean": "mean",
          "sqrtn": "sqrt_n"
      }[op], sparse_segment),
      (ragged_name, ragged_reduce),
  ]
  if op == "mean":
    variants.append(("tf.reduce_sum(ragged)/max(len,1)", ragged_sum_scaled))
  variants += [
      ("tf.nn.embedding_lookup_sparse", els(False, False)),
      ("tf.nn.embedding_lookup_sparse+pad", els(False, True)),
  ]
  if _HAS_FAST_LOOKUP:
    variants.append(("tf.nn.embedding_lookup_sparse(fast)+pad", els(True,
                                                                    True)))
  variants.append(("tf.nn.safe_embedding_lookup_sparse", safe_els))
  # The sparse ids ready-made, outside the timed function: what a pipeline
  # feeding tf.SparseTensors would give embedding_lookup_sparse.
  variants.append((PREBUILT_ELS, els_prebuilt(False, False)))
  if _HAS_FAST_LOOKUP:
    variants.append(("tf.nn.embedding_lookup_sparse(prebuilt sp_ids, fast)+pad",
                     els_prebuilt(True, True)))
  return variants


def first_n_variants(n, dim):
  """Returns [(name, fn)] of the ways to compute FirstN(n)."""

  def slice_to_tensor(key, emb):
    return _ragged(key, emb)[:, :n].to_tensor(shape=[None, n, dim])

  def to_tensor_truncate(key, emb):
    return _ragged(key, emb).to_tensor(shape=[None, n, dim])

  def gather_mask(key, emb):
    pos = tf.range(n, dtype=tf.int64)
    mask = pos[None, :] < key.row_lengths()[:, None]
    idx = tf.where(mask, key.row_starts()[:, None] + pos[None, :], 0)
    gathered = tf.gather(emb, idx)
    return gathered * tf.cast(mask, emb.dtype)[:, :, None]

  def monolith_scatter_nd(key, emb):
    sp = key.to_sparse()
    max_len = tf.maximum(sp.dense_shape[1], n)
    shape = tf.stack([key.nrows(), max_len, dim])
    out = tf.scatter_nd(sp.indices, emb, shape)
    return out[:, :n]

  return [
      ("ragged[:, :n].to_tensor(shape)", slice_to_tensor),
      ("ragged.to_tensor(shape) truncation", to_tensor_truncate),
      ("gather+mask", gather_mask),
      (MONOLITH_FIRSTN, monolith_scatter_nd),
  ]


def all_variants(op, dim):
  """Returns [(name, fn)] for `op`, ours first."""

  def ours(key, emb):
    return ours_combiner(op).combine(key, emb)

  n = op_first_n(op)
  rest = first_n_variants(n, dim) if n else reduce_variants(op)
  return [(OURS, ours)] + rest


# ----------------------------------------------------------------------------
# Building the timed computations.
# ----------------------------------------------------------------------------


def input_specs(wl, cotangent, dtype):
  """[(name, numpy value, tf dtype)] of the inputs of every variant.

  The embedding, ids, row splits and cotangent, plus the sparse ids that the
  `prebuilt_sparse` variants take ready-made (built outside the timed
  function, as a pipeline producing `tf.SparseTensor`s would): the
  `[N, 2]` indices (row, position), values `0..N-1` (positions into the
  embedding) and the dense shape.
  """
  rowids = np.repeat(np.arange(wl.nrows), wl.lengths)
  positions = np.arange(wl.nnz) - wl.splits[rowids]
  longest = int(wl.lengths.max()) if wl.nrows else 0
  return [
      ("embedding", wl.embedding, dtype),
      ("ids", wl.ids, tf.int64),
      ("splits", wl.splits, tf.int64),
      ("cotangent", cotangent, dtype),
      ("sp_indices", np.stack([rowids, positions], axis=1).reshape(
          (-1, 2)).astype(np.int64), tf.int64),
      ("sp_values", np.arange(wl.nnz, dtype=np.int64), tf.int64),
      ("sp_shape", np.array([wl.nrows, longest], np.int64), tf.int64),
  ]


def _sync_scalar(tensors):
  """A float32 scalar depending on one element of every tensor in `tensors`."""
  parts = [
      tf.reduce_sum(tf.cast(tf.reshape(t, [-1])[:1], tf.float32))
      for t in tensors
  ]
  return tf.add_n(parts)


def _build_step(fn, mode, grad_form, inputs, gradients):
  """Builds the computation of one variant.

  Args:
    fn: variant function (key, emb) -> output, or (key, emb, sp_ids) ->
      output when it has the attribute `prebuilt_sparse`.
    mode: 'fwd' or 'fwdbwd'.
    grad_form: 'dense' or 'natural'.
    inputs: the input tensors: emb, ids, splits, cotangent (unused for fwd),
      and the prebuilt sparse ids' indices, values and dense shape.
    gradients: callable (loss_fn) -> (output, grad) used for fwdbwd; differs
      between eager/tf.function (GradientTape) and TF1 graphs (tf.gradients).

  Returns:
    A dict with 'output', optionally 'grad' or ('grad_values',
    'grad_indices'), and the list of result tensors under 'results'.
  """
  emb, ids, splits, cotangent, sp_indices, sp_values, sp_shape = inputs
  key = tf.RaggedTensor.from_row_splits(ids, splits, validate=False)
  if getattr(fn, "prebuilt_sparse", False):
    sp_ids = tf.sparse.SparseTensor(sp_indices, sp_values, sp_shape)
    forward = lambda: fn(key, emb, sp_ids)
  else:
    forward = lambda: fn(key, emb)
  if mode == "fwd":
    out = forward()
    return {"output": out, "results": [out]}
  out, grad = gradients(forward, cotangent)
  res = {"output": out}
  if isinstance(grad, tf.IndexedSlices) and grad_form == "natural":
    res["grad_values"] = grad.values
    res["grad_indices"] = grad.indices
  else:
    res["grad"] = tf.convert_to_tensor(grad)
  res["results"] = [v for k, v in res.items() if k != "results"]
  return res


def _tape_gradients(emb):
  """Returns a `gradients` callable for _build_step using GradientTape."""

  def gradients(forward, cotangent):
    with tf.GradientTape() as tape:
      tape.watch(emb)
      out = forward()
    grad = tape.gradient(out,
                         emb,
                         output_gradients=tf.cast(cotangent, out.dtype),
                         unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return out, grad

  return gradients


def _graph_gradients(emb):
  """Returns a `gradients` callable for _build_step using tf.gradients."""

  def gradients(forward, cotangent):
    out = forward()
    grad = tf.compat.v1.gradients(out, [emb],
                                  grad_ys=cotangent,
                                  unconnected_gradients="zero")[0]
    return out, grad

  return gradients


def _result_keys(res):
  return [
      k for k in ("output", "grad", "grad_values", "grad_indices") if k in res
  ]


class FunctionRunner:
  """Runs variants as concrete tf.functions (optionally XLA-compiled)."""

  def __init__(self, device, xla):
    self.device = device
    self.xla = xla
    self.name = "xla" if xla else "function"

  def prepare(self, wl, op, mode, cotangent, dtype):
    """Places the inputs of one case on the device."""
    del op
    with tf.device(self.device):
      self._inputs = [
          tf.identity(tf.constant(value, dtype=vdtype))
          for _, value, vdtype in input_specs(wl, cotangent, dtype)
      ]
    self._mode = mode

  def close(self):
    self._inputs = None

  def compile(self, fn, grad_form, mode=None):
    """Returns (run() -> dict of numpy results, timed() -> None).

    Args:
      fn: variant function (key, emb) -> output.
      grad_form: 'dense' or 'natural'.
      mode: overrides the case's mode ('fwd' / 'fwdbwd') when given.
    """
    keys = []
    device = self.device
    mode = mode or self._mode

    def step(*inputs):
      with tf.device(device):
        res = _build_step(fn, mode, grad_form, inputs,
                          _tape_gradients(inputs[0]))
        keys[:] = _result_keys(res)
        results = [res[k] for k in keys]
        return results + [_sync_scalar(results)]

    concrete = tf.function(
        step, autograph=False,
        jit_compile=True if self.xla else None).get_concrete_function(
            *self._inputs)
    inputs = self._inputs

    def run():
      values = concrete(*inputs)
      return {k: v.numpy() for k, v in zip(keys, values)}

    def timed():
      concrete(*inputs)[-1].numpy()

    return run, timed

  def overhead(self):
    """Returns a timed() callable of a trivial step with the same inputs."""

    def trivial(emb, *unused):
      del unused
      with tf.device(self.device):
        return [_sync_scalar([emb])]

    concrete = tf.function(trivial,
                           autograph=False).get_concrete_function(*self._inputs)
    inputs = self._inputs
    return lambda: concrete(*inputs)[-1].numpy()


class GraphRunner:
  """Runs variants in a TF1 graph with a Session; inputs live in variables."""

  name = "graph"

  def __init__(self, device):
    self.device = device

  def prepare(self, wl, op, mode, cotangent, dtype):
    """Creates graph, input variables and session for one case."""
    del op
    self._mode = mode
    self._graph = tf.Graph()
    feeds = {}
    with self._graph.as_default(), tf.device(self.device):
      variables = []
      for name, value, vdtype in input_specs(wl, cotangent, dtype):
        ph = tf.compat.v1.placeholder(vdtype, value.shape, name=name + "_ph")
        feeds[ph] = value.astype(vdtype.as_numpy_dtype)
        var = tf.compat.v1.Variable(ph, trainable=False, name=name)
        variables.append(var)
      init = tf.compat.v1.variables_initializer(variables)
      self._inputs = [v.value() for v in variables]
    # Soft placement as in a typical TF1 GPU setup: ops without a kernel on
    # --device (e.g. int32 shape math on GPU) fall back to the CPU.
    config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
    self._sess = tf.compat.v1.Session(graph=self._graph, config=config)
    self._sess.run(init, feed_dict=feeds)

  def close(self):
    self._sess.close()
    self._sess = None
    self._graph = None

  def compile(self, fn, grad_form, mode=None):
    """Returns (run() -> dict of numpy results, timed() -> None).

    Args:
      fn: variant function (key, emb) -> output.
      grad_form: 'dense' or 'natural'.
      mode: overrides the case's mode ('fwd' / 'fwdbwd') when given.
    """
    with self._graph.as_default(), tf.device(self.device):
      res = _build_step(fn, mode or self._mode, grad_form, self._inputs,
                        _graph_gradients(self._inputs[0]))
      keys = _result_keys(res)
      results = [res[k] for k in keys]
      sync = _sync_scalar(results)
      group = tf.group(*results)
    sess = self._sess
    timed_callable = sess.make_callable([sync, group])

    def run():
      values = sess.run(results)
      return dict(zip(keys, values))

    return run, timed_callable

  def overhead(self):
    """Returns a timed() callable of a trivial run with the same inputs."""
    with self._graph.as_default(), tf.device(self.device):
      sync = _sync_scalar([self._inputs[0]])
      group = tf.group(sync)
    return self._sess.make_callable([sync, group])


# ----------------------------------------------------------------------------
# Checking and timing.
# ----------------------------------------------------------------------------


def compare(name, got, want, tol):
  """Returns (ok, detail, max_abs_err) comparing `got` with `want`."""
  got = np.asarray(got)
  if got.shape != want.shape:
    return False, "%s shape %s != expected %s" % (name, list(
        got.shape), list(want.shape)), None
  got = got.astype(np.float64)
  if not np.all(np.isfinite(got)):
    return False, "%s has NaN/Inf" % name, None
  err = float(np.max(np.abs(got - want))) if got.size else 0.0
  bound = tol * max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
  if err > bound:
    return False, "%s max abs err %.3g > %.3g" % (name, err, bound), err
  return True, "", err


def check_results(results, want_out, want_grad, nnz, tol):
  """Checks a variant's results; returns (ok, detail, check-record)."""
  record = {}
  ok, detail, err = compare("output", results["output"], want_out, tol)
  record["output"] = {"ok": ok, "max_abs_err": err}
  if not ok:
    return False, detail, record
  if want_grad is None:
    return True, "", record
  if "grad" in results:
    grad = results["grad"]
  else:
    values = np.asarray(results["grad_values"], np.float64)
    grad = np.zeros((nnz,) + values.shape[1:], np.float64)
    np.add.at(grad, np.asarray(results["grad_indices"]), values)
  ok, detail, err = compare("grad", grad, want_grad, tol)
  record["grad"] = {
      "ok": ok,
      "max_abs_err": err,
      "form": "dense" if "grad" in results else "IndexedSlices"
  }
  return ok, detail, record


def median_time(timed, warmup, repeats):
  """Median wall time (s) of `repeats` calls of `timed` after a warm-up."""
  for _ in range(warmup):
    timed()
  samples = []
  for _ in range(repeats):
    start = time.perf_counter()
    timed()
    samples.append(time.perf_counter() - start)
  return statistics.median(samples)


def measure_bandwidth(device, megabytes, repeats, dtype=tf.float32):
  """Measures memory bandwidth (bytes/s) on `device`; returns a dict."""
  count = int(megabytes * 2**20) // 4
  measurements = []
  with tf.device(device):
    buf = tf.identity(tf.random.uniform([count], dtype=dtype))

  def add_one(x):
    with tf.device(device):
      y = x + 1.0
      return y, y[:1]

  def reduce(x):
    with tf.device(device):
      return tf.reduce_sum(x)

  def trivial(x):
    with tf.device(device):
      return x[:1]

  add_cf = tf.function(add_one, autograph=False).get_concrete_function(buf)
  red_cf = tf.function(reduce, autograph=False).get_concrete_function(buf)
  nop_cf = tf.function(trivial, autograph=False).get_concrete_function(buf)
  nbytes = count * 4
  overhead = median_time(lambda: nop_cf(buf).numpy(), 2, repeats)
  for method, timed, moved in (
      ("tf x+1 (read+write)", lambda: add_cf(buf)[1].numpy(), 2 * nbytes),
      ("tf.reduce_sum (read)", lambda: red_cf(buf).numpy(), nbytes),
  ):
    raw = median_time(timed, 2, repeats)
    seconds = max(raw - overhead, 0.5 * raw)  # Call overhead subtracted.
    measurements.append({
        "method": method,
        "bytes": moved,
        "seconds": seconds,
        "raw_seconds": raw,
        "bytes_per_s": moved / seconds
    })
  del buf, add_cf, red_cf, nop_cf
  if "GPU" not in device.upper():
    src = np.random.default_rng(0).random(count, dtype=np.float32)
    dst = np.empty_like(src)
    seconds = median_time(lambda: np.copyto(dst, src), 2, repeats)
    measurements.append({
        "method": "numpy copyto (read+write)",
        "bytes": 2 * nbytes,
        "seconds": seconds,
        "bytes_per_s": 2 * nbytes / seconds
    })
  best = max(m["bytes_per_s"] for m in measurements)
  return {
      "bytes_per_s": best,
      "buffer_bytes": nbytes,
      "measurements": measurements
  }


def _error_message(e):
  lines = str(e).strip().splitlines()
  return lines[0][:200] if lines else type(e).__name__


def check_variant(runner, fn, mode, args, want_out, want_grad, nnz, tol, rec):
  """Builds and checks one variant; updates `rec`; returns timed() or None.

  A variant that fails to build or run in fwd+bwd mode is re-run forward
  only: if its forward output is wrong (e.g. missing trailing rows, so the
  cotangent does not even broadcast) it is reported as WRONG, not ERROR.
  """
  try:
    run, timed = runner.compile(fn, args.grad_form)
    results = run()
  except Exception as e:  # pylint: disable=broad-except
    if runner.name == "xla":
      rec.update(status=STATUS_NA, detail="no XLA kernel: " + _error_message(e))
      return None
    rec.update(status=STATUS_ERROR,
               detail="%s: %s" % (type(e).__name__, _error_message(e)))
    if mode == "fwdbwd":
      try:
        fwd_results = runner.compile(fn, args.grad_form, mode="fwd")[0]()
      except Exception:  # pylint: disable=broad-except
        return None
      ok, detail, check = check_results(fwd_results, want_out, None, nnz, tol)
      if not ok:
        rec.update(status=STATUS_WRONG,
                   checked=True,
                   check=check,
                   detail=detail + " (fwd+bwd failed)")
    return None
  ok, detail, check = check_results(results, want_out, want_grad, nnz, tol)
  rec.update(checked=True, check=check)
  if not ok:
    rec.update(status=STATUS_WRONG, detail=detail)
    return None
  rec.update(status=STATUS_OK, detail="")
  return timed


def interleaved_times(timed_fns, warmup, repeats):
  """Median wall time (s) of each callable, timed in shuffled rounds.

  Rounds (one call of each per round) spread load fluctuations of a shared
  machine evenly over the variants being compared; a fresh random order each
  round keeps any one variant from always following the same other one
  (measured here: that alone moved a variant's time by up to 30%).
  """
  for fn in timed_fns:
    for _ in range(warmup):
      fn()
  samples = [[] for _ in timed_fns]
  shuffler = np.random.default_rng(1234)
  for _ in range(repeats):
    for i in shuffler.permutation(len(timed_fns)):
      fn, out = timed_fns[i], samples[i]
      start = time.perf_counter()
      fn()
      out.append(time.perf_counter() - start)
  return [statistics.median(s) for s in samples]


def expected_difference(rec, wl):
  """Why a stock baseline is wrong by design on `wl`, or None.

  Args:
    rec: the variant record after its check (status WRONG and a detail).
    wl: the workload.

  Returns:
    "NaN for empty rows" (`tf.reduce_mean` on a ragged tensor), "drops
    trailing empty rows" (`embedding_lookup_sparse` unpadded), or None when
    the variant is not wrong, is ours, or is wrong in another way.
  """
  if rec["status"] != STATUS_WRONG or rec["is_ours"]:
    return None
  detail = rec.get("detail", "")
  if (rec["name"] == "tf.reduce_mean(ragged)" and np.any(wl.lengths == 0) and
      "NaN" in detail):
    return "NaN for empty rows"
  trailing = wl.info()["trailing_empty_rows"]
  if rec["name"] in (ELS, PREBUILT_ELS) and trailing and (
      "output shape [%d," % (wl.nrows - trailing)) in detail:
    return "drops trailing empty rows"
  return None


def run_case(runner, wl, op, mode, args, dtype, bandwidth):
  """Checks, then times every variant of one case; returns the case dict.

  The call overhead (a trivial computation with the same inputs and
  synchronization) is timed in the same rounds and subtracted; the net time
  is clamped at 10% of the raw time so that noise cannot make it zero or
  negative.
  """
  n = op_first_n(op)
  rng = np.random.default_rng([args.seed, ord(wl.name), len(op), 7])
  out_shape = (wl.nrows, n, wl.dim) if n else (wl.nrows, wl.dim)
  cotangent = rng.standard_normal(out_shape).astype(np.float32)
  cotangent = cotangent.astype(dtype.as_numpy_dtype).astype(np.float64)
  want_out = reference_output(wl, op)
  want_grad = reference_grad(wl, op, cotangent) if mode == "fwdbwd" else None
  tol = _TOLERANCE[dtype.name]
  nbytes = floor_bytes(wl, op, mode, dtype.size)
  case = {
      "workload": wl.name,
      "op": op,
      "mode": mode,
      "exec": runner.name,
      "floor_bytes": nbytes,
      "floor_ms": 1e3 * nbytes / bandwidth,
      "variants": [],
  }
  runner.prepare(wl, op, mode, cotangent, dtype)
  try:
    timed_fns, timed_recs = [runner.overhead()], [None]
    timed_fns[0]()  # First call builds the executor.
    for name, fn in all_variants(op, wl.dim):
      if name != OURS and args.only_ours:
        continue
      rec = {"name": name, "is_ours": name == OURS, "checked": False}
      case["variants"].append(rec)
      timed = check_variant(runner, fn, mode, args, want_out, want_grad, wl.nnz,
                            tol, rec)
      reason = expected_difference(rec, wl)
      if reason:
        rec.update(status=STATUS_DIFFERS, expected=reason)
      if timed is not None:
        timed_fns.append(timed)
        timed_recs.append(rec)
    times = interleaved_times(timed_fns, args.warmup, args.repeats)
  finally:
    runner.close()
  overhead_ms = times[0] * 1e3
  case["overhead_ms"] = overhead_ms
  for rec, seconds in zip(timed_recs[1:], times[1:]):
    raw = seconds * 1e3
    net = max(raw - overhead_ms, 0.1 * raw)
    rec.update(raw_ms=raw, ms=net, ratio_to_floor=net / case["floor_ms"])
  finish_case(case)
  return case


def best_baseline(variants):
  """Returns the fastest correct non-ours variant dict, or None."""
  ok = [v for v in variants if not v["is_ours"] and v["status"] == STATUS_OK]
  return min(ok, key=lambda v: v["ms"]) if ok else None


def finish_case(case, fallback=None):
  """Fills best baseline and ratios of a case (in place).

  Args:
    case: the case dict.
    fallback: optional best-baseline dict used when the case has no correct
      baseline of its own (XLA cases use the tf.function baseline).
  """
  best = best_baseline(case["variants"])
  source = case["exec"]
  if best is None and fallback is not None:
    best, source = fallback, "function"
  case["best_baseline"] = ({
      "name": best["name"],
      "ms": best["ms"],
      "exec": source
  } if best else None)
  ours = next((v for v in case["variants"] if v["is_ours"]), None)
  case["ours_status"] = ours["status"] if ours else None
  case["ours_ms"] = ours.get("ms") if ours else None
  for v in case["variants"]:
    v["ratio_to_best_baseline"] = (v["ms"] / best["ms"] if best and
                                   v["status"] == STATUS_OK else None)
  case["ratio"] = ours["ratio_to_best_baseline"] if ours else None
  mono = next((v for v in case["variants"]
               if v["name"] == MONOLITH_FIRSTN and v["status"] == STATUS_OK),
              None)
  case["ratio_vs_monolith"] = (ours["ms"] / mono["ms"] if mono and ours and
                               ours["status"] == STATUS_OK else None)


def geomean(values):
  values = [v for v in values if v is not None and v > 0]
  if not values:
    return None
  return math.exp(sum(math.log(v) for v in values) / len(values))


def case_label(case):
  return "%s/%s/%s/%s" % (case["workload"], case["op"], case["mode"],
                          case["exec"])


def summarize(cases, judge=True):
  """Computes the summary dict over all cases.

  Args:
    cases: the case records of the run.
    judge: whether to give PASS/MISS verdicts against the targets (not for
      --quick, whose tiny sizes measure per-op overhead).
  """
  main = [
      c for c in cases if c["exec"] in SUMMARY_EXECS and c["ratio"] is not None
  ]
  ratios = [c["ratio"] for c in main]
  worst = max(main, key=lambda c: c["ratio"]) if main else None
  firstn = [
      c["ratio_vs_monolith"]
      for c in cases
      if c["exec"] in SUMMARY_EXECS and c["op"].startswith("firstn") and
      c["mode"] == "fwdbwd" and c["ratio_vs_monolith"] is not None
  ]
  xla = [c["ratio"] for c in cases if c["exec"] == "xla" and c["ratio"]]
  gm = geomean(ratios)
  fn_gm = geomean(firstn)

  def verdict(value, target):
    if value is None:
      return "n/a"
    if not judge:
      # --quick sizes are dominated by per-op overhead: a smoke test only.
      return "not judged (--quick)"
    return "PASS" if value <= target else "MISS"

  return {
      "n_cases": len(cases),
      "n_compared": len(main),
      "geomean_ours_over_best_baseline": gm,
      "worst": ({
          "case": case_label(worst),
          "ratio": worst["ratio"],
          "best_baseline": worst["best_baseline"]["name"]
      } if worst else None),
      "firstn_fwdbwd_ours_over_monolith_geomean": fn_gm,
      "firstn_fwdbwd_cases": len(firstn),
      "xla_geomean_ours_over_best_baseline": geomean(xla),
      "ours_not_ok": [
          "%s: %s" % (case_label(c), c["ours_status"])
          for c in cases
          if c["ours_status"] != STATUS_OK
      ],
      "wrong_variants": [
          "%s: %s (%s)" % (case_label(c), v["name"], v.get("detail", ""))
          for c in cases
          for v in c["variants"]
          if v["status"] == STATUS_WRONG
      ],
      "expected_differences": [
          "%s: %s (expected: %s)" % (case_label(c), v["name"], v["expected"])
          for c in cases
          for v in c["variants"]
          if v["status"] == STATUS_DIFFERS
      ],
      "targets": {
          "geomean": {
              "target": TARGET_GEOMEAN,
              "measured": gm,
              "verdict": verdict(gm, TARGET_GEOMEAN)
          },
          "worst": {
              "target":
                  TARGET_WORST,
              "measured":
                  worst["ratio"] if worst else None,
              "verdict":
                  verdict(worst["ratio"] if worst else None, TARGET_WORST)
          },
          "firstn_fwdbwd_vs_monolith": {
              "target": TARGET_FIRSTN_VS_MONOLITH,
              "measured": fn_gm,
              "verdict": verdict(fn_gm, TARGET_FIRSTN_VS_MONOLITH)
          },
      },
  }


# ----------------------------------------------------------------------------
# Output.
# ----------------------------------------------------------------------------


def _fmt(value, spec, missing="-", suffix=""):
  """Formats `value` with `spec` (+ suffix), or `missing` when None."""
  return missing if value is None else format(value, spec) + suffix


def format_case(case, wl):
  """Returns the table block of one case as a string."""
  lines = [
      "== %s | %s, N=%d | overhead %.3f ms | floor %.3f ms ==" %
      (case_label(case), wl.description, wl.nnz, case["overhead_ms"],
       case["floor_ms"])
  ]
  lines.append("  %-56s %10s %10s %9s %9s  %s" %
               ("variant", "ms", "raw ms", "vs best", "vs floor", "status"))
  best = case["best_baseline"]
  for v in case["variants"]:
    status = v["status"]
    if v["status"] == STATUS_NA:
      status = "n/a (no XLA kernel)"
    elif v["status"] == STATUS_DIFFERS:
      status = "differs (expected: %s)" % v["expected"]
    elif v["status"] != STATUS_OK:
      status = "%s (%s)" % (v["status"], v.get("detail", ""))
    elif best and not v["is_ours"] and v["name"] == best["name"]:
      status = "ok  <- best baseline"
    name = ("ours: " + ours_name(case["op"])) if v["is_ours"] else v["name"]
    lines.append(
        "  %-56s %10s %10s %9s %9s  %s" %
        (name[:56], _fmt(v.get("ms"), ".3f"), _fmt(v.get("raw_ms"), ".3f"),
         _fmt(v.get("ratio_to_best_baseline"), ".2f", suffix="x"),
         _fmt(v.get("ratio_to_floor"), ".1f", suffix="x"), status))
  return "\n".join(lines)


def ours_name(op):
  n = op_first_n(op)
  if n:
    return "FirstN(%d)" % n
  return {"sum": "ReduceSum", "mean": "ReduceMean", "sqrtn": "ReduceSqrtN"}[op]


def format_overview(cases):
  """Returns a one-line-per-case overview table as a string."""
  lines = [
      "%-26s %10s %10s %8s %9s  %s" %
      ("case", "ours ms", "best ms", "ratio", "vs floor", "best baseline")
  ]
  for c in cases:
    best = c["best_baseline"]
    ours = next((v for v in c["variants"] if v["is_ours"]), {})
    ratio = _fmt(c["ratio"], ".2f")
    if c["ours_status"] != STATUS_OK:
      ratio = str(c["ours_status"])
    lines.append(
        "%-26s %10s %10s %8s %9s  %s" %
        (case_label(c), _fmt(c["ours_ms"],
                             ".3f"), _fmt(best and best["ms"], ".3f"), ratio,
         _fmt(ours.get("ratio_to_floor"), ".1f"),
         (best["name"] +
          ("" if best["exec"] == c["exec"] else " [%s]" % best["exec"]))
         if best else "-"))
  return "\n".join(lines)


def format_summary(summary):
  """Returns the summary lines as a string."""
  t = summary["targets"]
  worst = summary["worst"]
  lines = [
      "SUMMARY over %d cases (%s):" %
      (summary["n_compared"], "+".join(SUMMARY_EXECS)),
      "  geomean ours / best baseline      : %s   (target <= %.2f: %s)" %
      (_fmt(summary["geomean_ours_over_best_baseline"],
            ".3f"), TARGET_GEOMEAN, t["geomean"]["verdict"]),
      "  worst case ours / best baseline   : %s%s   (target <= %.2f: %s)" %
      (_fmt(worst and worst["ratio"], ".3f"), " [%s vs %s]" %
       (worst["case"], worst["best_baseline"]) if worst else "", TARGET_WORST,
       t["worst"]["verdict"]),
      "  FirstN fwd+bwd ours / monolith    : %s   (geomean of %d; target "
      "<= %.2f: %s)" %
      (_fmt(summary["firstn_fwdbwd_ours_over_monolith_geomean"],
            ".3f"), summary["firstn_fwdbwd_cases"], TARGET_FIRSTN_VS_MONOLITH,
       t["firstn_fwdbwd_vs_monolith"]["verdict"]),
  ]
  if summary["xla_geomean_ours_over_best_baseline"] is not None:
    lines.append("  XLA: geomean ours(jit) / best baseline: %.3f" %
                 summary["xla_geomean_ours_over_best_baseline"])
  if summary["ours_not_ok"]:
    lines.append("  ours NOT ok in: " + "; ".join(summary["ours_not_ok"]))
  reasons = sorted({
      d.rsplit("(expected: ", 1)[1].rstrip(")")
      for d in summary["expected_differences"]
  })
  lines.append("  baselines that differ as expected (excluded): %d%s" %
               (len(summary["expected_differences"]),
                " (%s)" % "; ".join(reasons) if reasons else ""))
  lines.append("  baselines WRONG unexpectedly (excluded): %d" %
               len(summary["wrong_variants"]))
  return "\n".join(lines)


def write_plot(path, cases, summary):
  """Draws a bar chart of ours / best-baseline ratios per workload (PNG)."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise SystemExit("--plot needs matplotlib (pip install matplotlib): %s" %
                     e) from e
  workloads = sorted({c["workload"] for c in cases})
  fig, axes = plt.subplots(len(workloads),
                           1,
                           figsize=(12, 3.5 * len(workloads)),
                           squeeze=False)
  for ax, name in zip(axes[:, 0], workloads):
    sel = [c for c in cases if c["workload"] == name]
    labels = ["%s/%s/%s" % (c["op"], c["mode"], c["exec"]) for c in sel]
    values = [c["ratio"] for c in sel]
    colors = [
        "tab:green" if v <= 1.0 else "tab:red" for v in values if v is not None
    ]
    xs = [i for i, v in enumerate(values) if v is not None]
    ax.bar(xs, [values[i] for i in xs], color=colors)
    for i, v in enumerate(values):
      if v is None:
        ax.text(i, 1.0, "n/a", ha="center", fontsize=7)
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(TARGET_GEOMEAN,
               color="tab:blue",
               linestyle="--",
               linewidth=0.8,
               label="geomean target %.2f" % TARGET_GEOMEAN)
    ax.set_xticks(range(len(sel)))
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("ours / best baseline (log)")
    ax.set_title("workload %s" % name)
    ax.legend(fontsize=7)
  gm = summary["geomean_ours_over_best_baseline"]
  fig.suptitle("monolith-tf combiners vs best TF baseline (geomean %s)" %
               _fmt(gm, ".3f"))
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


# ----------------------------------------------------------------------------
# Main.
# ----------------------------------------------------------------------------


def _csv(allowed):
  """argparse type: comma-separated subset of `allowed`."""

  def parse(text):
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if bad or not items:
      raise argparse.ArgumentTypeError("choose from %s (got %r)" %
                                       (",".join(allowed), text))
    return items

  return parse


def parse_args(argv=None):
  """Parses command-line flags."""
  p = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      epilog=__doc__.split("\n\n", 1)[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workloads",
                 type=_csv(ALL_WORKLOADS),
                 default=None,
                 help="workloads to run (a: U[0,40] lengths dim 64; "
                 "b: Poisson(100) dim 16; c: skewed dim 32) "
                 "(default: a,b,c; with --quick: %s)" %
                 ",".join(QUICK_WORKLOADS))
  p.add_argument("--ops",
                 type=_csv(ALL_OPS),
                 default=None,
                 help="ops: sum, mean, sqrtn, firstn10, firstn50 "
                 "(default: all; with --quick: %s)" % ",".join(QUICK_OPS))
  p.add_argument("--firstn-workloads",
                 type=_csv(ALL_WORKLOADS),
                 default=["a"],
                 help="workloads on which the firstn ops run (default: a)")
  p.add_argument("--modes",
                 type=_csv(ALL_MODES),
                 default=list(ALL_MODES),
                 help="fwd (forward) and/or fwdbwd (forward + gradient) "
                 "(default: fwd,fwdbwd)")
  p.add_argument("--exec",
                 dest="execs",
                 type=_csv(ALL_EXECS),
                 default=list(ALL_EXECS),
                 help="executors: function (tf.function) and/or graph "
                 "(TF1 Graph + Session) (default: function,graph)")
  p.add_argument("--xla",
                 action="store_true",
                 help="also run every variant under "
                 "tf.function(jit_compile=True); those that do not compile "
                 "are reported as n/a")
  p.add_argument("--device",
                 default="/CPU:0",
                 help="device to place inputs and ops on, e.g. /GPU:0 "
                 "(default: /CPU:0)")
  p.add_argument("--dtype",
                 default="float32",
                 choices=sorted(_TOLERANCE),
                 help="embedding dtype (default: float32)")
  p.add_argument(
      "--grad-form",
      choices=("dense", "natural"),
      default="dense",
      help="fwdbwd: time a densified gradient (dense) or the tape's "
      "natural form, IndexedSlices left as is (natural) (default: dense)")
  p.add_argument("--quick",
                 action="store_true",
                 help="smoke test: workloads shrunk 16x, few repeats, and "
                 "unless given explicitly --workloads %s --ops %s "
                 "(timings not meaningful)" %
                 (",".join(QUICK_WORKLOADS), ",".join(QUICK_OPS)))
  p.add_argument("--warmup",
                 type=int,
                 default=None,
                 help="untimed warm-up calls per variant (default 3, quick 1)")
  p.add_argument("--repeats",
                 type=int,
                 default=None,
                 help="timed calls per variant, median reported "
                 "(default 15, quick 3)")
  p.add_argument("--bandwidth-mb",
                 type=float,
                 default=None,
                 help="buffer size for the bandwidth measurement "
                 "(default 256, 2048 on a GPU, quick 16)")
  p.add_argument("--seed",
                 type=int,
                 default=0,
                 help="workload seed (default: 0)")
  p.add_argument("--only-ours",
                 action="store_true",
                 help="check and time only this package's combiners "
                 "(no ratios)")
  p.add_argument("--json", metavar="PATH", help="write results as JSON")
  p.add_argument("--plot",
                 metavar="PATH",
                 help="write a PNG bar chart of ours / best-baseline ratios "
                 "per workload (needs matplotlib)")
  p.add_argument("--quiet",
                 action="store_true",
                 help="print only the overview and summary")
  args = p.parse_args(argv)
  if args.workloads is None:
    args.workloads = list(QUICK_WORKLOADS if args.quick else ALL_WORKLOADS)
  if args.ops is None:
    args.ops = list(QUICK_OPS if args.quick else ALL_OPS)
  if args.warmup is None:
    args.warmup = 1 if args.quick else 3
  if args.repeats is None:
    args.repeats = 3 if args.quick else 15
  if args.bandwidth_mb is None:
    gpu = "GPU" in args.device.upper()
    args.bandwidth_mb = 16 if args.quick else 2048 if gpu else 256
  if args.warmup < 0 or args.repeats < 1:
    p.error("--warmup must be >= 0 and --repeats >= 1")
  return args


def environment(device):
  """Returns a JSON-able description of the run environment."""
  return {
      "python": platform.python_version(),
      "tensorflow": tf.__version__,
      "numpy": np.__version__,
      "platform": platform.platform(),
      "cpu_count": os.cpu_count(),
      "device": device,
      "physical_devices": [d.name for d in tf.config.list_physical_devices()],
  }


def check_device(device):
  """Exits with a clear message unless `device` exists (no silent fallback)."""
  want = tf.DeviceSpec.from_string(device)
  available = [d.name for d in tf.config.list_logical_devices()]
  for name in available:
    have = tf.DeviceSpec.from_string(name)
    if (have.device_type == (want.device_type or "").upper() and
        have.device_index == (want.device_index or 0)):
      return
  raise SystemExit("--device %s not found; available: %s" %
                   (device, ", ".join(available)))


def main(argv=None):
  """Runs the benchmark; returns the result dict."""
  args = parse_args(argv)
  check_device(args.device)
  dtype = tf.as_dtype(args.dtype)
  out = sys.stdout
  start = time.perf_counter()
  bandwidth = measure_bandwidth(args.device, args.bandwidth_mb,
                                max(args.repeats, 5))
  bps = bandwidth["bytes_per_s"]
  print("monolith-tf combiners benchmark | TF %s | device %s | dtype %s | "
        "grad %s%s" % (tf.__version__, args.device, args.dtype, args.grad_form,
                       " | QUICK" if args.quick else ""),
        file=out)
  print("memory bandwidth: %.2f GB/s (best of %s)" %
        (bps / 1e9, ", ".join("%s %.2f" % (m["method"], m["bytes_per_s"] / 1e9)
                              for m in bandwidth["measurements"])),
        file=out)

  workloads = {}
  for name in sorted(set(args.workloads)):
    workloads[name] = make_workload(name, args.quick, args.seed, dtype)
  runners = []
  if "function" in args.execs:
    runners.append(FunctionRunner(args.device, xla=False))
  if "graph" in args.execs:
    runners.append(GraphRunner(args.device))
  if args.xla:
    runners.append(FunctionRunner(args.device, xla=True))

  cases = []
  for wl_name in args.workloads:
    wl = workloads[wl_name]
    for op in args.ops:
      if op_first_n(op) and wl_name not in args.firstn_workloads:
        continue
      for mode in args.modes:
        function_best = None
        for runner in runners:
          case = run_case(runner, wl, op, mode, args, dtype, bps)
          if runner.name == "function":
            function_best = best_baseline(case["variants"])
          elif runner.name == "xla" and case["best_baseline"] is None:
            finish_case(case, fallback=function_best)
          cases.append(case)
          if not args.quiet:
            print(format_case(case, wl), file=out)
            out.flush()

  summary = summarize(cases, judge=not args.quick)
  print(
      "\nOVERVIEW (ms net of call overhead; ratio = ours / best correct "
      "baseline)",
      file=out)
  print(format_overview(cases), file=out)
  print(file=out)
  print(format_summary(summary), file=out)
  elapsed = time.perf_counter() - start
  print("(%.1f s)" % elapsed, file=out)

  result = {
      "schema_version": SCHEMA_VERSION,
      "config": {
          "workloads": args.workloads,
          "ops": args.ops,
          "firstn_workloads": args.firstn_workloads,
          "modes": args.modes,
          "execs": [r.name for r in runners],
          "device": args.device,
          "dtype": args.dtype,
          "grad_form": args.grad_form,
          "quick": args.quick,
          "warmup": args.warmup,
          "repeats": args.repeats,
          "seed": args.seed,
          "only_ours": args.only_ours,
      },
      "environment": environment(args.device),
      "bandwidth": bandwidth,
      "workloads": {
          k: v.info() for k, v in workloads.items()
      },
      "cases": cases,
      "summary": summary,
      "elapsed_s": elapsed,
  }
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)
    print("wrote %s" % args.json, file=out)
  if args.plot:
    write_plot(args.plot, cases, summary)
    print("wrote %s" % args.plot, file=out)
  return result


if __name__ == "__main__":
  main()
