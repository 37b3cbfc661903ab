"""Tests of monolith.native_training.keras_layers.PooledEmbedding.

Version-agnostic: `tf.keras` is Keras 3 on TensorFlow >= 2.16 and Keras 2 on
TensorFlow 2.15; the same models are built and fitted with either.
"""

import inspect

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from monolith.native_training import embedding_combiners as ec
from monolith.native_training import keras_layers

_VOCAB = 30
_DIM = 4
_RAGGED_INPUTS = "ragged" in inspect.signature(tf.keras.Input).parameters


def _data(n=64, seed=0):
  """Ragged ids (some rows empty) and a target the model can learn."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(0, 5, size=n)
  ids = rng.integers(0, _VOCAB, size=int(lengths.sum()))
  weight = rng.standard_normal(_VOCAB)
  splits = np.concatenate([[0], np.cumsum(lengths)])
  y = np.array([weight[ids[splits[i]:splits[i + 1]]].sum() for i in range(n)
               ]).astype(np.float32)[:, None]
  return tf.RaggedTensor.from_row_lengths(tf.constant(ids, tf.int64),
                                          lengths), y


def _fit(model, x, y, epochs=8):
  model.compile(optimizer=tf.keras.optimizers.Adam(0.05), loss="mse")
  history = model.fit(x, y, batch_size=16, epochs=epochs, verbose=0)
  return history.history["loss"]


class PooledEmbeddingTest(tf.test.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    tf.keras.utils.set_random_seed(1)

  def test_functional_model_with_ragged_input(self):
    if not _RAGGED_INPUTS:
      self.skipTest("this Keras has no ragged Input; see the padded test")
    x, y = _data()
    ids = tf.keras.Input(shape=(None,), ragged=True, dtype="int64")
    pooled = keras_layers.PooledEmbedding(_VOCAB, _DIM, combiner="sum")(ids)
    self.assertEqual(tuple(pooled.shape), (None, _DIM))
    model = tf.keras.Model(ids, tf.keras.layers.Dense(1)(pooled))
    losses = _fit(model, x, y)
    self.assertLess(losses[-1], 0.5 * losses[0])
    self.assertEqual(model.predict(x, verbose=0).shape, (64, 1))

  def test_functional_model_first_n(self):
    if not _RAGGED_INPUTS:
      self.skipTest("this Keras has no ragged Input; see the padded test")
    x, y = _data(seed=1)
    ids = tf.keras.Input(shape=(None,), ragged=True, dtype="int64")
    seq = keras_layers.PooledEmbedding(_VOCAB,
                                       _DIM,
                                       combiner="first_n",
                                       seq_length=3)(ids)
    self.assertEqual(tuple(seq.shape), (None, 3, _DIM))
    out = tf.keras.layers.Dense(1)(tf.keras.layers.Flatten()(seq))
    model = tf.keras.Model(ids, out)
    losses = _fit(model, x, y)
    self.assertLess(losses[-1], losses[0])

  def test_subclassed_model(self):
    x, y = _data(seed=2)

    class Model(tf.keras.Model):

      def __init__(self):
        super().__init__()
        self.pool = keras_layers.PooledEmbedding(_VOCAB,
                                                 _DIM,
                                                 combiner=ec.ReduceSqrtN())
        self.head = tf.keras.layers.Dense(1)

      def call(self, ids):
        return self.head(self.pool(ids))

    model = Model()
    losses = _fit(model, x, y)
    self.assertLess(losses[-1], 0.5 * losses[0])

  def test_functional_model_with_padded_input(self):
    """Where ragged Inputs are not an option: dense ids padded with -1."""
    x, y = _data(seed=3)
    dense = x.to_tensor(default_value=-1)
    ids = tf.keras.Input(shape=(None,), dtype="int64")
    pooled = keras_layers.PooledEmbedding(_VOCAB, _DIM, combiner="mean")(ids)
    model = tf.keras.Model(ids, tf.keras.layers.Dense(1)(pooled))
    losses = _fit(model, dense, y)
    self.assertLess(losses[-1], losses[0])
    layer = model.layers[1]
    self.assertAllClose(layer(dense), layer(x))

  @parameterized.parameters("sum", "mean", "sqrtn", "first_n")
  def test_matches_the_combiner(self, combiner):
    x, _ = _data(n=8, seed=4)
    kwargs = {"seq_length": 2} if combiner == "first_n" else {}
    layer = keras_layers.PooledEmbedding(_VOCAB,
                                         _DIM,
                                         combiner=combiner,
                                         **kwargs)
    out = layer(x)
    table = layer.embeddings
    expected = layer.combiner.combine(x, tf.gather(table, x.values))
    self.assertAllClose(out, expected)
    self.assertAllEqual(out[tf.argmin(x.row_lengths())],
                        tf.zeros(out.shape[1:]))

  def test_config_round_trip(self):
    layer = keras_layers.PooledEmbedding(_VOCAB,
                                         _DIM,
                                         combiner="first_n",
                                         seq_length=5,
                                         portable=True,
                                         name="pool")
    config = layer.get_config()
    self.assertEqual(config["combiner"], "first_n")
    self.assertEqual(config["seq_length"], 5)
    clone = keras_layers.PooledEmbedding.from_config(config)
    self.assertIsInstance(clone.combiner, ec.FirstN)
    self.assertEqual(clone.combiner.max_seq_length, 5)
    self.assertTrue(clone.combiner.portable)
    self.assertEqual(clone.name, "pool")

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, "combiner"):
      keras_layers.PooledEmbedding(_VOCAB, _DIM, combiner="max")
    with self.assertRaisesRegex(ValueError, "seq_length"):
      keras_layers.PooledEmbedding(_VOCAB, _DIM, combiner="first_n")
    with self.assertRaisesRegex(ValueError, "seq_length"):
      keras_layers.PooledEmbedding(_VOCAB, _DIM, combiner="sum", seq_length=2)


if __name__ == "__main__":
  tf.test.main()
