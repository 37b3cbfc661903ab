"""Keras layers built on `monolith.native_training.embedding_combiners`.

`PooledEmbedding` looks up a batch of variable-length id lists in an embedding
table it owns and pools each list with a combiner (`ReduceSum`, `ReduceMean`,
`ReduceSqrtN` or `FirstN`). It works in functional models (it implements
`compute_output_shape`) and in subclassed ones, with Keras 3 (TensorFlow
2.16+) and Keras 2 (TensorFlow 2.15, or `tf_keras`), whichever `tf.keras` is.

Ids come as a `tf.RaggedTensor` (`tf.keras.Input(shape=(None,), ragged=True,
dtype="int64")` in a functional model) or, where ragged inputs are not an
option, as a dense `[batch, max_len]` int tensor whose rows end in
`padding_id` (default -1) padding.

Example:

  ids = tf.keras.Input(shape=(None,), ragged=True, dtype="int64")
  pooled = keras_layers.PooledEmbedding(1000, 16, combiner="mean")(ids)
  model = tf.keras.Model(ids, tf.keras.layers.Dense(1)(pooled))
  model.compile("adam", "mse")
  model.fit(tf.ragged.constant([[1, 2], [], [3]], tf.int64), [[1.], [0.], [1.]])
"""

from typing import Optional, Union

import tensorflow as tf

from monolith.native_training import embedding_combiners

_COMBINERS = {
    "sum": embedding_combiners.ReduceSum,
    "mean": embedding_combiners.ReduceMean,
    "sqrtn": embedding_combiners.ReduceSqrtN,
}


def _combiner_name(combiner: embedding_combiners.Combiner) -> Optional[str]:
  for name, cls in _COMBINERS.items():
    if type(combiner) is cls:  # pylint: disable=unidiomatic-typecheck
      return name
  if type(combiner) is embedding_combiners.FirstN:  # pylint: disable=unidiomatic-typecheck
    return "first_n"
  return None


@tf.keras.utils.register_keras_serializable(package="monolith")
class PooledEmbedding(tf.keras.layers.Layer):
  """Embedding lookup of variable-length id lists, pooled per list.

  Args:
    input_dim: number of rows of the embedding table; ids must be in
      `[0, input_dim)` (hash or bucketize raw feature ids first, e.g. with
      `tf.math.floormod`).
    output_dim: embedding width.
    combiner: "sum", "mean", "sqrtn", "first_n" (keeps the first `seq_length`
      embeddings of each list), or an `embedding_combiners.Combiner`.
    seq_length: for `combiner="first_n"`, the number of embeddings kept.
    embeddings_initializer: initializer of the table.
    padding_id: for dense id inputs, the id that pads rows at their end.
    portable: build the combiner's portable formulation (compiles under XLA
      wherever the model was traced; see `embedding_combiners`).
    **kwargs: `tf.keras.layers.Layer` arguments (`name`, `dtype`, ...).

  Input: int ids, a `tf.RaggedTensor` `[batch, (ids)]` or a dense
  `[batch, max_len]` tensor padded with `padding_id` at the end of each row.

  Output: `[batch, output_dim]` (`[batch, seq_length, output_dim]` for
  "first_n"); an empty list pools to zeros.

  Raises:
    ValueError: unknown `combiner`, or `seq_length` missing / given where it
      does not apply.
  """

  def __init__(self,
               input_dim: int,
               output_dim: int,
               combiner: Union[str, embedding_combiners.Combiner] = "mean",
               seq_length: Optional[int] = None,
               embeddings_initializer="uniform",
               padding_id: int = -1,
               portable: bool = False,
               **kwargs):
    super().__init__(**kwargs)
    self.input_dim = int(input_dim)
    self.output_dim = int(output_dim)
    if isinstance(combiner, embedding_combiners.Combiner):
      if seq_length is not None:
        raise ValueError("PooledEmbedding: seq_length applies to "
                         "combiner='first_n' only")
      self.combiner = combiner
    elif combiner == "first_n":
      if seq_length is None:
        raise ValueError("PooledEmbedding: combiner='first_n' needs "
                         "seq_length")
      self.combiner = embedding_combiners.FirstN(seq_length, portable=portable)
    elif combiner in _COMBINERS:
      if seq_length is not None:
        raise ValueError("PooledEmbedding: seq_length applies to "
                         "combiner='first_n' only")
      self.combiner = _COMBINERS[combiner](portable=portable)
    else:
      raise ValueError("PooledEmbedding: combiner must be 'sum', 'mean', "
                       "'sqrtn', 'first_n' or an embedding_combiners.Combiner, "
                       f"got {combiner!r}")
    self.embeddings_initializer = tf.keras.initializers.get(
        embeddings_initializer)
    self.padding_id = int(padding_id)
    self.portable = bool(portable)

  def build(self, input_shape):
    self.embeddings = self.add_weight(name="embeddings",
                                      shape=(self.input_dim, self.output_dim),
                                      initializer=self.embeddings_initializer,
                                      trainable=True)
    super().build(input_shape)

  def call(self, inputs):
    ids = inputs
    if not isinstance(ids, tf.RaggedTensor):
      ids = tf.convert_to_tensor(ids)
      ids = tf.RaggedTensor.from_tensor(ids,
                                        padding=tf.cast(self.padding_id,
                                                        ids.dtype))
    embedding = tf.gather(self.embeddings, ids.values)
    return self.combiner.combine(ids, embedding)

  def compute_output_shape(self, input_shape):
    shape = tf.TensorShape(input_shape)
    batch = shape[0] if shape.rank else None
    n = self.combiner.max_seq_length
    out = [batch] + ([n] if n else []) + [self.output_dim]
    if isinstance(input_shape, (tuple, list)):
      return tuple(out)
    return tf.TensorShape(out)

  def get_config(self):
    config = super().get_config()
    name = _combiner_name(self.combiner)
    if name is None:
      raise NotImplementedError(
          "PooledEmbedding.get_config: a custom combiner "
          f"({type(self.combiner).__name__}) cannot be serialized")
    config.update({
        "input_dim":
            self.input_dim,
        "output_dim":
            self.output_dim,
        "combiner":
            name,
        "seq_length":
            self.combiner.max_seq_length if name == "first_n" else None,
        "embeddings_initializer":
            tf.keras.initializers.serialize(self.embeddings_initializer),
        "padding_id":
            self.padding_id,
        "portable":
            self.portable or getattr(self.combiner, "portable", False),
    })
    return config
