"""Tests of the compressors' training-time effect (HASH_TABLE_SPEC B.4).

fixed_r8 lookups return the fake-quantized `Q_r(w)` with straight-through
gradients; one_bit lookups return `a tanh(s w)` and scale the gradient by
`a s (1 - tanh(s w)^2)` before the optimizer, with the shared scale `s`
following its schedule; fp16 / fp32 have no effect in training. The stored
weights stay float32 in every case. The NumPy references below are written
from the spec's formulas.
"""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from monolith.native_training import entry
from monolith.native_training import hash_table_compressors
from monolith.native_training import hash_table_ops
from monolith.native_training.runtime.hash_table import embedding_hash_table_pb2

_COMP = embedding_hash_table_pb2.FloatCompressorConfig

# ------------------------------------------------------ NumPy references


def _ref_fixed_r8(w, r):
  """B.4.3: round half away from zero on the r/128 grid, clamp, NaN -> 0."""
  w = np.asarray(w, np.float32)
  step = np.float32(r) / np.float32(128)
  w = np.where(np.isnan(w), np.float32(0), w)
  t = np.where(w >= 0, w + step / np.float32(2), w - step / np.float32(2))
  q = np.clip(np.trunc(t.astype(np.float32) / step), -128, 127)
  return (q * step).astype(np.float32)


class _RefOneBit:
  """B.4.4: the shared scale and the forward / backward of one segment."""

  def __init__(self, step_size, init_scale, max_scale, amplitude):
    self.step_size = step_size
    self.init_scale = np.float32(init_scale)
    self.max_scale = np.float32(max_scale)
    self.a = np.float32(amplitude)
    self.scale = np.float32(init_scale)

  def forward(self, w):
    return (self.a * np.tanh(self.scale * w)).astype(np.float32)

  def backward(self, w, g, gs):
    """Updates the scale at a switch step, then scales `g`."""
    if gs % self.step_size == 0:
      scheduled = self.init_scale * np.sqrt(
          np.float32(1) + np.float32(0.005) * np.float32(gs))
      self.scale = np.float32(min(scheduled, self.max_scale))
    y = np.tanh(self.scale * w)
    return (g * (self.a * self.scale * (1 - y * y))).astype(np.float32)


# ------------------------------------------------------------- helpers


def _one_bit(step_size=3, init_scale=0.75, max_scale=1.5, amplitude=0.25):
  return _COMP(one_bit=_COMP.OneBit(step_size=step_size,
                                    init_scale=init_scale,
                                    max_scale=max_scale,
                                    amplitude=amplitude))


def _table(comps, dims, lr=0.5, constant=0.0, name_suffix=""):
  """An SGD table with one segment per (compressor, dim)."""
  segments = [
      entry.CombineAsSegment(d, entry.ConstantsInitializer(constant),
                             entry.SgdOptimizer(lr), c)
      for c, d in zip(comps, dims)
  ]
  config = entry.build_embedding_hash_table_config(
      segments, entry.CuckooHashTableConfig())
  instance = entry.HashTableConfigInstance(config, [lr] * len(dims))
  return hash_table_ops.hash_table_from_config(instance,
                                               name_suffix=name_suffix)


def _weights(table, ids):
  """The stored (raw fp32) weights of `ids`, from `export_entries`."""
  dump = table.export_entries()
  order = {int(i): k for k, i in enumerate(dump["ids"].numpy())}
  return dump["weights"].numpy()[[order[i] for i in ids]]


class FixedR8QuantizeTest(tf.test.TestCase, parameterized.TestCase):

  def test_spec_examples(self):
    r = 5.0
    step = r / 128
    x = np.array([
        100.0, 3.5, 1.4 * step, 1.6 * step, -1.4 * step, -1.6 * step,
        0.5 * step, -0.5 * step, -100.0, 0.0, np.nan
    ], np.float32)
    want = np.array([
        4.9609375, 3.515625, step, 2 * step, -step, -2 * step, step, -step,
        -5.0, 0.0, 0.0
    ], np.float32)
    got = hash_table_compressors.fixed_r8_quantize(tf.constant(x), r)
    self.assertAllEqual(got, want)
    codes = hash_table_compressors.fixed_r8_codes(tf.constant(x), r)
    self.assertAllEqual(codes, [127, 90, 1, 2, -1, -2, 1, -1, -128, 0, 0])

  def test_infinities_saturate(self):
    codes = hash_table_compressors.fixed_r8_codes(
        tf.constant([np.inf, -np.inf], tf.float32), 1.0)
    self.assertAllEqual(codes, [127, -128])

  @parameterized.named_parameters(("r1", 1.0), ("r5", 5.0), ("r0_3", 0.3))
  def test_matches_reference(self, r):
    rng = np.random.default_rng(7)
    step = np.float32(r) / 128
    ties = (np.arange(-130, 130) + 0.5).astype(np.float32) * step
    x = np.concatenate(
        [rng.uniform(-1.5 * r, 1.5 * r, 500).astype(np.float32), ties])
    got = hash_table_compressors.fixed_r8_quantize(tf.constant(x), r)
    self.assertAllEqual(got, _ref_fixed_r8(x, r))
    inside = np.abs(x) <= r * 127 / 128
    self.assertAllLessEqual(np.abs(got.numpy() - x)[inside], step / 2 + 1e-7)


class CompressorTrainingTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(("d1", 1), ("d7", 7), ("d8", 8), ("d17", 17))
  def test_fixed_r8(self, dim):
    r, lr = 2.0, 0.5
    table = _table([_COMP(fixed_r8=_COMP.FixedR8(r=r))], [dim], lr=lr)
    rng = np.random.default_rng(dim)
    ids = [3, 11, 40]
    w = rng.uniform(-1.5 * r, 1.5 * r, [3, dim]).astype(np.float32)
    table.assign(ids, w)
    for step in range(4):
      self.assertAllEqual(table.lookup(ids), _ref_fixed_r8(w, r))
      g = rng.normal(size=[3, dim]).astype(np.float32) * 0.01
      table.apply_gradients(ids, g, step)
      # Straight-through: the optimizer sees g itself.
      w = (w - np.float32(lr) * g).astype(np.float32)
      stored = _weights(table, ids)
      self.assertAllClose(stored, w, rtol=1e-6, atol=1e-6)
    # Storage stays fp32: small steps do not land on the quantization grid.
    step_size = np.float32(r) / 128
    self.assertGreater(np.mean(np.abs(stored / step_size % 1) > 1e-3), 0.5)
    self.assertAllEqual(table.lookup(ids), _ref_fixed_r8(stored, r))

  @parameterized.named_parameters(("d1", 1, False), ("d7", 7, False),
                                  ("d8", 8, True), ("d17", 17, False),
                                  ("d7_dedup", 7, True))
  def test_one_bit(self, dim, dedup):
    lr, c = 0.5, 0.3
    table = _table([_one_bit()], [dim], lr=lr, constant=c)
    ref = _RefOneBit(step_size=3,
                     init_scale=0.75,
                     max_scale=1.5,
                     amplitude=0.25)
    rng = np.random.default_rng(dim + 100)
    w = {}
    table.assign([1, 2], rng.uniform(-2, 2, [2, dim]).astype(np.float32))
    w[1], w[2] = _weights(table, [1, 2])
    # Steps with switches (0, 3, 600 > the max scale, 0 again) and ids new
    # to the table (start from the constant); id 1 repeats in one batch.
    schedule = [(0, [1, 2]), (1, [1, 5]), (3, [2, 1, 1]), (4, [7]),
                (600, [1, 2, 5]), (601, [2]), (0, [1, 7])]
    for gs, ids in schedule:
      present = [i for i in ids if i in w]
      if present:
        want = ref.forward(np.stack([w[i] for i in present]))
        self.assertAllClose(table.lookup(present), want, rtol=1e-5, atol=1e-7)
      g = rng.normal(size=[len(ids), dim]).astype(np.float32)
      table.apply_gradients(ids, g, gs, enable_dedup=dedup)
      if dedup:
        summed = {}
        for i, row in zip(ids, g):
          summed[i] = summed.get(i, 0) + row
        steps = list(summed.items())
      else:
        steps = list(zip(ids, g))
      for i, row in steps:
        old = w.get(i, np.full([dim], c, np.float32))
        w[i] = (old - np.float32(lr) * ref.backward(old, row, gs)).astype(
            np.float32)
      self.assertAllClose(_weights(table, sorted(w)),
                          np.stack([w[i] for i in sorted(w)]),
                          rtol=1e-5,
                          atol=1e-6)
    self.assertAllClose(table.lookup(sorted(w)),
                        ref.forward(np.stack([w[i] for i in sorted(w)])),
                        rtol=1e-5,
                        atol=1e-7)

  @parameterized.named_parameters(("fp16", _COMP(fp16=_COMP.Fp16())),
                                  ("fp32", _COMP(fp32=_COMP.Fp32())))
  def test_float_compressors_have_no_training_effect(self, comp):
    lr = 0.25
    table = _table([comp], [5], lr=lr)
    rng = np.random.default_rng(3)
    w = (rng.normal(size=[2, 5]) * 0.1 + 1e-4).astype(np.float32)
    table.assign([4, 9], w)
    for step in range(3):
      self.assertAllEqual(table.lookup([4, 9]), w)
      g = rng.normal(size=[2, 5]).astype(np.float32)
      table.apply_gradients([4, 9], g, step)
      w = (w - np.float32(lr) * g).astype(np.float32)
    self.assertAllEqual(table.lookup([4, 9]), w)
    self.assertAllEqual(_weights(table, [4, 9]), w)


class MixedSegmentsTest(tf.test.TestCase, parameterized.TestCase):
  """Several compressors in one entry, in a graph and inside tf.function."""

  _COMPS = (_COMP(fixed_r8=_COMP.FixedR8(r=1.0)), _one_bit(),
            _COMP(fp16=_COMP.Fp16()), _COMP(fp32=_COMP.Fp32()))
  _DIMS = (3, 2, 1, 2)

  def _reference(self, w0, grads, steps):
    """Lookups before each step and the final lookup, from the formulas."""
    ref = _RefOneBit(step_size=3,
                     init_scale=0.75,
                     max_scale=1.5,
                     amplitude=0.25)
    w = w0.copy()

    def forward(w):
      return np.concatenate(
          [_ref_fixed_r8(w[:, :3], 1.0),
           ref.forward(w[:, 3:5]), w[:, 5:]],
          axis=1)

    lookups = []
    for g, gs in zip(grads, steps):
      lookups.append(forward(w))
      g = g.copy()
      g[:, 3:5] = ref.backward(w[:, 3:5], g[:, 3:5], gs)
      w = (w - np.float32(0.5) * g).astype(np.float32)
    lookups.append(forward(w))
    return lookups

  def _data(self):
    rng = np.random.default_rng(11)
    w0 = rng.uniform(-1, 1, [3, 8]).astype(np.float32)
    grads = [rng.normal(size=[3, 8]).astype(np.float32) for _ in range(3)]
    return w0, grads, [2, 3, 4]

  def test_graph_lookup_in_the_switch_step_uses_the_old_scale(self):
    w0, grads, steps = self._data()
    ids = [5, 6, 7]
    with tf.Graph().as_default():
      table = _table(self._COMPS, self._DIMS)
      init = table.assign(ids, w0).as_op()
      g_ph = tf.compat.v1.placeholder(tf.float32, [3, 8])
      gs_ph = tf.compat.v1.placeholder(tf.int64, [])
      before = table.lookup(ids)
      with tf.control_dependencies([before]):
        after_table = table.apply_gradients(ids, g_ph, gs_ph)
      after = after_table.lookup(ids)
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        sess.run(init)
        got = []
        for g, gs in zip(grads, steps):
          b, a = sess.run([before, after], {g_ph: g, gs_ph: gs})
          got.append(b)
        got.append(a)
    want = self._reference(w0, grads, steps)
    for g, w in zip(got, want):
      self.assertAllClose(g, w, rtol=1e-5, atol=1e-6)

  def test_tf_function(self):
    w0, grads, steps = self._data()
    ids = tf.constant([5, 6, 7], tf.int64)
    table = _table(self._COMPS, self._DIMS)
    table.assign(ids, w0)

    @tf.function
    def train(g, gs):
      before = table.lookup(ids)
      table.apply_gradients(ids, g, gs)
      return before

    got = [train(g, tf.constant(gs, tf.int64)) for g, gs in zip(grads, steps)]
    got.append(table.lookup(ids))
    want = self._reference(w0, grads, steps)
    for g, w in zip(got, want):
      self.assertAllClose(g, w, rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
  tf.test.main()
