"""Click logs for the demo: ragged feature columns, the synthetic log, AUC.

A `ClickLog` is a time-ordered list of impressions. Every example has a
label (1.0 for a click), a timestamp (int64 seconds) and, per sparse feature
slot, a variable number of feature ids (a `RaggedColumn`, possibly empty).
Feature ids look like monolith's v2 fids: the slot number in bits 48-62, the
raw id in the low 48 bits (`fids`), so a table's per-slot expiry
(`SlotExpireTimeConfig`) applies to them.

`SlotSpec` says how the demo's model uses a slot; `generate_click_log` makes
the synthetic log (`movielens.read_movielens` reads the real one).
"""

import collections
import dataclasses
from typing import Dict, Optional, Tuple

import numpy as np

SLOT_SHIFT = 48
_RAW_MASK = (1 << SLOT_SHIFT) - 1

# Combiner names understood by the demo's model.
COMBINERS = ("ReduceSum", "ReduceMean", "FirstN")
# Table kinds: "id" rows are [bias, vector]; "tag" rows are a vector.
KINDS = ("id", "tag")
SIDES = ("user", "item")


@dataclasses.dataclass(frozen=True)
class SlotSpec:
  """How the demo uses one sparse feature slot.

  Attributes:
    number: The fid slot number (1 to 32767).
    kind: "id" (rows `[bias, --id_dim vector]`) or "tag" (a `--tag_dim`
      vector); slots of one kind get equal table configs and so share a
      table.
    combiner: "ReduceSum", "ReduceMean" or "FirstN" (the history).
    side: "user" or "item": which side of the user x item crosses it joins.
  """
  number: int
  kind: str
  combiner: str
  side: str

  def __post_init__(self):
    if not 1 <= self.number < (1 << 15):
      raise ValueError("SlotSpec: number must be in [1, 32767], got "
                       f"{self.number}")
    for field, allowed in (("kind", KINDS), ("combiner", COMBINERS), ("side",
                                                                      SIDES)):
      value = getattr(self, field)
      if value not in allowed:
        raise ValueError(f"SlotSpec: {field} must be one of {list(allowed)}, "
                         f"got {value!r}")


def fids(slot_number: int, raw_ids) -> np.ndarray:
  """Feature ids of a slot: `slot_number << 48 | (raw_id & (2**48 - 1))`.

  Args:
    slot_number: The slot (1 to 32767).
    raw_ids: Non-negative integer ids (array-like).

  Returns:
    int64 array of fids.
  """
  raw = np.asarray(raw_ids, dtype=np.int64) & _RAW_MASK
  return (np.int64(slot_number) << SLOT_SHIFT) | raw


class RaggedColumn(object):
  """One sparse slot over all examples: flat ids plus row lengths.

  Args:
    values: int64 ids of all rows, concatenated.
    row_lengths: ids per row.
  """

  def __init__(self, values, row_lengths):
    self.values = np.asarray(values, dtype=np.int64)
    self.row_lengths = np.asarray(row_lengths, dtype=np.int64)
    self.row_splits = np.concatenate([[0], np.cumsum(self.row_lengths)])

  def __len__(self):
    return len(self.row_lengths)

  def first(self, n: int) -> "RaggedColumn":
    """The first `n` ids of every row (what a `FirstN(n)` combiner reads)."""
    lengths = np.minimum(self.row_lengths, n)
    position = np.arange(len(self.values)) - np.repeat(
        self.row_splits[:-1], self.row_lengths)  # Position within its row.
    return RaggedColumn(self.values[position < n], lengths)

  def take(self, rows) -> Tuple[np.ndarray, np.ndarray]:
    """Returns (values, row_lengths) of the given example rows, in order."""
    rows = np.asarray(rows, dtype=np.int64)
    lengths = self.row_lengths[rows]
    starts = self.row_splits[rows]
    out_starts = np.cumsum(lengths) - lengths
    flat = np.repeat(starts - out_starts, lengths) + np.arange(lengths.sum())
    return self.values[flat], lengths


class ClickLog(object):
  """Examples of a click log, in time order.

  Args:
    slots: slot name -> RaggedColumn of fids, one row per example.
    labels: float32 `[n]`, 1.0 for a click.
    timestamps: int64 `[n]` seconds, non-decreasing.
    click_prob: float64 `[n]`, the hidden model's click probability
      (synthetic logs only), or None.
  """

  def __init__(self,
               slots: Dict[str, RaggedColumn],
               labels,
               timestamps,
               click_prob=None):
    self.slots = slots
    self.labels = np.asarray(labels, dtype=np.float32)
    self.timestamps = np.asarray(timestamps, dtype=np.int64)
    self.click_prob = click_prob

  def __len__(self):
    return len(self.labels)

  def split(self, num_first: int) -> Tuple["ClickLog", "ClickLog"]:
    """Returns (first num_first examples, the rest) as two ClickLogs."""
    parts = []
    for rows in (np.arange(num_first), np.arange(num_first, len(self))):
      slots = collections.OrderedDict((name, RaggedColumn(*column.take(rows)))
                                      for name, column in self.slots.items())
      prob = None if self.click_prob is None else self.click_prob[rows]
      parts.append(
          ClickLog(slots, self.labels[rows], self.timestamps[rows], prob))
    return tuple(parts)


class BatchStream(object):
  """Training batches in time order, the training part repeated as needed.

  Step s (1-based global step) reads batch (s - 1) mod batches-per-epoch, so
  a resumed run reads exactly the batches it would have read. Its clock
  (the `req_time` stamped on updated entries) is the time of the batch's
  last example, plus one epoch's span per earlier epoch, so time never runs
  backwards.
  """

  def __init__(self, log, batch_size):
    self._batch = batch_size
    self._per_epoch = len(log) // batch_size
    stamps = log.timestamps
    self._stamps = stamps
    self._span = int(stamps[self._per_epoch * batch_size - 1] - stamps[0]) + 1

  def rows(self, step):
    """Row indices of the batch of `step`."""
    k = (step - 1) % self._per_epoch
    return np.arange(k * self._batch, (k + 1) * self._batch)

  def clock(self, step):
    """Seconds: the log time of `step`."""
    epoch = (step - 1) // self._per_epoch
    k = (step - 1) % self._per_epoch
    return int(self._stamps[(k + 1) * self._batch - 1]) + epoch * self._span


# ---------------------------------------------------------------------------
# The synthetic click log.

# Shape of the synthetic catalogue: item i belongs to category
# i % _NUM_CATEGORIES; within a category, low item ranks are popular.
_NUM_CATEGORIES = 20
_ITEMS_PER_CATEGORY = 50
_NUM_ITEMS = _NUM_CATEGORIES * _ITEMS_PER_CATEGORY
_MAX_HISTORY = 60
# Coarse "vertical" ids in item_cats follow the category ids.
_CATEGORIES_PER_VERTICAL = 5
# The log streams over 30 days from 2024-01-01 00:00 UTC.
SYNTHETIC_START = 1704067200
SYNTHETIC_DAYS = 30

SYNTHETIC_SLOTS = collections.OrderedDict([
    ("item_id", SlotSpec(1, "id", "ReduceSum", "item")),
    ("item_cats", SlotSpec(2, "tag", "ReduceMean", "item")),
    ("user_hist", SlotSpec(3, "id", "FirstN", "user")),
    ("user_tags", SlotSpec(4, "tag", "ReduceSum", "user")),
])


def _popular_items(rng, categories):
  """Draws one item per category, popular (low-rank) items more often."""
  rank = np.floor(_ITEMS_PER_CATEGORY * rng.random(len(categories))**3)
  return rank.astype(np.int64) * _NUM_CATEGORIES + categories


def generate_click_log(num_examples: int, seed: int) -> ClickLog:
  """Generates the synthetic click log (deterministic given the seed).

  Every impression is an independent draw; impression i happens at
  `SYNTHETIC_START + i * 30 days / num_examples`. Slots (`SYNTHETIC_SLOTS`):
  `item_id` (the candidate, long-tail popularity), `item_cats` (its
  category and vertical, missing for some items), `user_hist` (items the
  user clicked before, most recent first, long-tail length, about 8%
  empty), `user_tags` (declared interests, a quarter empty). Users click
  items of the categories they like and good items.

  Args:
    num_examples: number of examples (one impression each).
    seed: seed of the numpy generator.

  Returns:
    A ClickLog with click_prob set.
  """
  rng = np.random.default_rng(seed)
  n = num_examples
  quality = rng.normal(0.0, 0.8, size=_NUM_ITEMS)
  liked = rng.integers(_NUM_CATEGORIES, size=(n, 2))

  def liked_or_random(owners, p_liked):
    """Per owner a category: one it likes with probability p_liked."""
    pick = liked[owners, rng.integers(2, size=len(owners))]
    other = rng.integers(_NUM_CATEGORIES, size=len(owners))
    return np.where(rng.random(len(owners)) < p_liked, pick, other)

  tag_lengths = rng.integers(0, 4, size=n)
  tags = liked_or_random(np.repeat(np.arange(n), tag_lengths), 0.7)

  hist_lengths = np.minimum(rng.geometric(0.08, size=n) - 1, _MAX_HISTORY)
  hist = _popular_items(
      rng, liked_or_random(np.repeat(np.arange(n), hist_lengths), 0.8))

  item_category = liked_or_random(np.arange(n), 0.4)
  item = _popular_items(rng, item_category)

  cat_lengths = rng.choice([0, 1, 2], size=n, p=[0.1, 0.45, 0.45])
  vertical = _NUM_CATEGORIES + item_category // _CATEGORIES_PER_VERTICAL
  cats = np.stack([item_category, vertical], axis=1)
  cats = cats[np.arange(2)[None, :] < cat_lengths[:, None]]

  likes_item = (liked == item_category[:, None]).any(axis=1)
  logit = -1.2 + 3.0 * likes_item + quality[item]
  click_prob = 1.0 / (1.0 + np.exp(-logit))
  labels = (rng.random(n) < click_prob).astype(np.float32)
  timestamps = SYNTHETIC_START + (np.arange(n, dtype=np.int64) *
                                  (SYNTHETIC_DAYS * 86400)) // max(n, 1)

  def column(name, raw, lengths):
    return RaggedColumn(fids(SYNTHETIC_SLOTS[name].number, raw), lengths)

  slots = collections.OrderedDict([
      ("item_id", column("item_id", item, np.ones(n))),
      ("item_cats", column("item_cats", cats, cat_lengths)),
      ("user_hist", column("user_hist", hist, hist_lengths)),
      ("user_tags", column("user_tags", tags, tag_lengths)),
  ])
  return ClickLog(slots, labels, timestamps, click_prob)


def roc_auc(labels, scores) -> float:
  """Area under the ROC curve, rank based (ties count one half).

  Args:
    labels: array of 0/1 (or bool) labels.
    scores: array of scores, higher meaning more likely positive.

  Returns:
    The AUC as a float, or NaN when only one class is present.
  """
  labels = np.asarray(labels).astype(bool).ravel()
  scores = np.asarray(scores, dtype=np.float64).ravel()
  num_pos = int(labels.sum())
  num_neg = labels.size - num_pos
  if num_pos == 0 or num_neg == 0:
    return float("nan")
  _, inverse, counts = np.unique(scores,
                                 return_inverse=True,
                                 return_counts=True)
  # Average 1-based rank of each distinct score.
  ends = np.cumsum(counts)
  mean_rank = ends - (counts - 1) / 2.0
  pos_rank_sum = mean_rank[inverse.ravel()][labels].sum()
  return float(
      (pos_rank_sum - num_pos * (num_pos + 1) / 2.0) / (num_pos * num_neg))


def describe(name: str,
             log: ClickLog,
             specs: Optional[Dict[str, SlotSpec]] = None) -> str:
  """One line for the log plus one per slot: mean length, share empty."""
  lines = [
      "{}: {:,} examples, {:.1%} clicked".format(name, len(log),
                                                 log.labels.mean())
  ]
  for slot, column in log.slots.items():
    combiner = specs[slot].combiner if specs else ""
    lines.append("  {:<16} {:<10} mean length {:5.2f}, empty {:5.1%}".format(
        slot, combiner, column.row_lengths.mean(),
        (column.row_lengths == 0).mean()))
  return "\n".join(lines)
