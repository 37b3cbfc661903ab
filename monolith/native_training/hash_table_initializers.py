"""Initial values of new entries, one small function per `InitializerConfig`.

Each initializer maps the ids being inserted to their `[n, d]` float32 start
values (HASH_TABLE_SPEC Part B section 3). `random_uniform` is a pure function
of `(seed, id, segment, dim)` (Part A.4): the same id gets the same vector in
every run, shard and batch order. Its bits come from `mix64`, a SplitMix64
finalizer on uint64 tensors, which other modules (stochastic rounding) reuse.
"""

from typing import Callable, Dict

import tensorflow as tf

from monolith.native_training.runtime.hash_table import embedding_hash_table_pb2

InitFn = Callable[..., tf.Tensor]

_GOLDEN = 0x9E3779B97F4A7C15


def _u64(value) -> tf.Tensor:
  return tf.constant(value, tf.uint64)


def mix64(x: tf.Tensor) -> tf.Tensor:
  """SplitMix64's finalizer: a bijective, well-mixed map of uint64 values."""
  shr = tf.bitwise.right_shift
  x = tf.bitwise.bitwise_xor(x, shr(x, _u64(30))) * _u64(0xBF58476D1CE4E5B9)
  x = tf.bitwise.bitwise_xor(x, shr(x, _u64(27))) * _u64(0x94D049BB133111EB)
  return tf.bitwise.bitwise_xor(x, shr(x, _u64(31)))


def uniform_bits(ids: tf.Tensor, seed: int, stream: int,
                 width: int) -> tf.Tensor:
  """Uniform floats in [0, 1), a pure function of (seed, stream, id, column).

  Args:
    ids: int64 `[n]`.
    seed: The table seed.
    stream: Separates independent uses (segment index, purpose).
    width: Number of columns.

  Returns:
    float32 `[n, width]`, each a multiple of 2^-24.
  """
  key = mix64(_u64((seed * _GOLDEN + stream) % (1 << 64)))
  base = mix64(tf.bitwise.bitwise_xor(tf.bitcast(ids, tf.uint64), key))
  cols = tf.cast(tf.range(1, width + 1, dtype=tf.int64), tf.uint64)
  bits = mix64(base[:, None] + cols[None, :] * _u64(_GOLDEN))
  top = tf.bitwise.right_shift(bits, _u64(40))
  return tf.cast(top, tf.float32) * (1.0 / (1 << 24))


def zeros(cfg, ids, dim, seed, stream):
  """zeros: 0.0 everywhere."""
  del cfg, seed, stream
  return tf.zeros(tf.stack([tf.size(ids), dim]), tf.float32)


def ones(cfg, ids, dim, seed, stream):
  """ones: 1.0 everywhere."""
  del cfg, seed, stream
  return tf.ones(tf.stack([tf.size(ids), dim]), tf.float32)


def constants(cfg, ids, dim, seed, stream):
  """constants: `cfg.constant` everywhere (0.0 when unset)."""
  del seed, stream
  return tf.fill(tf.stack([tf.size(ids), dim]), tf.constant(cfg.constant))


def random_uniform(cfg, ids, dim, seed, stream):
  """random_uniform: `u (maxval - minval) + minval`, `u` from `uniform_bits`."""
  u = uniform_bits(ids, seed, stream, dim)
  return u * (cfg.maxval - cfg.minval) + cfg.minval


INITIALIZERS: Dict[str, InitFn] = {
    "zeros": zeros,
    "ones": ones,
    "constants": constants,
    "random_uniform": random_uniform,
}


def initializer_for(init_config: embedding_hash_table_pb2.InitializerConfig,
                    where: str = "init_config"):
  """Selects the initializer of an `InitializerConfig`.

  Args:
    init_config: The segment's initializer config.
    where: How to name the config in error messages.

  Returns:
    `(member_config, init_fn)`.

  Raises:
    ValueError: No member is set.
  """
  member = init_config.WhichOneof("type")
  if member not in INITIALIZERS:
    raise ValueError(f"{where}: no initializer is set; set one of "
                     f"{sorted(INITIALIZERS)}")
  return getattr(init_config, member), INITIALIZERS[member]
