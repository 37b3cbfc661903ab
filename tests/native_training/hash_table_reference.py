"""NumPy reference of the hash table's optimizer rules, for the tests only.

Written from HASH_TABLE_SPEC.md Part B section 2 (monolith's update formulas)
and section 1.2 (slot layout and initial values), with the deliberate
differences of Part A.4:

* ftrl with `l1 > 0` uses the standard `sign(z)` shrinkage;
* adagrad's weight decay is coupled on every dim (the scalar path of B.2.2,
  not the AVX raw-gradient quirk);
* group_ftrl (B.2.13 helpers) and dynamic_wd_adagrad (B.2.14 helpers,
  coupled and decoupled) run;
* no NaN or inf at `lr == 0` (or where a denominator is zero because only
  zero gradients were seen): ftrl and group_ftrl then leave the entry (weights
  and state) unchanged, group_adagrad leaves the weights unchanged (the
  formula's `lr -> 0` limit) and still accumulates; where `sqrt(n)` or a
  similar denominator is 0 the numerator is 0 too and the step is 0;
* stochastic rounding (B.2.16) hands the rule `global_step = 0`; the rounding
  itself is random, so the reference gives the float32 result and
  `fp16_neighbours` the two values it may round to.

Every rule works on a batch of distinct entries of one segment:

  rule(cfg, w, slots, g, lr, gs) -> (new_w, new_slots)

`w` and `g` are float32 `[n, d]`, `slots` maps a slot name (the
`*OptimizerDump` field) to `[n, d]` (per dim) or `[n, 1]` (per entry) rows,
`lr` a float32 scalar, `gs` an int. Arithmetic is float32, float64 where the
spec says "(double)".

`ReferenceTable` drives the rules like the table does: new ids are
initialized first, `apply(..., dedup=False)` takes one sequential step per
occurrence and `apply(..., dedup=True)` sums the gradients of equal ids and
takes one step per unique id.
"""

import dataclasses
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

F32 = np.float32
F64 = np.float64
Slots = Dict[str, np.ndarray]


def _c(value) -> np.float32:
  """A config field as a float32 scalar (protos store float32)."""
  return F32(value)


def _div0(x, y):
  """`x / y` in the dtype of the inputs, 0 where `y == 0`."""
  x, y = np.broadcast_arrays(x, y)
  out = np.zeros_like(x)
  nz = y != 0
  out[nz] = x[nz] / y[nz]
  return out


def _decayed(cfg, w, g):
  """`g' = g + wdf * w`: coupled L2 weight decay (Part B section 2)."""
  wdf = _c(getattr(cfg, "weight_decay_factor", 0.0))
  return g + wdf * w if wdf else g


# --------------------------------------------------------------- the rules


def sgd(cfg, w, s, g, lr, gs):
  """B.2.1: `w -= lr g`."""
  del cfg, s, gs
  return w - lr * g, {}


def adagrad(cfg, w, s, g, lr, gs):
  """B.2.2 scalar path on every dim: `n += g'^2; w -= (lr/sqrt(n)) g'`."""
  del gs
  g = _decayed(cfg, w, g)
  n = s["norm"] + g * g
  return w - _div0(np.broadcast_to(lr, n.shape), np.sqrt(n)) * g, {"norm": n}


def ftrl(cfg, w, s, g, lr, gs):
  """B.2.3 with the standard `sign(z) l1` shrinkage (A.4)."""
  del gs
  if lr == 0:
    return w.copy(), {k: v.copy() for k, v in s.items()}
  n_old, z = s["norm"], s["zero"]
  n = n_old + g * g
  sigma = (np.sqrt(n) - np.sqrt(n_old)) / lr
  z = z + g - sigma * w
  l1 = _c(cfg.l1_regularization_strength)
  denom = np.sqrt(n) + _c(cfg.beta) + _c(cfg.l2_regularization_strength) * lr
  value = _div0(lr * (np.sign(z) * l1 - z), denom)
  w_new = np.where(np.abs(z) > l1, value, F32(0)).astype(F32)
  return w_new, {"norm": n, "zero": z}


def adadelta(cfg, w, s, g, lr, gs):
  """B.2.4: epsilon inside both square roots."""
  del gs
  rho, eps = _c(cfg.averaging_ratio), _c(cfg.epsilon)
  g = _decayed(cfg, w, g)
  a = rho * s["accum"] + (F32(1) - rho) * g * g
  u = _div0(np.sqrt(s["accum_update"] + eps), np.sqrt(a + eps)) * g
  w_new = w - lr * u
  au = rho * s["accum_update"] + (F32(1) - rho) * u * u
  return w_new, {"accum": a, "accum_update": au}


def _adam_like(cfg, w, s, g, lr, amsgrad_rule):
  """B.2.5 / B.2.6: per-entry bias-correction powers, lr_t in double."""
  b1, b2, eps = _c(cfg.beta1), _c(cfg.beta2), _c(cfg.epsilon)
  b1p, b2p = s["beta1_power"], s["beta2_power"]
  # (double) lr_t = lr sqrt(1 - b2p) / (1 - b1p), stored as float32.
  lr_t = (F64(lr) * np.sqrt(
      (F32(1) - b2p).astype(F64)) / (F32(1) - b1p).astype(F64)).astype(F32)
  g = _decayed(cfg, w, g)
  m = s["m"] + (g - s["m"]) * (F32(1) - b1)
  v = s["v"] + (g * g - s["v"]) * (F32(1) - b2)
  out = {"m": m, "v": v}
  denom = v
  if amsgrad_rule:
    denom = np.maximum(s["vhat"], v)
    out["vhat"] = denom
  numer = (F32(1) - b1) * g + b1 * m if cfg.use_nesterov else m
  # (double) w -= N lr_t / (sqrt(v) + eps).
  step = _div0((numer * lr_t).astype(F64),
               np.sqrt(denom.astype(F64)) + F64(eps))
  w_new = (w.astype(F64) - step).astype(F32)
  out["beta1_power"] = b1p * b1
  out["beta2_power"] = b2p * b2
  return w_new, out


def adam(cfg, w, s, g, lr, gs):
  """B.2.5 (restores correctly, A.4)."""
  del gs
  return _adam_like(cfg, w, s, g, lr, False)


def amsgrad(cfg, w, s, g, lr, gs):
  """B.2.6: `vhat = max(vhat, v)` in the denominator."""
  del gs
  return _adam_like(cfg, w, s, g, lr, True)


def momentum(cfg, w, s, g, lr, gs):
  """B.2.7, plain or nesterov."""
  del gs
  mu = _c(cfg.momentum)
  dx = lr * _decayed(cfg, w, g)
  n_new = mu * s["n"] - dx
  if cfg.use_nesterov:
    w_new = w - mu * s["n"] + (F32(1) + mu) * n_new
  else:
    w_new = w + n_new
  return w_new, {"n": n_new}


def moving_average(cfg, w, s, g, lr, gs):
  """B.2.8: `w = mu w + (1 - mu) g`; lr is ignored."""
  del s, lr, gs
  mu = _c(cfg.momentum)
  return mu * w + (F32(1) - mu) * g, {}


def _rmsprop(cfg, w, s, g, lr, decay_gradient):
  """B.2.9 / B.2.10, in double where the spec says so."""
  mu = F64(_c(cfg.momentum))
  wdf = F64(_c(cfg.weight_decay_factor))
  dx = g.astype(F64) + wdf * w.astype(F64)
  scale = (F64(1) - mu) if decay_gradient else F64(1)
  n = (mu * s["n"].astype(F64) + scale * dx * dx).astype(F32)
  eta = F64(lr) / (np.sqrt(n) + F32(1)).astype(F64)
  return (w.astype(F64) - eta * dx).astype(F32), {"n": n}


def rmsprop(cfg, w, s, g, lr, gs):
  """B.2.9 (v1): the PROTO learning_rate; the lr tensor is ignored."""
  del lr, gs
  return _rmsprop(cfg, w, s, g, _c(cfg.learning_rate), True)


def rmspropv2(cfg, w, s, g, lr, gs):
  """B.2.10: `n = mu n + dx^2`, lr from the lr tensor."""
  del gs
  return _rmsprop(cfg, w, s, g, lr, False)


def group_adagrad(cfg, w, s, g, lr, gs):
  """B.2.11: group-lasso proximal Adagrad over the whole segment."""
  del gs
  g = _decayed(cfg, w, g)
  gss = s["grad_square_sum"] + np.max(g * g, axis=1, keepdims=True)
  denom = _c(cfg.beta) + np.sqrt(gss)
  eta = _div0(np.broadcast_to(lr, denom.shape).astype(F32), denom)
  frozen = eta == 0  # lr == 0, or no gradient yet with beta == iav == 0
  safe_eta = np.where(frozen, F32(1), eta)
  z = g - w / safe_eta
  z_norm = np.sqrt(np.sum(z * z, axis=1, keepdims=True))
  l2 = _c(cfg.l2_regularization_strength)
  shrunk = -safe_eta * _div0(z_norm - l2, z_norm) * z
  w_new = np.where(z_norm < l2, F32(0), shrunk)
  w_new = np.where(frozen, w, w_new).astype(F32)
  return w_new, {"grad_square_sum": gss}


def group_ftrl(cfg, w, s, g, lr, gs):
  """B.2.13 helpers: per-dim FTRL accumulators, group-l1 shrinkage.

  `w_i = lr z_i (l1 - |z|)/|z| / (beta + sqrt(n_i) + l2 lr)` where
  `|z| >= l1`, else 0.
  """
  del gs
  if lr == 0:
    return w.copy(), {k: v.copy() for k, v in s.items()}
  n_old, z = s["norm"], s["zero"]
  n = n_old + g * g
  z = z + g - (np.sqrt(n) - np.sqrt(n_old)) / lr * w
  z_norm = np.sqrt(np.sum(z * z, axis=1, keepdims=True))
  l1 = _c(cfg.l1_regularization_strength)
  l2 = _c(cfg.l2_regularization_strength)
  denom = _c(cfg.beta) + np.sqrt(n) + l2 * lr
  value = _div0(
      lr * z * _div0(np.broadcast_to(l1 - z_norm, z.shape),
                     np.broadcast_to(z_norm, z.shape)), denom)
  w_new = np.where(z_norm >= l1, value, F32(0)).astype(F32)
  return w_new, {"norm": n, "zero": z}


def dynamic_wd_adagrad(cfg, w, s, g, lr, gs):
  """B.2.14 helpers. Coupled: adagrad (every dim). Decoupled:
  `n += g^2; w -= (lr/sqrt(n)) g + lr wdf w`."""
  if not cfg.decouple_weight_decay:
    return adagrad(cfg, w, s, g, lr, gs)
  n = s["norm"] + g * g
  wdf = _c(cfg.weight_decay_factor)
  step = _div0(np.broadcast_to(lr, n.shape), np.sqrt(n)) * g
  return w - step - lr * wdf * w, {"norm": n}


def batch_softmax(cfg, w, s, g, lr, gs):
  """B.2.12: `B = (1 - a) B + a float(gs - A)`, `A = gs`; a = lr."""
  del cfg, g
  last = s["global_step"]
  delta = (np.int64(gs) - last).astype(F32)
  w_new = (F32(1) - lr) * w + lr * delta
  return w_new, {"global_step": np.full_like(last, gs)}


RULES: Dict[str, Callable] = {
    "sgd": sgd,
    "adagrad": adagrad,
    "ftrl": ftrl,
    "adadelta": adadelta,
    "adam": adam,
    "amsgrad": amsgrad,
    "momentum": momentum,
    "moving_average": moving_average,
    "rmsprop": rmsprop,
    "rmspropv2": rmspropv2,
    "group_adagrad": group_adagrad,
    "group_ftrl": group_ftrl,
    "dynamic_wd_adagrad": dynamic_wd_adagrad,
    "batch_softmax": batch_softmax,
}

# ---------------------------------------------------- initial slot values


def initial_slots(member: str, cfg, dim: int) -> Slots:
  """The state of a new entry (B section 1.2 table), one row.

  Per-dim slots are `[1, dim]`, per-entry slots `[1, 1]`; batch_softmax's
  `global_step` is int64.
  """
  per_dim = lambda v: np.full([1, dim], v, F32)
  one = lambda v: np.full([1, 1], v, F32)
  if member in ("sgd", "moving_average"):
    return {}
  if member in ("adagrad", "dynamic_wd_adagrad"):
    return {"norm": per_dim(cfg.initial_accumulator_value)}
  if member in ("ftrl", "group_ftrl"):
    return {"norm": per_dim(cfg.initial_accumulator_value), "zero": per_dim(0)}
  if member == "adadelta":
    return {"accum": per_dim(0), "accum_update": per_dim(0)}
  if member == "adam":
    return {
        "m": per_dim(0),
        "v": per_dim(0),
        "beta1_power": one(cfg.beta1),
        "beta2_power": one(cfg.beta2)
    }
  if member == "amsgrad":
    return {
        "m": per_dim(0),
        "v": per_dim(0),
        "vhat": per_dim(0),
        "beta1_power": one(cfg.beta1),
        "beta2_power": one(cfg.beta2)
    }
  if member in ("momentum", "rmsprop", "rmspropv2"):
    return {"n": per_dim(0)}
  if member == "group_adagrad":
    return {"grad_square_sum": one(cfg.initial_accumulator_value)}
  if member == "batch_softmax":
    return {"global_step": np.zeros([1, 1], np.int64)}
  raise ValueError(f"no reference for optimizer {member!r}")


def initial_weights(init_config, dim: int) -> np.ndarray:
  """The initializer value of a new entry (B section 3), `[dim]`.

  random_uniform has no closed form (it is a hash of seed and id) and raises.
  """
  member = init_config.WhichOneof("type")
  if member == "zeros":
    return np.zeros([dim], F32)
  if member == "ones":
    return np.ones([dim], F32)
  if member == "constants":
    return np.full([dim], init_config.constants.constant, F32)
  raise ValueError(f"no closed-form reference for initializer {member!r}")


# ------------------------------------------------- stochastic rounding


def fp16_neighbours(v) -> Tuple[np.ndarray, np.ndarray]:
  """The float16 grid points `(down, up)` around float32 `v` (as float32).

  `down <= v <= up`; both equal `v` when it is on the grid. Values are first
  clipped to the finite float16 range [-65504, 65504].
  """
  v = np.clip(np.asarray(v, F32), F32(-65504), F32(65504))
  h = v.astype(np.float16)  # round to nearest
  hf = h.astype(F32)
  below = np.nextafter(h, np.float16(-np.inf)).astype(F32)
  above = np.nextafter(h, np.float16(np.inf)).astype(F32)
  down = np.where(hf > v, below, hf)
  up = np.where(hf < v, above, hf)
  return down, up


def on_fp16_grid(x) -> np.ndarray:
  """Whether each float32 value is exactly a float16 value."""
  x = np.asarray(x, F32)
  return x.astype(np.float16).astype(F32) == x


def is_stochastic_rounding_of(rounded, v) -> np.ndarray:
  """Whether each `rounded` is one of the float16 neighbours of `v`."""
  down, up = fp16_neighbours(v)
  rounded = np.asarray(rounded, F32)
  return (rounded == down) | (rounded == up)


def rounding_variance(v) -> np.ndarray:
  """Variance of an unbiased rounding of `v` to its neighbours:
  `(v - down)(up - v)`, in float64."""
  down, up = fp16_neighbours(v)
  v = np.asarray(v, F64)
  return (v - down.astype(F64)) * (up.astype(F64) - v)


# ------------------------------------------------------ learning rates


def polynomial_decay(step: int,
                     initial: float,
                     decay_steps: int,
                     end: float = 0.0001,
                     power: float = 1.0) -> np.float32:
  """`tf.compat.v1.train.polynomial_decay` without cycle, in float32."""
  frac = F32(min(step, decay_steps)) / F32(decay_steps)
  return (F32(initial) - F32(end)) * (F32(1) - frac)**F32(power) + F32(end)


# ---------------------------------------------------------- the driver


@dataclasses.dataclass
class RefSegment:
  """One segment of a reference entry."""
  dim: int
  offset: int
  member: str
  cfg: object
  stochastic_rounding: bool
  init_config: object


class ReferenceTable:
  """A dict-of-ids reference table driving the NumPy rules.

  Args:
    table_config: The `EmbeddingHashTableConfig` (its entry segments are
      read: dims, initializer, optimizer member and config,
      `stochastic_rounding_float16`).
  """

  def __init__(self, table_config):
    self.segments: List[RefSegment] = []
    offset = 0
    for seg in table_config.entry_config.segments:
      member = seg.opt_config.WhichOneof("type")
      self.segments.append(
          RefSegment(seg.dim_size, offset, member,
                     getattr(seg.opt_config, member),
                     seg.opt_config.stochastic_rounding_float16,
                     seg.init_config))
      offset += seg.dim_size
    self.dim = offset
    self.w: Dict[int, np.ndarray] = {}
    self.slots: Dict[int, Dict[Tuple[int, str], np.ndarray]] = {}

  # -- state

  def _ensure(self, i: int) -> None:
    if i in self.w:
      return
    self.w[i] = np.concatenate(
        [initial_weights(s.init_config, s.dim) for s in self.segments])
    self.slots[i] = {}
    for k, s in enumerate(self.segments):
      for name, value in initial_slots(s.member, s.cfg, s.dim).items():
        self.slots[i][(k, name)] = value[0]

  def assign(self, ids: Sequence[int], values) -> None:
    """Initializes new ids, then sets their weights (later rows win)."""
    values = np.asarray(values, F32).reshape([len(ids), self.dim])
    for i, row in zip(ids, values):
      self._ensure(int(i))
      self.w[int(i)] = row.copy()

  def load(self, ids, weights, slots) -> None:
    """Replaces the state of `ids` (e.g. with a table's export)."""
    for r, i in enumerate(ids):
      i = int(i)
      self._ensure(i)
      self.w[i] = np.asarray(weights[r], F32).copy()
      for key, value in slots.items():
        self.slots[i][key] = np.asarray(value[r]).copy()

  def weights(self, ids) -> np.ndarray:
    """`[n, D]` weights of `ids` (all present)."""
    return np.stack([self.w[int(i)] for i in ids])

  def slot(self, key: Tuple[int, str], ids) -> np.ndarray:
    """`[n, width]` rows of slot `key = (segment, name)`."""
    return np.stack([self.slots[int(i)][key] for i in ids])

  def slot_keys(self) -> List[Tuple[int, str]]:
    """Every `(segment, name)` of the entry layout."""
    return [(k, name)
            for k, s in enumerate(self.segments)
            for name in initial_slots(s.member, s.cfg, s.dim)]

  # -- optimizer steps

  def step(self, ids: Sequence[int], grads, lrs, gs: int) -> None:
    """One optimizer step of distinct `ids` with gradient rows `grads`."""
    ids = [int(i) for i in ids]
    if len(set(ids)) != len(ids):
      raise ValueError(f"step: ids must be distinct, got {ids}")
    grads = np.asarray(grads, F32).reshape([len(ids), self.dim])
    for i in ids:
      self._ensure(i)
    for k, s in enumerate(self.segments):
      cols = slice(s.offset, s.offset + s.dim)
      w = np.stack([self.w[i][cols] for i in ids])
      slots = {
          name: np.stack([self.slots[i][(k, name)] for i in ids])
          for name in initial_slots(s.member, s.cfg, s.dim)
      }
      rule_gs = 0 if s.stochastic_rounding else gs
      new_w, new_slots = RULES[s.member](s.cfg, w, slots, grads[:, cols],
                                         F32(lrs[k]), rule_gs)
      for r, i in enumerate(ids):
        self.w[i][cols] = new_w[r]
        for name, value in new_slots.items():
          self.slots[i][(k, name)] = np.array(value[r])

  def apply(self, ids, grads, lrs, gs: int, dedup: bool = False) -> None:
    """Like `HashTable.apply_gradients`.

    `dedup=False`: one sequential step per occurrence (later occurrences see
    the updated state). `dedup=True`: gradients of equal ids summed (in
    occurrence order), one step per unique id.
    """
    ids = [int(i) for i in ids]
    grads = np.asarray(grads, F32).reshape([len(ids), self.dim])
    if not dedup:
      for i, row in zip(ids, grads):
        self.step([i], row[None, :], lrs, gs)
      return
    unique: List[int] = []
    summed: Dict[int, np.ndarray] = {}
    for i, row in zip(ids, grads):
      if i not in summed:
        unique.append(i)
        summed[i] = row.copy()
      else:
        summed[i] = summed[i] + row
    self.step(unique, np.stack([summed[i] for i in unique]), lrs, gs)


def sorted_export(export) -> Tuple[np.ndarray, np.ndarray, Dict]:
  """A `HashTable.export_entries()` result as NumPy, sorted by id.

  Returns:
    `(ids, weights, {(segment, name): rows})`.
  """
  ids = np.asarray(export["ids"])
  order = np.argsort(ids)
  return (ids[order], np.asarray(export["weights"])[order], {
      k: np.asarray(v)[order] for k, v in export["slots"].items()
  })


def rows_for(export_ids: np.ndarray, ids: Sequence[int]) -> np.ndarray:
  """Positions of `ids` in a sorted export's `export_ids`."""
  pos = np.searchsorted(export_ids, np.asarray(ids, np.int64))
  if np.any(pos >= len(export_ids)) or np.any(export_ids[pos] != ids):
    raise KeyError(f"ids {ids} not all exported: {export_ids}")
  return pos
