"""Update rules of the `OptimizerConfig` members, one small function each.

Every rule is a pure function of the gathered rows of one segment:

  update(cfg, w, slots, g, lr, global_step) -> (new_w, new_slots)

where `w` and `g` are `[n, d]` float32, `slots` maps a slot name to its
`[n, width]` rows, `lr` is the segment's float32 learning-rate scalar and
`global_step` an int64 scalar. The formulas are those of monolith's C++
runtime (`../shared/HASH_TABLE_SPEC.md`, Part B section 2), with the
deliberate differences of Part A.4 (standard FTRL `sign(z)` shrinkage, coupled
Adagrad decay on every dim, `group_ftrl` and `dynamic_wd_adagrad` implemented,
no NaN or inf at `lr == 0`). Where monolith's formula divides 0 by 0 (a zero
learning rate, or a zero accumulator / epsilon with only zero gradients so
far) the step is 0 instead: ftrl and group_ftrl keep the whole entry at
`lr == 0`, group_adagrad keeps the weights.

`RULES` maps each `OptimizerConfig` oneof member to its `Rule`: the slots it
keeps per entry (name = the `*OptimizerDump` field, width, initial value,
dtype) and its update. `rule_for(opt_config)` selects and validates one.
"""

import dataclasses
from typing import Callable, Dict, List, Tuple

import tensorflow as tf

from monolith.native_training.runtime.hash_table import embedding_hash_table_pb2

Rows = Dict[str, tf.Tensor]
UpdateFn = Callable[..., Tuple[tf.Tensor, Rows]]


@dataclasses.dataclass(frozen=True)
class Slot:
  """One piece of optimizer state kept per entry.

  Attributes:
    name: The field of the member's `*OptimizerDump` it is saved to.
    per_dim: Whether it has one value per dim (`[d]`) or one per entry.
    init: Its value in a new entry (a float, or a config field name).
    dtype: float32, or int64 for batch_softmax's step.
  """
  name: str
  per_dim: bool = True
  init: object = 0.0
  dtype: tf.DType = tf.float32

  def width(self, dim: int) -> int:
    """Columns of this slot for a segment of `dim` dims."""
    return dim if self.per_dim else 1

  def initial_value(self, cfg) -> float:
    """The initial value, reading the config field when `init` is a name."""
    return getattr(cfg, self.init) if isinstance(self.init, str) else self.init


@dataclasses.dataclass(frozen=True)
class Rule:
  """How one optimizer member keeps state and updates an entry.

  Attributes:
    slots: The state kept per entry, in monolith's memory order.
    update: The update function (see the module docstring).
    uses_lr: False where monolith ignores the learning-rate tensor.
  """
  slots: Tuple[Slot, ...]
  update: UpdateFn
  uses_lr: bool = True


def _decayed(cfg, w, g):
  """`g + wdf * w`, monolith's coupled L2 weight decay."""
  wdf = getattr(cfg, "weight_decay_factor", 0.0)
  return g + wdf * w if wdf else g


def _safe_div(x, y):
  """`x / y`, or 0 where `y == 0` (used where lr may be 0)."""
  return tf.math.divide_no_nan(x, y)


def sgd(cfg, w, s, g, lr, gs):
  """sgd (B.2.1): `w -= lr * g`."""
  del cfg, gs
  return w - lr * g, s


def adagrad(cfg, w, s, g, lr, gs):
  """adagrad (B.2.2) with coupled decay on every dim (A.4).

  `g' = g + wdf w; n += g'^2; w -= (lr / sqrt(n)) g'`.

  Where `n == 0` (zero `initial_accumulator_value` and only zero gradients so
  far, hence `g' == 0`) the weight is unchanged (monolith: `0 * inf = NaN`).
  """
  del gs
  g = _decayed(cfg, w, g)
  n = s["norm"] + g * g
  return w - _safe_div(lr, tf.sqrt(n)) * g, {"norm": n}


def ftrl(cfg, w, s, g, lr, gs):
  """ftrl (B.2.3) with the standard `sign(z)` l1 shrinkage (A.4).

  `sigma = (sqrt(n + g^2) - sqrt(n)) / lr`, `z += g - sigma w`, then
  `w = (sign(z) l1 - z) / ((sqrt(n) + beta) / lr + l2)` where `|z| > l1`,
  else 0. At `lr == 0` the entry keeps its value and state (no NaN).
  """
  del gs
  n_old, z = s["norm"], s["zero"]
  n = n_old + g * g
  sigma = _safe_div(tf.sqrt(n) - tf.sqrt(n_old), lr)
  z_new = z + g - sigma * w
  l1 = cfg.l1_regularization_strength
  denom = tf.sqrt(n) + cfg.beta + cfg.l2_regularization_strength * lr
  w_new = tf.where(
      tf.abs(z_new) > l1, _safe_div(lr * (tf.sign(z_new) * l1 - z_new), denom),
      tf.zeros_like(w))
  frozen = tf.equal(lr, 0.0)
  return (tf.where(frozen, w, w_new), {
      "norm": tf.where(frozen, n_old, n),
      "zero": tf.where(frozen, z, z_new)
  })


def adadelta(cfg, w, s, g, lr, gs):
  """adadelta (B.2.4): epsilon inside both square roots."""
  del gs
  rho, eps = cfg.averaging_ratio, cfg.epsilon
  g = _decayed(cfg, w, g)
  a = rho * s["accum"] + (1 - rho) * g * g
  # `a + eps == 0` only when eps == 0 and g' == 0 so far: then u = 0.
  u = _safe_div(tf.sqrt(s["accum_update"] + eps), tf.sqrt(a + eps)) * g
  au = rho * s["accum_update"] + (1 - rho) * u * u
  return w - lr * u, {"accum": a, "accum_update": au}


def _adam_like(cfg, w, s, g, lr, amsgrad):
  """adam / amsgrad (B.2.5, B.2.6) with per-entry bias-correction powers."""
  b1, b2 = cfg.beta1, cfg.beta2
  b1p, b2p = s["beta1_power"], s["beta2_power"]
  g = _decayed(cfg, w, g)
  m = s["m"] + (g - s["m"]) * (1 - b1)
  v = s["v"] + (g * g - s["v"]) * (1 - b2)
  # lr_t in double as in monolith (B.2.5), stored as float32.
  lr_t = tf.cast(
      tf.cast(lr, tf.float64) * tf.sqrt(1.0 - tf.cast(b2p, tf.float64)) /
      (1.0 - tf.cast(b1p, tf.float64)), tf.float32)
  new = {"m": m, "v": v}
  denom_v = v
  if amsgrad:
    denom_v = tf.maximum(s["vhat"], v)
    new["vhat"] = denom_v
  numer = (1 - b1) * g + b1 * m if cfg.use_nesterov else m
  # The denominator is 0 only when epsilon == 0 and v == 0 (g' == 0 so far,
  # so m == 0): no step instead of 0/0.
  step = tf.math.divide_no_nan(
      tf.cast(numer * lr_t, tf.float64),
      tf.sqrt(tf.cast(denom_v, tf.float64)) + cfg.epsilon)
  new["beta1_power"] = b1p * b1
  new["beta2_power"] = b2p * b2
  return w - tf.cast(step, tf.float32), new


def adam(cfg, w, s, g, lr, gs):
  """adam (B.2.5); restores correctly (A.4)."""
  del gs
  return _adam_like(cfg, w, s, g, lr, amsgrad=False)


def amsgrad(cfg, w, s, g, lr, gs):
  """amsgrad (B.2.6): adam with `vhat = max(vhat, v)` in the denominator."""
  del gs
  return _adam_like(cfg, w, s, g, lr, amsgrad=True)


def momentum(cfg, w, s, g, lr, gs):
  """momentum (B.2.7), plain or nesterov."""
  del gs
  mu = cfg.momentum
  n_new = mu * s["n"] - lr * _decayed(cfg, w, g)
  if cfg.use_nesterov:
    w_new = w - mu * s["n"] + (1 + mu) * n_new
  else:
    w_new = w + n_new
  return w_new, {"n": n_new}


def moving_average(cfg, w, s, g, lr, gs):
  """moving_average (B.2.8): `w = mu w + (1 - mu) g`; lr is ignored."""
  del lr, gs
  return cfg.momentum * w + (1 - cfg.momentum) * g, s


def _rmsprop(cfg, w, s, g, lr, decay_gradient):
  """rmsprop v1 / v2 (B.2.9, B.2.10), computed in double like monolith."""
  mu = cfg.momentum
  dx = tf.cast(_decayed(cfg, w, g), tf.float64)
  n64 = tf.cast(s["n"], tf.float64)
  scale = (1 - mu) if decay_gradient else 1.0
  n = tf.cast(mu * n64 + scale * dx * dx, tf.float32)
  eta = tf.cast(lr, tf.float64) / tf.cast(tf.sqrt(n) + 1.0, tf.float64)
  w_new = tf.cast(tf.cast(w, tf.float64) - eta * dx, tf.float32)
  return w_new, {"n": n}


def rmsprop(cfg, w, s, g, lr, gs):
  """rmsprop v1 (B.2.9): uses the proto `learning_rate`, not the lr tensor."""
  del lr, gs
  return _rmsprop(cfg, w, s, g, tf.constant(cfg.learning_rate), True)


def rmspropv2(cfg, w, s, g, lr, gs):
  """rmspropv2 (B.2.10): `n = mu n + dx^2`, lr from the lr tensor."""
  del gs
  return _rmsprop(cfg, w, s, g, lr, False)


def group_adagrad(cfg, w, s, g, lr, gs):
  """group_adagrad (B.2.11): group-lasso proximal Adagrad over the segment.

  At `lr == 0` (eta = 0; monolith: NaN) the weights are unchanged, which is
  the formula's limit for `lr -> 0`; so are they where `beta + sqrt(s) == 0`
  (zero `beta` and `initial_accumulator_value` and only zero gradients so
  far). The accumulator `s` is updated in both cases.
  """
  del gs
  g = _decayed(cfg, w, g)
  gss = s["grad_square_sum"] + tf.reduce_max(g * g, axis=1, keepdims=True)
  denom = cfg.beta + tf.sqrt(gss)
  eta = _safe_div(lr, denom)
  z = g - _safe_div(w, eta)
  z_norm = tf.norm(z, axis=1, keepdims=True)
  l2 = cfg.l2_regularization_strength
  shrunk = -eta * _safe_div(z_norm - l2, z_norm) * z
  w_new = tf.where(z_norm < l2, tf.zeros_like(w), shrunk)
  w_new = tf.where(tf.equal(eta, 0.0), w, w_new)
  return w_new, {"grad_square_sum": gss}


def group_ftrl(cfg, w, s, g, lr, gs):
  """group_ftrl (B.2.13 helpers): per-dim FTRL state, group-l1 shrinkage.

  `n += g^2`, `z += g - (sqrt(n_new) - sqrt(n_old)) / lr w`, `|z|` the group
  norm; `w_i = lr z_i (l1 - |z|) / |z| / (beta + sqrt(n_i) + l2 lr)` where
  `|z| >= l1`, else 0. Not runnable in monolith (its factory throws).
  """
  del gs
  n_old, z = s["norm"], s["zero"]
  n = n_old + g * g
  z_new = z + g - _safe_div(tf.sqrt(n) - tf.sqrt(n_old), lr) * w
  z_norm = tf.norm(z_new, axis=1, keepdims=True)
  l1, l2 = cfg.l1_regularization_strength, cfg.l2_regularization_strength
  denom = cfg.beta + tf.sqrt(n) + l2 * lr
  # denom == 0 only for a dim with beta == 0 and n == 0, whose z is 0.
  shrunk = _safe_div(lr * z_new * _safe_div(l1 - z_norm, z_norm), denom)
  w_new = tf.where(z_norm >= l1, shrunk, tf.zeros_like(w))
  frozen = tf.equal(lr, 0.0)
  return (tf.where(frozen, w, w_new), {
      "norm": tf.where(frozen, n_old, n),
      "zero": tf.where(frozen, z, z_new)
  })


def dynamic_wd_adagrad(cfg, w, s, g, lr, gs):
  """dynamic_wd_adagrad (B.2.14 helpers): coupled or decoupled decay.

  Coupled (`decouple_weight_decay` false): exactly `adagrad`. Decoupled:
  `n += g^2; w -= lr/sqrt(n) g + lr wdf w`.
  """
  del gs
  if not cfg.decouple_weight_decay:
    w_new, new = adagrad(cfg, w, {"norm": s["norm"]}, g, lr, None)
    return w_new, new
  n = s["norm"] + g * g
  w_new = w - _safe_div(lr, tf.sqrt(n)) * g - lr * cfg.weight_decay_factor * w
  return w_new, {"norm": n}


def batch_softmax(cfg, w, s, g, lr, gs):
  """batch_softmax (B.2.12): `B = (1-a) B + a (gs - A)`, `A = gs`; a = lr."""
  del cfg, g
  last = s["global_step"]
  gs = tf.cast(gs, tf.int64)
  delta = tf.cast(gs - last, tf.float32)
  w_new = (1 - lr) * w + lr * delta
  return w_new, {"global_step": tf.broadcast_to(gs, tf.shape(last))}


_NORM = Slot("norm", init="initial_accumulator_value")

RULES: Dict[str, Rule] = {
    "sgd":
        Rule((), sgd),
    "adagrad":
        Rule((_NORM,), adagrad),
    "ftrl":
        Rule((_NORM, Slot("zero")), ftrl),
    "adadelta":
        Rule((Slot("accum"), Slot("accum_update")), adadelta),
    "adam":
        Rule((Slot("m"), Slot("v"),
              Slot("beta1_power", per_dim=False, init="beta1"),
              Slot("beta2_power", per_dim=False, init="beta2")), adam),
    "amsgrad":
        Rule((Slot("m"), Slot("v"), Slot("vhat"),
              Slot("beta1_power", per_dim=False, init="beta1"),
              Slot("beta2_power", per_dim=False, init="beta2")), amsgrad),
    "momentum":
        Rule((Slot("n"),), momentum),
    "moving_average":
        Rule((), moving_average, uses_lr=False),
    "rmsprop":
        Rule((Slot("n"),), rmsprop, uses_lr=False),
    "rmspropv2":
        Rule((Slot("n"),), rmspropv2),
    "group_adagrad":
        Rule((Slot("grad_square_sum",
                   per_dim=False,
                   init="initial_accumulator_value"),), group_adagrad),
    "group_ftrl":
        Rule((_NORM, Slot("zero")), group_ftrl),
    "dynamic_wd_adagrad":
        Rule((_NORM,), dynamic_wd_adagrad),
    "batch_softmax":
        Rule((Slot("global_step", per_dim=False, init=0, dtype=tf.int64),),
             batch_softmax),
}

# Fields that have no update rule anywhere; True is rejected.
_UNSUPPORTED_FLAGS = {
    "dynamic_wd_adagrad": ("enable_dynamic_wd", "flip_direction"),
}


def rule_for(opt_config: embedding_hash_table_pb2.OptimizerConfig,
             where: str = "opt_config") -> Tuple[str, object, Rule]:
  """Selects the rule of an `OptimizerConfig`.

  Args:
    opt_config: The segment's optimizer config.
    where: How to name the config in error messages.

  Returns:
    `(member, member_config, rule)`.

  Raises:
    ValueError: No member is set, the member is `dc` or another member
      without a rule, or `enable_dynamic_wd` / `flip_direction` is true.
  """
  member = opt_config.WhichOneof("type")
  if member is None:
    raise ValueError(
        f"{where}: no optimizer is set; set one of {sorted(RULES)}")
  if member not in RULES:
    hint = (" (dc needs the stale value a worker read, which no config path "
            "provides)" if member == "dc" else "")
    raise ValueError(f"{where}: optimizer {member!r} has no update rule"
                     f"{hint}; supported: {sorted(RULES)}")
  cfg = getattr(opt_config, member)
  for flag in _UNSUPPORTED_FLAGS.get(member, ()):
    if getattr(cfg, flag):
      raise ValueError(
          f"{where}: {member}.{flag} is true, but it has no update rule "
          f"(neither in monolith nor here); set it to false")
  return member, cfg, RULES[member]


def slot_layout(rule: Rule, dim: int) -> List[Tuple[Slot, int]]:
  """The rule's slots with their widths for a segment of `dim` dims."""
  return [(slot, slot.width(dim)) for slot in rule.slots]
