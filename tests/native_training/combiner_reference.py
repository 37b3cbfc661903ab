"""NumPy references and a runner for the embedding combiner tests.

`np_combine` / `np_grad` are float64 references written from the combiners'
definitions (sum, mean, sqrt-n and first-n of each row, optional per-id
weights); `run_combiner` runs a combiner eagerly, in a `tf.function`, under
XLA or in a TF1 graph and returns its output and gradient.
"""

import numpy as np
import tensorflow as tf

from monolith.native_training import embedding_combiners as ec

DIM = 5


def make_combiner(kind, **kwargs):
  if kind.startswith("first"):
    return ec.FirstN(int(kind[len("first"):]), **kwargs)
  return {
      "sum": ec.ReduceSum,
      "mean": ec.ReduceMean,
      "sqrtn": ec.ReduceSqrtN
  }[kind](**kwargs)


def random_lengths(rng, nrows=9, max_len=6):
  lengths = rng.integers(1, max_len + 1, size=nrows)
  lengths[rng.random(nrows) < 0.3] = 0
  lengths[0] = 0  # Leading empty row.
  lengths[1] = max_len  # Longer than FirstN's n.
  lengths[-2:] = 0  # Trailing empty rows.
  return lengths


def numpy_dtype(dtype):
  return dtype.as_numpy_dtype


def round_to(x, dtype):
  """Rounds float64 `x` to `dtype` and back (exact inputs for a reference)."""
  return x.astype(numpy_dtype(dtype)).astype(np.float64)


def row_ids_of(lengths):
  return np.repeat(np.arange(len(lengths)), np.asarray(lengths, np.int64))


def np_combine(kind, lengths, emb, weights=None):
  """NumPy float64 reference of the combiner output."""
  lengths = np.asarray(lengths, np.int64)
  splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  nrows, dim = len(lengths), emb.shape[1]
  if kind.startswith("first"):
    n = int(kind[len("first"):])
    out = np.zeros((nrows, n, dim))
    for r in range(nrows):
      k = min(lengths[r], n)
      out[r, :k] = emb[splits[r]:splits[r] + k]
    return out
  w = np.ones(len(emb)) if weights is None else weights
  out = np.zeros((nrows, dim))
  scale = np_row_scale(kind, lengths, w)
  for r in range(nrows):
    seg = slice(splits[r], splits[r + 1])
    out[r] = (w[seg, None] * emb[seg]).sum(axis=0) * scale[r]
  return out


def np_row_scale(kind, lengths, w):
  lengths = np.asarray(lengths, np.int64)
  splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  scale = np.ones(len(lengths))
  for r in range(len(lengths)):
    seg = w[splits[r]:splits[r + 1]]
    if kind == "mean":
      denom = seg.sum()
    elif kind == "sqrtn":
      denom = np.sqrt((seg * seg).sum())
    else:
      continue
    scale[r] = 1.0 / denom if denom != 0 else 0.0
  return scale


def np_grad(kind, lengths, emb, cotangent, weights=None):
  """NumPy reference of d sum(out * cotangent) / d embedding."""
  lengths = np.asarray(lengths, np.int64)
  splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  row_ids = row_ids_of(lengths)
  if kind.startswith("first"):
    n = int(kind[len("first"):])
    pos = np.arange(len(emb)) - splits[row_ids]
    grad = np.zeros_like(emb)
    keep = pos < n
    grad[keep] = cotangent[row_ids[keep], pos[keep]]
    return grad
  w = np.ones(len(emb)) if weights is None else weights
  scale = np_row_scale(kind, lengths, w)
  return cotangent[row_ids] * (w * scale[row_ids])[:, None]


def tolerance(dtype):
  return {
      tf.float16: 1e-2,
      tf.bfloat16: 4e-2,
      tf.float32: 1e-5,
      tf.float64: 1e-10
  }[dtype]


def run_combiner(mode,
                 combine,
                 lengths,
                 emb,
                 cotangent,
                 dtype,
                 splits_dtype=tf.int64,
                 weights=None,
                 ragged_weights=False,
                 unknown_dim=False):
  """Runs `combine(key, emb, weights)` in `mode`; returns (out, grad) numpy.

  Args:
    mode: "eager", "function" (tf.function, unknown batch), "xla"
      (tf.function(jit_compile=True)) or "graph" (TF1 graph + Session).
    combine: callable (key, embedding, weights or None) -> output.
    lengths: row lengths.
    emb: float64 numpy embedding (already representable in `dtype`).
    cotangent: float64 numpy array shaped like the output.
    dtype: embedding dtype.
    splits_dtype: row partition dtype.
    weights: optional float64 numpy weights aligned with the ids.
    ragged_weights: pass the weights as a RaggedTensor (else 1-D tensor).
    unknown_dim: in graph mode, an embedding placeholder of shape [None, None].

  Returns:
    (output, gradient w.r.t. the embedding) as float64 numpy arrays.
  """
  lengths = np.asarray(lengths, np.int64)
  splits = np.concatenate([[0], np.cumsum(lengths)
                          ]).astype(splits_dtype.as_numpy_dtype)
  ids = np.arange(100, 100 + len(emb), dtype=np.int64)
  np_dtype = numpy_dtype(dtype)
  emb_c = emb.astype(np_dtype)
  cot_c = cotangent.astype(np_dtype)
  w_c = None if weights is None else weights.astype(np_dtype)

  def make_weights(key, w):
    if w is None:
      return None
    if ragged_weights:
      return tf.RaggedTensor.from_row_splits(w, key.row_splits, validate=False)
    return w

  def forward_backward(key, e, c, w):
    with tf.GradientTape() as tape:
      tape.watch(e)
      out = combine(key, e, make_weights(key, w))
      loss = tf.reduce_sum(out * c)
    return out, tape.gradient(loss, e)

  if mode == "graph":
    with tf.Graph().as_default():
      if splits_dtype == tf.int64:
        key = tf.compat.v1.ragged.placeholder(tf.int64, 1, [])
        key_feed = {key: tf.compat.v1.ragged.RaggedTensorValue(ids, splits)}
      else:  # ragged.placeholder has int64 row splits only.
        ids_ph = tf.compat.v1.placeholder(tf.int64, [None])
        splits_ph = tf.compat.v1.placeholder(splits_dtype, [None])
        key = tf.RaggedTensor.from_row_splits(ids_ph, splits_ph)
        key_feed = {ids_ph: ids, splits_ph: splits}
      e = tf.compat.v1.placeholder(dtype, [None, None if unknown_dim else DIM])
      c = tf.compat.v1.placeholder(dtype, None)
      w = None if w_c is None else tf.compat.v1.placeholder(dtype, [None])
      out = combine(key, e, make_weights(key, w))
      grad = tf.gradients(tf.reduce_sum(out * c), e)[0]
      feed = dict(key_feed)
      feed.update({e: emb_c, c: cot_c})
      if w is not None:
        feed[w] = w_c
      with tf.compat.v1.Session() as sess:
        out_v, grad_v = sess.run([out, grad], feed_dict=feed)
  else:
    key = tf.RaggedTensor.from_row_splits(tf.constant(ids),
                                          tf.constant(splits),
                                          validate=False)
    args = (key, tf.constant(emb_c), tf.constant(cot_c),
            None if w_c is None else tf.constant(w_c))
    if mode == "eager":
      out, grad = forward_backward(*args)
    else:
      spec = [
          tf.RaggedTensorSpec([None, None],
                              tf.int64,
                              1,
                              row_splits_dtype=splits_dtype),
          tf.TensorSpec([None, None], dtype),
          tf.TensorSpec(None, dtype),
      ]
      if w_c is None:
        fn = tf.function(lambda k, e, c: forward_backward(k, e, c, None),
                         input_signature=spec,
                         jit_compile=(mode == "xla"))
        args = args[:3]
      else:
        fn = tf.function(forward_backward,
                         input_signature=spec + [tf.TensorSpec([None], dtype)],
                         jit_compile=(mode == "xla"))
      out, grad = fn(*args)
    out_v, grad_v = out.numpy(), grad.numpy()
  assert out_v.dtype == np_dtype, (out_v.dtype, np_dtype)
  assert grad_v.dtype == np_dtype, (grad_v.dtype, np_dtype)
  return out_v.astype(np.float64), grad_v.astype(np.float64)


def plain_combine(kind):
  combiner = make_combiner(kind)
  return lambda key, emb, w: combiner.combine(key, emb)


def weighted_combine(kind):
  combiner = make_combiner(kind)
  return lambda key, emb, w: combiner.combine(key, emb, weights=w)


def assert_matches_numpy(test,
                         kind,
                         lengths,
                         emb,
                         cot,
                         out,
                         grad,
                         weights=None,
                         tol=1e-5):
  """Checks a combiner's output and gradient against the NumPy references.

  Args:
    test: the `tf.test.TestCase` making the assertions.
    kind: "sum", "mean", "sqrtn" or "firstN".
    lengths: row lengths.
    emb: float64 embedding the combiner was given.
    cot: float64 cotangent of the output the gradient was taken with.
    out: the combiner's output, as returned by `run_combiner`.
    grad: its gradient w.r.t. the embedding, as returned by `run_combiner`.
    weights: the per-id weights, if any.
    tol: relative and absolute tolerance.
  """
  want = np_combine(kind, lengths, emb, weights)
  test.assertEqual(out.shape, want.shape)
  test.assertAllClose(out, want, rtol=tol, atol=tol)
  test.assertAllClose(grad,
                      np_grad(kind, lengths, emb, cot, weights),
                      rtol=tol,
                      atol=tol)
