"""What a segment's `FloatCompressorConfig` does to training lookups and grads.

HASH_TABLE_SPEC Part B section 4: the stored weights stay float32 in
training; the compressor only changes what `lookup` returns (the "retriever")
and, for one_bit, the gradient before the optimizer step.

| member            | lookup                 | gradient                          |
|-------------------|------------------------|-----------------------------------|
| fp32, fp16, none  | `w`                    | `g`                               |
| fixed_r8          | `Q_r(w)` (fake quant)  | `g` (straight-through)            |
| one_bit           | `a tanh(s w)`          | `g a s (1 - tanh(s w)^2)`         |

one_bit keeps one shared `scale` per segment and table (a float32 variable,
checkpointed here, unlike monolith); at every step where
`global_step % step_size == 0` it becomes
`min(init_scale sqrt(1 + 0.005 global_step), max_scale)` before the gradient
is scaled. Serving encodings (`encode_serving` / `decode_serving`) are the
SERVING forms of Part B section 4.1.
"""

from typing import Optional

import tensorflow as tf


def fixed_r8_codes(w: tf.Tensor, r: float) -> tf.Tensor:
  """int8 codes of `w`: round half away from zero on the `r/128` grid.

  Args:
    w: float32 values.
    r: The range (`FixedR8.r`).

  Returns:
    int32 codes clamped to [-128, 127]; NaN encodes to 0, +inf to 127 and
    -inf to -128.
  """
  step = r / 128.0
  # NaN is mapped to 0 first: min/max do not propagate NaN on every device.
  w = tf.where(tf.math.is_nan(w), tf.zeros_like(w), w)
  t = tf.where(w >= 0, w + step / 2, w - step / 2)
  # Clamping before the truncating cast equals clamping after it, and keeps
  # +-inf in range: +inf saturates to 127 (monolith's x86 build gives -128,
  # undefined behaviour in C++), -inf to -128.
  q = tf.clip_by_value(t / step, -128.0, 127.0)
  return tf.cast(q, tf.int32)  # Cast truncates toward zero.


def fixed_r8_quantize(w: tf.Tensor, r: float) -> tf.Tensor:
  """`Q_r(w) = code * r / 128`, the fixed_r8 training lookup."""
  return tf.cast(fixed_r8_codes(w, r), tf.float32) * (r / 128.0)


class SegmentCompressor:
  """The training-time effect of one segment's compressor.

  Args:
    comp_config: The segment's `FloatCompressorConfig` (or None).
    name: Prefix of the one_bit scale variable.
  """

  def __init__(self, comp_config, name: str):
    self.member = (comp_config.WhichOneof("type")
                   if comp_config is not None else None)
    self.cfg = (getattr(comp_config, self.member)
                if self.member is not None else None)
    self.scale: Optional[tf.Variable] = None
    if self.member == "one_bit":
      self.scale = tf.Variable(self.cfg.init_scale,
                               dtype=tf.float32,
                               trainable=False,
                               name=name + "_one_bit_scale")

  def forward(self, w: tf.Tensor) -> tf.Tensor:
    """The training lookup of stored rows `w`."""
    if self.member == "fixed_r8":
      return fixed_r8_quantize(w, self.cfg.r)
    if self.member == "one_bit":
      return self.cfg.amplitude * tf.tanh(self.scale.read_value() * w)
    return w

  def new_scale(self, global_step: tf.Tensor) -> Optional[tf.Tensor]:
    """The one_bit scale to use at `global_step` (None for other members)."""
    if self.member != "one_bit":
      return None
    gs = tf.cast(global_step, tf.int64)
    scheduled = tf.minimum(
        self.cfg.init_scale *
        tf.pow(1.0 + 0.005 * tf.cast(gs, tf.float32), 0.5), self.cfg.max_scale)
    switch = tf.equal(tf.math.floormod(gs, self.cfg.step_size), 0)
    return tf.where(switch, scheduled, self.scale.read_value())

  def backward(self, w: tf.Tensor, g: tf.Tensor,
               scale: Optional[tf.Tensor]) -> tf.Tensor:
    """The gradient the optimizer sees, given stored rows `w` and `scale`."""
    if self.member != "one_bit":
      return g
    y = tf.tanh(scale * w)
    return g * (self.cfg.amplitude * scale * (1.0 - y * y))
