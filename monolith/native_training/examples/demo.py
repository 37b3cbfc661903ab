"""Trains a small click-through-rate model with monolith-tf, end to end.

    python -m monolith.native_training.examples.demo [--steps 400] [...]

What it does, in well under a minute on a 2-core CPU:

1. Generates a synthetic click log in memory (fixed seed). Every example has
   four sparse feature slots of variable length, some of them empty:
   `item_id` (the candidate item, long-tail popularity), `item_cats` (its
   category ids, missing for some items), `user_hist` (the items the user
   clicked before, most recent first, long-tail length) and `user_tags` (the
   user's declared interests). The label is drawn from a hidden model in
   which users click items of the categories they like and good items, so a
   model that reads the features can beat chance.
2. Describes every slot's embedding table with
   `monolith.native_training.entry`: `CombineAsSegment` segments (the
   initializer and Adagrad settings the table is built and trained with) and
   `CuckooHashTableConfig`, wrapped in a `HashTableConfigInstance` with its
   learning-rate functions. Slots whose instances print the same string share
   one optimizer group, and each group's stacked `call_learning_rate_fns()`
   tensor (a constant for the bias segment, a `PolynomialDecay` over the
   global step for the vector segment) sets the per-segment learning rate of
   that group's embedding updates.
3. Builds a TF1-style graph (`tf.compat.v1` placeholders and `Session`): per
   slot a `tf.RaggedTensor` of ids, hashed modulo the size of the slot's
   table (a TF variable), gathered into one embedding row per id and pooled
   by `monolith.native_training.embedding_combiners`: `ReduceSum` for ids
   and tags, `ReduceMean` for categories, `FirstN` for the history, which an
   attention over the candidate item then pools. A small DNN on top gives
   the click logit; the loss is the log loss.
4. Trains with a progress line (step, loss, AUC of recent batches,
   examples/s), reports the AUC on held-out examples, and writes each slot's
   `EmbeddingHashTableConfig` as pbtxt to `--output_dir`.

Run it with `--help` for the flags.
"""

# Quiet TensorFlow's C++ logs unless the user chose a level. TensorFlow reads
# the variable once, when it is loaded, so this must precede the imports
# below. (Under `python -m` the `monolith` package, imported first, has
# already loaded TensorFlow; it works when this file runs as a script.)
import os

_QUIET_TF = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse
import collections
import math
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
from google.protobuf import text_format

import monolith
from monolith.native_training import embedding_combiners
from monolith.native_training import entry
from monolith.native_training import learning_rate_functions
from monolith.native_training.runtime.hash_table import embedding_hash_table_pb2
# pylint: enable=g-import-not-at-top,wrong-import-position

# Shape of the synthetic catalogue: item i belongs to category
# i % _NUM_CATEGORIES; within a category, low item ranks are popular.
_NUM_CATEGORIES = 20
_ITEMS_PER_CATEGORY = 50
_NUM_ITEMS = _NUM_CATEGORIES * _ITEMS_PER_CATEGORY
_MAX_HISTORY = 60
# Coarse "vertical" ids in item_cats follow the category ids.
_CATEGORIES_PER_VERTICAL = 5

# Feature ids look like monolith fids: the slot number in the high bits.
_SLOT_SHIFT = 48

# Slot name -> (slot number, config group, combiner description).
_SLOTS = collections.OrderedDict([
    ("item_id", (1, "id", "ReduceSum")),
    ("item_cats", (2, "tag", "ReduceMean")),
    ("user_hist", (3, "id", "FirstN")),
    ("user_tags", (4, "tag", "ReduceSum")),
])

_MIN_HELDOUT = 200
_AUC_WINDOW_BATCHES = 20

# ---------------------------------------------------------------------------
# Command line.


def _int_at_least(minimum):
  """Returns an argparse type: an int that is at least `minimum`."""

  def parse(text):
    try:
      value = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(
          "expected an integer, got {!r}".format(text)) from None
    if value < minimum:
      raise argparse.ArgumentTypeError("must be >= {}, got {}".format(
          minimum, value))
    return value

  return parse


def _positive_float(text):
  """Argparse type: a finite float > 0."""
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(
        "expected a number, got {!r}".format(text)) from None
  if not math.isfinite(value) or value <= 0:
    raise argparse.ArgumentTypeError(
        "must be a finite number > 0, got {}".format(text))
  return value


def _open_fraction(text):
  """Argparse type: a float strictly between 0 and 1."""
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(
        "expected a number, got {!r}".format(text)) from None
  if not 0.0 < value < 1.0:
    raise argparse.ArgumentTypeError(
        "must be strictly between 0 and 1, got {}".format(text))
  return value


def build_parser():
  """Returns the demo's argument parser (every flag documented)."""
  parser = argparse.ArgumentParser(
      prog="python -m monolith.native_training.examples.demo",
      description=(
          "Train a small CTR model on a synthetic click log with "
          "monolith-tf's embedding combiners and entry table configs, "
          "print the held-out AUC and write the table configs as pbtxt. "
          "Takes well under a minute on a 2-core CPU with the defaults."))
  add = parser.add_argument
  add("--steps",
      type=_int_at_least(1),
      default=400,
      metavar="N",
      help="training steps, also the decay_steps of the PolynomialDecay "
      "learning rate (default: %(default)s)")
  add("--batch_size",
      type=_int_at_least(1),
      default=512,
      metavar="N",
      help="examples per training step (default: %(default)s)")
  add("--num_examples",
      type=_int_at_least(1),
      default=256000,
      metavar="N",
      help="size of the synthetic click log, training and held-out parts "
      "together; the training part is cycled through in shuffled epochs "
      "(default: %(default)s)")
  add("--heldout_fraction",
      type=_open_fraction,
      default=0.2,
      metavar="F",
      help="fraction of the click log kept out of training for the final "
      "AUC, 0 < F < 1, at least {} examples (default: %(default)s)".format(
          _MIN_HELDOUT))
  add("--id_dim",
      type=_int_at_least(1),
      default=16,
      metavar="DIM",
      help="dim of the vector segment of the item_id and user_hist tables; "
      "their rows also have a 1-dim bias segment (default: %(default)s)")
  add("--tag_dim",
      type=_int_at_least(1),
      default=8,
      metavar="DIM",
      help="dim of the item_cats and user_tags tables (default: %(default)s)")
  add("--hist_len",
      type=_int_at_least(1),
      default=10,
      metavar="N",
      help="n of the user_hist FirstN(n) combiner: how many of the most "
      "recent history items the attention reads (default: %(default)s)")
  add("--table_size",
      type=_int_at_least(1),
      default=16384,
      metavar="ROWS",
      help="rows of each slot's embedding table, ids are hashed modulo it; "
      "also the tables' CuckooHashTableConfig initial_capacity "
      "(default: %(default)s)")
  add("--hidden_units",
      type=_int_at_least(1),
      default=64,
      metavar="N",
      help="width of the first DNN layer, the second is half as wide "
      "(default: %(default)s)")
  add("--embedding_lr",
      type=_positive_float,
      default=0.1,
      metavar="LR",
      help="Adagrad learning rate of the embedding tables: constant for "
      "the bias segments and the tag tables, the start of a PolynomialDecay "
      "to a tenth of it for the id vectors (default: %(default)s)")
  add("--dense_lr",
      type=_positive_float,
      default=0.003,
      metavar="LR",
      help="Adam learning rate of the DNN (default: %(default)s)")
  add("--seed",
      type=_int_at_least(0),
      default=42,
      metavar="N",
      help="seed of the click log, the initial weights and the batch order "
      "(default: %(default)s)")
  add("--output_dir",
      default=None,
      metavar="DIR",
      help="folder for the table configs, one <slot>.pbtxt each, created if "
      "missing (default: a new temporary folder, printed at the end)")
  add("--log_every",
      type=_int_at_least(1),
      default=None,
      metavar="N",
      help="when stdout is not a terminal, print a progress line every N "
      "steps; on a terminal one line is redrawn instead (default: steps / "
      "10)")
  return parser


def parse_args(argv=None):
  """Parses and cross-checks the flags; bad values exit with code 2."""
  parser = build_parser()
  args = parser.parse_args(argv)
  heldout = int(args.num_examples * args.heldout_fraction)
  train = args.num_examples - heldout
  if heldout < _MIN_HELDOUT:
    parser.error("--num_examples {} * --heldout_fraction {} leaves {} held-out "
                 "examples; at least {} are needed for a meaningful AUC".format(
                     args.num_examples, args.heldout_fraction, heldout,
                     _MIN_HELDOUT))
  if args.batch_size > train:
    parser.error("--batch_size {} is larger than the {} training examples "
                 "(--num_examples {}, --heldout_fraction {})".format(
                     args.batch_size, train, args.num_examples,
                     args.heldout_fraction))
  if args.output_dir is not None and os.path.exists(
      args.output_dir) and not os.path.isdir(args.output_dir):
    parser.error("--output_dir {!r} exists and is not a folder".format(
        args.output_dir))
  return args


# ---------------------------------------------------------------------------
# Synthetic click log.


class RaggedColumn(object):
  """One sparse slot over all examples: flat ids plus row splits."""

  def __init__(self, values, row_lengths):
    self.values = np.asarray(values, dtype=np.int64)
    self.row_lengths = np.asarray(row_lengths, dtype=np.int64)
    self.row_splits = np.concatenate([[0], np.cumsum(self.row_lengths)])

  def take(self, rows):
    """Returns (values, row_lengths) of the given example rows, in order."""
    lengths = self.row_lengths[rows]
    starts = self.row_splits[rows]
    out_starts = np.cumsum(lengths) - lengths
    flat = np.repeat(starts - out_starts, lengths) + np.arange(lengths.sum())
    return self.values[flat], lengths


class ClickLog(object):
  """Examples of the synthetic click log.

  Attributes:
    slots: slot name -> RaggedColumn of feature ids (fids).
    labels: float32 [n], 1.0 for a click.
    click_prob: float64 [n], the hidden model's click probability.
  """

  def __init__(self, slots, labels, click_prob):
    self.slots = slots
    self.labels = labels
    self.click_prob = click_prob

  def __len__(self):
    return len(self.labels)

  def split(self, num_first):
    """Returns (first num_first examples, the rest) as two ClickLogs."""
    parts = []
    for rows in (np.arange(num_first), np.arange(num_first, len(self))):
      slots = collections.OrderedDict((name, RaggedColumn(*column.take(rows)))
                                      for name, column in self.slots.items())
      parts.append(ClickLog(slots, self.labels[rows], self.click_prob[rows]))
    return tuple(parts)


def _popular_items(rng, categories):
  """Draws one item per category, popular (low-rank) items more often."""
  rank = np.floor(_ITEMS_PER_CATEGORY * rng.random(len(categories))**3)
  return rank.astype(np.int64) * _NUM_CATEGORIES + categories


def _fids(slot, raw_ids):
  """Turns raw ids of a slot into fid-like int64 feature ids."""
  return (np.int64(_SLOTS[slot][0]) << _SLOT_SHIFT) + raw_ids


def generate_click_log(num_examples, seed):
  """Generates the synthetic click log (deterministic given the seed).

  Args:
    num_examples: number of examples (one impression each).
    seed: seed of the numpy generator.

  Returns:
    A ClickLog.
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

  # user_tags: 0-3 declared interests (a quarter of the users have none).
  tag_lengths = rng.integers(0, 4, size=n)
  tags = liked_or_random(np.repeat(np.arange(n), tag_lengths), 0.7)

  # user_hist: long-tail length (about 8% empty), mostly liked categories.
  hist_lengths = np.minimum(rng.geometric(0.08, size=n) - 1, _MAX_HISTORY)
  hist = _popular_items(
      rng, liked_or_random(np.repeat(np.arange(n), hist_lengths), 0.8))

  # item_id: the candidate, from a liked category 40% of the time.
  item_category = liked_or_random(np.arange(n), 0.4)
  item = _popular_items(rng, item_category)

  # item_cats: [category, vertical], only the category for half of the
  # items, nothing for 10% (missing metadata).
  cat_lengths = rng.choice([0, 1, 2], size=n, p=[0.1, 0.45, 0.45])
  vertical = _NUM_CATEGORIES + item_category // _CATEGORIES_PER_VERTICAL
  cats = np.stack([item_category, vertical], axis=1)
  cats = cats[np.arange(2)[None, :] < cat_lengths[:, None]]

  likes_item = (liked == item_category[:, None]).any(axis=1)
  logit = -1.2 + 3.0 * likes_item + quality[item]
  click_prob = 1.0 / (1.0 + np.exp(-logit))
  labels = (rng.random(n) < click_prob).astype(np.float32)

  slots = collections.OrderedDict([
      ("item_id", RaggedColumn(_fids("item_id", item), np.ones(n))),
      ("item_cats", RaggedColumn(_fids("item_cats", cats), cat_lengths)),
      ("user_hist", RaggedColumn(_fids("user_hist", hist), hist_lengths)),
      ("user_tags", RaggedColumn(_fids("user_tags", tags), tag_lengths)),
  ])
  return ClickLog(slots, labels, click_prob)


def roc_auc(labels, scores):
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


# ---------------------------------------------------------------------------
# Table configs (monolith.native_training.entry).


def build_table_configs(args):
  """Describes every slot's embedding table with monolith's entry API.

  The id tables (item_id, user_hist) have two segments: a 1-dim bias with a
  constant learning rate and an `--id_dim` vector whose learning rate decays
  polynomially over the run. The tag tables (item_cats, user_tags) have one
  `--tag_dim` segment with a constant learning rate. Each slot gets its own
  instance, built the way a feature definition would build it.

  Args:
    args: parsed flags.

  Returns:
    OrderedDict slot name -> entry.HashTableConfigInstance.
  """
  lr = args.embedding_lr

  def adagrad():
    # The loss is a batch mean, so per-id gradients are small: a small
    # initial accumulator keeps the first Adagrad steps from stalling.
    return entry.AdagradOptimizer(learning_rate=lr,
                                  initial_accumulator_value=0.001)

  def table(segments):
    config = embedding_hash_table_pb2.EmbeddingHashTableConfig()
    config.entry_config.segments.extend(segments)
    entry.CuckooHashTableConfig(
        initial_capacity=args.table_size).mutate_table(config)
    return config

  configs = collections.OrderedDict()
  for slot, (_, group, _) in _SLOTS.items():
    if group == "id":
      bias = entry.CombineAsSegment(1, entry.ZerosInitializer(), adagrad(),
                                    entry.Fp32Compressor())
      vector = entry.CombineAsSegment(
          args.id_dim, entry.RandomUniformInitializer(-0.05, 0.05), adagrad(),
          entry.Fp32Compressor())
      decay = learning_rate_functions.PolynomialDecay(initial_learning_rate=lr,
                                                      decay_steps=args.steps,
                                                      end_learning_rate=lr / 10)
      configs[slot] = entry.HashTableConfigInstance(table([bias, vector]),
                                                    [lr, decay])
    else:
      vector = entry.CombineAsSegment(
          args.tag_dim, entry.RandomUniformInitializer(-0.05, 0.05), adagrad(),
          entry.Fp32Compressor())
      configs[slot] = entry.HashTableConfigInstance(table([vector]), [lr])
  return configs


def group_slots(configs):
  """Groups slots whose HashTableConfigInstance strings are equal.

  Args:
    configs: OrderedDict slot name -> HashTableConfigInstance.

  Returns:
    List of (HashTableConfigInstance, [slot names]), in first-seen order.
  """
  groups = collections.OrderedDict()
  for slot, instance in configs.items():
    groups.setdefault(str(instance), (instance, []))[1].append(slot)
  return list(groups.values())


def _fns_text(instance):
  """The learning-rate functions of a HashTableConfigInstance, as text."""
  return "[{}]".format(", ".join(str(fn) for fn in instance.learning_rate_fns))


def _initial_rows(segments, num_rows):
  """Initial table value [num_rows, sum of dims] from segment initializers.

  Args:
    segments: EntryConfig.Segment messages.
    num_rows: table rows.

  Returns:
    A float32 tensor (random ops draw from the graph-level seed).

  Raises:
    ValueError: for an initializer this demo does not implement.
  """
  columns = []
  for segment in segments:
    init = segment.init_config
    shape = [num_rows, segment.dim_size]
    kind = init.WhichOneof("type")
    if kind == "zeros":
      columns.append(tf.zeros(shape))
    elif kind == "ones":
      columns.append(tf.ones(shape))
    elif kind == "constants":
      columns.append(tf.fill(shape, init.constants.constant))
    elif kind == "random_uniform":
      columns.append(
          tf.random.uniform(shape, init.random_uniform.minval,
                            init.random_uniform.maxval))
    else:
      raise ValueError("the demo has no initializer for {!r}".format(kind))
  return tf.concat(columns, axis=1)


def _per_column(segments, per_segment):
  """Repeats one value per segment over that segment's columns."""
  return tf.repeat(per_segment, [s.dim_size for s in segments])


def _sparse_adagrad(table, accumulator, grad, lr_columns):
  """Adagrad on the rows a gradient touches, learning rate per column.

  Args:
    table: resource variable [rows, dim].
    accumulator: resource variable [rows, dim], squared-gradient sums.
    grad: tf.IndexedSlices gradient of the table.
    lr_columns: float32 [dim] learning rate of every column.

  Returns:
    The update op.
  """
  rows, position = tf.unique(grad.indices)
  g = tf.math.unsorted_segment_sum(grad.values, position, tf.size(rows))
  acc = tf.gather(accumulator, rows) + tf.square(g)
  update_acc = accumulator.scatter_update(tf.IndexedSlices(acc, rows))
  step = lr_columns * g * tf.math.rsqrt(acc)
  update_table = table.scatter_sub(tf.IndexedSlices(step, rows))
  return tf.group(update_acc, update_table)


# ---------------------------------------------------------------------------
# Model.


def _dense(x, units, name, seed):
  """A fully connected layer from plain TF1 variables."""
  with tf.compat.v1.variable_scope(name):
    kernel = tf.compat.v1.get_variable(
        "kernel", [int(x.shape[-1]), units],
        initializer=tf.compat.v1.glorot_uniform_initializer(seed=seed))
    bias = tf.compat.v1.get_variable(
        "bias", [units], initializer=tf.compat.v1.zeros_initializer())
  return tf.matmul(x, kernel) + bias


def _combiner(slot, args):
  """The embedding combiner of a slot."""
  kind = _SLOTS[slot][2]
  if kind == "ReduceSum":
    return embedding_combiners.ReduceSum()
  if kind == "ReduceMean":
    return embedding_combiners.ReduceMean()
  return embedding_combiners.FirstN(args.hist_len)


def build_model(args, configs, groups):
  """Builds the training graph in the current default graph.

  Args:
    args: parsed flags.
    configs: OrderedDict slot -> HashTableConfigInstance.
    groups: output of group_slots(configs).

  Returns:
    dict with the feed placeholders ("<slot>/values", "<slot>/row_lengths",
    "labels"), the ragged ids "<slot>/ids" and the tensors "loss", "prob", "train_op", "global_step" and
    "learning_rates" (one stacked tensor per group).
  """
  global_step = tf.compat.v1.train.get_or_create_global_step()
  out = {}
  tables = {}
  pooled = {}
  for slot, instance in configs.items():
    values = tf.compat.v1.placeholder(tf.int64, [None], slot + "/values")
    lengths = tf.compat.v1.placeholder(tf.int64, [None], slot + "/row_lengths")
    out[slot + "/values"], out[slot + "/row_lengths"] = values, lengths
    ids = tf.RaggedTensor.from_row_lengths(values, lengths, validate=False)
    segments = instance.table_config.entry_config.segments
    size = instance.table_config.initial_capacity
    with tf.compat.v1.variable_scope("embedding/" + slot):
      table = tf.compat.v1.get_variable("table",
                                        initializer=_initial_rows(
                                            segments, size))
      initial_accumulator = [
          s.opt_config.adagrad.initial_accumulator_value for s in segments
      ]
      accumulator = tf.compat.v1.get_variable(
          "adagrad_accumulator",
          initializer=tf.tile(
              _per_column(segments, initial_accumulator)[None, :], [size, 1]),
          trainable=False)
    tables[slot] = (table, accumulator)
    # ids hashed modulo the table size, one embedding row per id.
    embedding = tf.gather(table, tf.math.floormod(ids.values, size))
    pooled[slot] = _combiner(slot, args).combine(ids, embedding)
    out[slot + "/ids"] = ids

  labels = tf.compat.v1.placeholder(tf.float32, [None], "labels")
  out["labels"] = labels

  # item_id / user_hist rows are [bias, vector...]; attention of the
  # candidate item over the first hist_len history items.
  item_bias, item_vec = pooled["item_id"][:, 0], pooled["item_id"][:, 1:]
  hist_vec = pooled["user_hist"][:, :, 1:]
  mask = tf.sequence_mask(
      tf.minimum(out["user_hist/ids"].row_lengths(), args.hist_len),
      args.hist_len)
  scores = tf.einsum("bd,bnd->bn", item_vec, hist_vec) / math.sqrt(args.id_dim)
  scores = tf.where(mask, scores, tf.fill(tf.shape(scores), -1e9))
  weights = tf.nn.softmax(scores) * tf.cast(mask, tf.float32)
  interest = tf.einsum("bn,bnd->bd", weights, hist_vec)
  cats, tags = pooled["item_cats"], pooled["user_tags"]
  features = tf.concat(
      [item_vec, interest, item_vec * interest, cats, tags, cats * tags],
      axis=1)
  hidden = tf.nn.relu(_dense(features, args.hidden_units, "dnn1", args.seed))
  hidden = tf.nn.relu(
      _dense(hidden, max(1, args.hidden_units // 2), "dnn2", args.seed + 1))
  logit = _dense(hidden, 1, "logit", args.seed + 2)[:, 0] + item_bias
  loss = tf.reduce_mean(
      tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logit))
  out["loss"], out["prob"] = loss, tf.sigmoid(logit)

  # Dense part: its own optimizer. Embeddings: one Adagrad per config group,
  # learning rate per segment from call_learning_rate_fns().
  dense_vars = [
      v for v in tf.compat.v1.trainable_variables()
      if not v.name.startswith("embedding/")
  ]
  table_vars = [tables[s][0] for s in configs]
  grads = tf.gradients(loss, dense_vars + table_vars)
  dense_grads = grads[:len(dense_vars)]
  table_grads = dict(zip(configs, grads[len(dense_vars):]))
  updates = [
      tf.compat.v1.train.AdamOptimizer(args.dense_lr).apply_gradients(
          zip(dense_grads, dense_vars), global_step=global_step)
  ]
  out["learning_rates"] = []
  for index, (instance, slots) in enumerate(groups):
    with tf.name_scope("group_{}".format(index)):
      learning_rates = instance.call_learning_rate_fns()
      out["learning_rates"].append(learning_rates)
      lr_columns = _per_column(instance.table_config.entry_config.segments,
                               learning_rates)
      for slot in slots:
        table, accumulator = tables[slot]
        updates.append(
            _sparse_adagrad(table, accumulator, table_grads[slot], lr_columns))
  out["train_op"] = tf.group(*updates)
  out["global_step"] = global_step
  return out


def _feed(model, log, rows):
  """Feed dict of the given example rows of a ClickLog."""
  feed = {model["labels"]: log.labels[rows]}
  for slot, column in log.slots.items():
    values, lengths = column.take(rows)
    feed[model[slot + "/values"]] = values
    feed[model[slot + "/row_lengths"]] = lengths
  return feed


# ---------------------------------------------------------------------------
# Training.


class ProgressBar(object):
  """Training progress on a stream.

  On a terminal a single line is redrawn with a carriage return (at most
  ten times a second, and always for the last step); otherwise a full line
  is printed every `every` steps and for the last step.
  """

  def __init__(self, total_steps, stream=None, every=None):
    self._total = total_steps
    self._stream = stream if stream is not None else sys.stdout
    isatty = getattr(self._stream, "isatty", None)
    self._tty = bool(isatty and isatty())
    self._every = every or max(1, total_steps // 10)
    self._width = 0
    self._last_draw = 0.0

  def update(self, step, loss, auc, examples_per_sec):
    """Reports the state after `step` steps."""
    text = ("step {step:>{width}}/{total}  loss {loss:.4f}  AUC {auc}  "
            "{eps:,.0f} examples/s").format(
                step=step,
                width=len(str(self._total)),
                total=self._total,
                loss=loss,
                auc="n/a  " if math.isnan(auc) else "{:.3f}".format(auc),
                eps=examples_per_sec)
    last = step == self._total
    if self._tty:
      now = time.monotonic()
      if not last and now - self._last_draw < 0.1:
        return
      self._last_draw = now
      self._stream.write("\r" + text.ljust(self._width))
      self._width = max(self._width, len(text))
      if last:
        self._stream.write("\n")
    elif last or step % self._every == 0:
      self._stream.write(text + "\n")
    self._stream.flush()


def _batches(num_rows, batch_size, rng):
  """Yields row-index batches forever, reshuffling every epoch."""
  while True:
    order = rng.permutation(num_rows)
    for start in range(0, num_rows - batch_size + 1, batch_size):
      yield order[start:start + batch_size]


def _predict(sess, model, log, batch_size=4096):
  """Click probabilities of all examples of a ClickLog."""
  probs = []
  for start in range(0, len(log), batch_size):
    rows = np.arange(start, min(start + batch_size, len(log)))
    probs.append(sess.run(model["prob"], _feed(model, log, rows)))
  return np.concatenate(probs)


def write_table_configs(output_dir, configs, groups):
  """Writes <slot>.pbtxt (an EmbeddingHashTableConfig) per slot.

  Args:
    output_dir: folder, created if missing.
    configs: OrderedDict slot -> HashTableConfigInstance.
    groups: output of group_slots(configs).

  Returns:
    List of the written paths.
  """
  os.makedirs(output_dir, exist_ok=True)
  group_of = {
      slot: index for index, (_, slots) in enumerate(groups) for slot in slots
  }
  paths = []
  for slot, instance in configs.items():
    path = os.path.join(output_dir, slot + ".pbtxt")
    with open(path, "w") as f:
      f.write("# monolith.hash_table.EmbeddingHashTableConfig of slot {}\n"
              "# (optimizer group {}, learning-rate fns {})\n".format(
                  slot, group_of[slot], _fns_text(instance)))
      f.write(text_format.MessageToString(instance.table_config))
    paths.append(path)
  return paths


def _describe_log(name, log):
  """One line per slot: mean length and share of empty rows."""
  lines = [
      "{}: {:,} examples, {:.1%} clicked".format(name, len(log),
                                                 log.labels.mean())
  ]
  for slot, column in log.slots.items():
    lines.append("  {:<10} {:<10} mean length {:5.2f}, empty {:5.1%}".format(
        slot, _SLOTS[slot][2], column.row_lengths.mean(),
        (column.row_lengths == 0).mean()))
  return "\n".join(lines)


def main(argv=None):
  """Runs the demo; returns the process exit code."""
  args = parse_args(argv)
  if _QUIET_TF:
    tf.get_logger().setLevel("ERROR")
  started = time.monotonic()

  print("monolith-tf {} on TensorFlow {}".format(monolith.__version__,
                                                 tf.__version__))
  log = generate_click_log(args.num_examples, args.seed)
  heldout_size = int(args.num_examples * args.heldout_fraction)
  train, heldout = log.split(args.num_examples - heldout_size)
  print(_describe_log("synthetic click log (training part)", train))

  configs = build_table_configs(args)
  groups = group_slots(configs)
  print("embedding tables: {} slots in {} optimizer groups "
        "(equal HashTableConfigInstance strings)".format(
            len(configs), len(groups)))
  for index, (instance, slots) in enumerate(groups):
    dims = [s.dim_size for s in instance.table_config.entry_config.segments]
    print("  group {}: {}: segment dims {}, learning-rate fns {}".format(
        index, ", ".join(slots), dims, _fns_text(instance)))

  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.set_random_seed(args.seed)
    model = build_model(args, configs, groups)
    init = tf.compat.v1.global_variables_initializer()
  graph.finalize()

  with tf.compat.v1.Session(graph=graph) as sess:
    sess.run(init)
    print("training {} steps of {} examples".format(args.steps,
                                                    args.batch_size))
    progress = ProgressBar(args.steps, sys.stdout, args.log_every)
    window = collections.deque(maxlen=_AUC_WINDOW_BATCHES)
    batches = _batches(len(train), args.batch_size,
                       np.random.default_rng(args.seed + 2))
    train_started = time.monotonic()
    for step in range(1, args.steps + 1):
      rows = next(batches)
      _, loss, prob = sess.run(
          [model["train_op"], model["loss"], model["prob"]],
          _feed(model, train, rows))
      window.append((train.labels[rows], prob))
      seconds = max(time.monotonic() - train_started, 1e-9)
      progress.update(
          step, float(loss),
          roc_auc(np.concatenate([w[0] for w in window]),
                  np.concatenate([w[1] for w in window])),
          step * args.batch_size / seconds)
    train_seconds = time.monotonic() - train_started
    learning_rates = sess.run(model["learning_rates"])
    heldout_auc = roc_auc(heldout.labels, _predict(sess, model, heldout))

  for index, rates in enumerate(learning_rates):
    print("  group {} learning rates after {} steps: {}".format(
        index, args.steps, ", ".join("{:.4g}".format(r) for r in rates)))
  output_dir = args.output_dir or tempfile.mkdtemp(prefix="monolith_demo_")
  paths = write_table_configs(output_dir, configs, groups)
  print("wrote {} table configs (pbtxt) to {}".format(len(paths), output_dir))
  print("trained in {:.1f} s, {:.1f} s after TensorFlow was loaded".format(
      train_seconds,
      time.monotonic() - started))
  print("held-out AUC of the hidden click model itself (the ceiling): "
        "{:.3f}".format(roc_auc(heldout.labels, heldout.click_prob)))
  if heldout_auc > 0.5:
    verdict = "> 0.5: the model learned"
  else:
    verdict = "not above 0.5: train longer, e.g. --steps {}".format(
        max(400, 2 * args.steps))
  print("held-out AUC: {:.3f} ({})".format(heldout_auc, verdict))
  return 0


if __name__ == "__main__":
  sys.exit(main())
