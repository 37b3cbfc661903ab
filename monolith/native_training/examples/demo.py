"""Trains a click-through-rate model through monolith-tf hash tables, end to end.

    python -m monolith.native_training.examples.demo [--steps 400] [...]
    python -m monolith.native_training.examples.demo --data movielens \\
        --data_dir ~/ml-100k

What it does (the default synthetic run takes well under a minute on a
2-core CPU, TensorFlow's import included):

1. Reads a click log, in time order: by default a synthetic one generated in
   memory (`click_log.generate_click_log`), or with `--data movielens` the
   MovieLens 100K files (`movielens.read_movielens`; a rating >= 4 is a
   click). Every example has sparse feature slots of variable length, some
   rows empty. The last `--heldout_fraction` of the log (by time) is held
   out for the final AUC.
2. Describes every slot's embedding table with
   `monolith.native_training.entry`. "id" slots get rows `[bias, vector]`:
   the bias trained by FTRL (fp32), the vector by Adagrad (fp16 compressor,
   which only matters when the table is exported for serving) with a
   `PolynomialDecay` learning rate. "tag" slots get a vector trained by
   Adam and read through a fixed_r8 compressor (training lookups see 8-bit
   values). Slots whose `HashTableConfigInstance`s print the same string
   share one table, monolith's rule.
3. Builds one `hash_table_ops` table per distinct config with
   `hash_table_from_config`, and a TF1-style graph (`tf.compat.v1`
   placeholders and `Session`): per table the ids of its slots are
   de-duplicated and looked up once; `embedding_combiners` pool them per
   slot (`FirstN` for the history, which an attention over the candidate
   item pools); a small DNN gives the click logit; the loss is the log
   loss. `tf.gradients` of the loss with respect to the looked-up rows go
   to `apply_gradients`, where each table steps its optimizers with its
   stacked per-segment learning rates (`call_learning_rate_fns()`, which
   the table calls itself) at the current global step; the DNN uses a
   stock TF Adam optimizer. Each update stamps the entries with the time of
   the batch (`req_time`), and every `feature_evict_every_n_hours` of log
   time the tables with eviction enabled drop entries older than their
   slot's expiry.
4. Trains with a progress line (step, loss, AUC of recent batches,
   examples/s, table rows, evicted entries), reports the held-out AUC,
   writes each slot's `EmbeddingHashTableConfig` as pbtxt and, with
   `--model_dir`, a checkpoint (tables included) that `--resume` continues.

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
import json
import math
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
from google.protobuf import text_format

import monolith
from monolith.native_training import entry
from monolith.native_training import export
from monolith.native_training import learning_rate_functions
from monolith.native_training.examples import click_log
from monolith.native_training.examples import ctr_model
from monolith.native_training.examples import movielens
# pylint: enable=g-import-not-at-top,wrong-import-position

_MIN_HELDOUT = 200
_AUC_WINDOW_BATCHES = 20
_DEFAULT_NUM_EXAMPLES = 256000
# Table eviction: every day of log time; per-slot expiry in days.
_EVICT_EVERY_HOURS = 24
_EXPIRE_DAYS = {"synthetic": {"item_id": 2}, "movielens": {"user_id": 30}}
# The flags a resumed run may change; the others must match the checkpoint.
_RESUME_MAY_CHANGE = ("steps", "log_every", "output_dir", "model_dir", "resume",
                      "data_dir")
_FLAGS_FILE = "demo_flags.json"


class DataError(ValueError):
  """The click log does not fit the flags (too few examples)."""


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
          "Train a small CTR model whose embeddings live in monolith-tf hash "
          "tables, on a synthetic click log or MovieLens 100K; print the "
          "held-out AUC, write the table configs as pbtxt and optionally a "
          "checkpoint. Takes well under a minute on a 2-core CPU with the "
          "defaults."))
  add = parser.add_argument
  add("--data",
      choices=("synthetic", "movielens"),
      default="synthetic",
      help="the click log: generated in memory, or the MovieLens 100K files "
      "in --data_dir (default: %(default)s)")
  add("--data_dir",
      default=None,
      metavar="DIR",
      help="with --data movielens: the unzipped ml-100k folder holding "
      "u.data, u.item and u.user (GroupLens' ml-100k.zip; nothing is "
      "downloaded)")
  add("--steps",
      type=_int_at_least(1),
      default=400,
      metavar="N",
      help="training steps in all (a resumed run continues up to N); the "
      "training part is read in time order, batch after batch, and repeated "
      "as needed (default: %(default)s)")
  add("--batch_size",
      type=_int_at_least(1),
      default=512,
      metavar="N",
      help="examples per training step (default: %(default)s)")
  add("--num_examples",
      type=_int_at_least(1),
      default=None,
      metavar="N",
      help="size of the synthetic click log, training and held-out parts "
      "together (default: {})".format(_DEFAULT_NUM_EXAMPLES))
  add("--heldout_fraction",
      type=_open_fraction,
      default=0.2,
      metavar="F",
      help="the latest fraction of the log kept out of training for the "
      "final AUC, 0 < F < 1, at least {} examples (default: %(default)s)".
      format(_MIN_HELDOUT))
  add("--id_dim",
      type=_int_at_least(1),
      default=16,
      metavar="DIM",
      help="dim of the vector segment of the id tables (items, history, "
      "users); their rows also have a 1-dim bias segment (default: "
      "%(default)s)")
  add("--tag_dim",
      type=_int_at_least(1),
      default=8,
      metavar="DIM",
      help="dim of the tag tables (categories, genres, user attributes) "
      "(default: %(default)s)")
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
      help="initial_capacity of each hash table's CuckooHashTableConfig; "
      "tables grow on demand (default: %(default)s)")
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
      help="learning rate of the id tables: FTRL on the bias (constant), "
      "Adagrad on the vector (PolynomialDecay to a tenth of it over the "
      "first pass over the training part); the tag tables' Adam uses a "
      "tenth of it (default: %(default)s)")
  add("--dense_lr",
      type=_positive_float,
      default=0.003,
      metavar="LR",
      help="Adam learning rate of the DNN (default: %(default)s)")
  add("--seed",
      type=_int_at_least(0),
      default=42,
      metavar="N",
      help="seed of the synthetic log and the initial weights (default: "
      "%(default)s)")
  add("--output_dir",
      default=None,
      metavar="DIR",
      help="folder for the table configs, one <slot>.pbtxt each, created if "
      "missing (default: --model_dir if given, else a new temporary folder, "
      "printed at the end)")
  add("--model_dir",
      default=None,
      metavar="DIR",
      help="folder for the checkpoint (dense variables and hash tables), "
      "written at the end of training; must not hold one unless --resume")
  add("--export_dir",
      default=None,
      metavar="DIR",
      help="after training, export the model (tables in SERVING form) as a "
      "SavedModel to DIR (must not exist), reload it in a fresh process "
      "that cannot import monolith and print its held-out AUC")
  add("--resume",
      action="store_true",
      help="continue from the latest checkpoint in --model_dir, up to "
      "--steps; the other flags must match the run that wrote it")
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
  if args.data == "movielens":
    if args.data_dir is None:
      parser.error("--data movielens needs --data_dir, the unzipped ml-100k "
                   "folder (u.data, u.item, u.user)")
    if not os.path.isdir(args.data_dir):
      parser.error("--data_dir {!r} is not a folder".format(args.data_dir))
    if args.num_examples is not None:
      parser.error("--num_examples sizes the synthetic log; MovieLens has "
                   "as many examples as u.data has ratings")
  else:
    if args.data_dir is not None:
      parser.error("--data_dir is only read with --data movielens")
    if args.num_examples is None:
      args.num_examples = _DEFAULT_NUM_EXAMPLES
    heldout = int(args.num_examples * args.heldout_fraction)
    train = args.num_examples - heldout
    if heldout < _MIN_HELDOUT:
      parser.error(
          "--num_examples {} * --heldout_fraction {} leaves {} held-out "
          "examples; at least {} are needed for a meaningful AUC".format(
              args.num_examples, args.heldout_fraction, heldout, _MIN_HELDOUT))
    if args.batch_size > train:
      parser.error("--batch_size {} is larger than the {} training examples "
                   "(--num_examples {}, --heldout_fraction {})".format(
                       args.batch_size, train, args.num_examples,
                       args.heldout_fraction))
  for flag in ("output_dir", "model_dir"):
    path = getattr(args, flag)
    if path is not None and os.path.exists(path) and not os.path.isdir(path):
      parser.error("--{} {!r} exists and is not a folder".format(flag, path))
  if args.resume and args.model_dir is None:
    parser.error("--resume needs --model_dir, the folder of the checkpoint")
  if args.model_dir is not None:
    _check_model_dir(parser, args)
  return args


def _model_flags(args):
  """The flags a checkpoint depends on, as a JSON-able dict."""
  return {
      key: value
      for key, value in sorted(vars(args).items())
      if key not in _RESUME_MAY_CHANGE
  }


def _check_model_dir(parser, args):
  """Checkpoint presence and, with --resume, flag compatibility."""
  checkpoint = tf.train.latest_checkpoint(args.model_dir)
  if not args.resume:
    if checkpoint is not None:
      parser.error("--model_dir {!r} already holds a checkpoint ({}); pass "
                   "--resume to continue from it, or choose an empty "
                   "folder".format(args.model_dir, checkpoint))
    return
  if checkpoint is None:
    parser.error("--resume: no checkpoint in --model_dir {!r}".format(
        args.model_dir))
  path = os.path.join(args.model_dir, _FLAGS_FILE)
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    parser.error("--resume: cannot read the flags of the checkpoint's run "
                 "from {}: {}".format(path, e))
  changed = [
      "--{} {} (checkpoint: {})".format(key, value, saved.get(key))
      for key, value in _model_flags(args).items()
      if saved.get(key) != value
  ]
  if changed:
    parser.error("--resume: these flags differ from the run that wrote the "
                 "checkpoint: {}".format(", ".join(changed)))
  step = _checkpoint_step(checkpoint)
  if step is None:
    parser.error("--resume: {} has no global_step; was it written by this "
                 "demo?".format(checkpoint))
  if step >= args.steps:
    parser.error("--resume: the checkpoint is at step {}, so --steps {} "
                 "leaves nothing to train; give a larger --steps".format(
                     step, args.steps))


def _checkpoint_step(checkpoint):
  """The global step saved in a checkpoint, or None if it has none."""
  try:
    return int(tf.train.load_variable(checkpoint, "global_step"))
  except (tf.errors.OpError, ValueError):
    return None


# ---------------------------------------------------------------------------
# Data.


def load_data(args):
  """Reads or generates the click log and splits it by time.

  Args:
    args: parsed flags.

  Returns:
    (train ClickLog, held-out ClickLog, OrderedDict slot -> SlotSpec, a
    description of the data).

  Raises:
    movielens.MovieLensError: a MovieLens file is missing or malformed.
    DataError: the log is too small for the flags.
  """
  if args.data == "movielens":
    log = movielens.read_movielens(args.data_dir, max_history=args.hist_len)
    specs, what = movielens.MOVIELENS_SLOTS, "MovieLens 100K ({})".format(
        args.data_dir)
  else:
    log = click_log.generate_click_log(args.num_examples, args.seed)
    specs, what = click_log.SYNTHETIC_SLOTS, "synthetic click log"
  heldout_size = int(len(log) * args.heldout_fraction)
  if heldout_size < _MIN_HELDOUT or len(log) - heldout_size < args.batch_size:
    raise DataError(
        "{} has {} examples: --heldout_fraction {} and --batch_size {} need "
        "at least {} held-out examples and one training batch".format(
            what, len(log), args.heldout_fraction, args.batch_size,
            _MIN_HELDOUT))
  # FirstN(--hist_len) reads the first ids of a history row only: ids after
  # them would be looked up for nothing, and trained with zero gradients.
  for slot, spec in specs.items():
    if spec.combiner == "FirstN":
      log.slots[slot] = log.slots[slot].first(args.hist_len)
  train, heldout = log.split(len(log) - heldout_size)
  return train, heldout, specs, what


# ---------------------------------------------------------------------------
# Table configs (monolith.native_training.entry).


def build_table_configs(args, specs, decay_steps, expire_days=None):
  """Describes every slot's embedding table with monolith's entry API.

  "id" slots: two segments, a 1-dim bias (zeros, FTRL, fp32, constant
  learning rate) and an `--id_dim` vector (random uniform, Adagrad, fp16,
  `PolynomialDecay` to a tenth over `decay_steps`). "tag" slots: one `--tag_dim`
  vector (random uniform, Adam, fixed_r8). `expire_days` sets per-slot
  expiry; it goes into the config of every slot of that kind (so that equal
  kinds still print equal configs), whose table then evicts once a day of
  log time (`feature_evict_every_n_hours`). Each slot gets
  its own instance, built the way a feature definition would build it.

  Args:
    args: parsed flags.
    specs: OrderedDict slot name -> click_log.SlotSpec.
    decay_steps: steps of the id vectors' learning-rate decay.
    expire_days: slot name -> days an entry lives without updates.

  Returns:
    OrderedDict slot name -> entry.HashTableConfigInstance.
  """
  lr = args.embedding_lr
  expire_days = expire_days or {}

  def table(segments, kind):
    expiring = sorted((specs[slot].number, days)
                      for slot, days in expire_days.items()
                      if specs[slot].kind == kind)
    config = entry.build_embedding_hash_table_config(
        segments,
        entry.CuckooHashTableConfig(
            initial_capacity=args.table_size,
            feature_evict_every_n_hours=_EVICT_EVERY_HOURS if expiring else 0))
    for number, days in expiring:
      config.slot_expire_time_config.slot_expire_times.add(slot=number,
                                                           expire_time=days)
    return config

  configs = collections.OrderedDict()
  for slot, spec in specs.items():
    if spec.kind == "id":
      bias = entry.CombineAsSegment(
          1, entry.ZerosInitializer(),
          entry.FtrlOptimizer(learning_rate=lr,
                              initial_accumulator_value=0.001,
                              beta=0.0), entry.Fp32Compressor())
      # The loss is a batch mean, so per-id gradients are small: a small
      # initial accumulator keeps the first Adagrad steps from stalling.
      vector = entry.CombineAsSegment(
          args.id_dim, entry.RandomUniformInitializer(-0.05, 0.05),
          entry.AdagradOptimizer(learning_rate=lr,
                                 initial_accumulator_value=0.001),
          entry.Fp16Compressor())
      decay = learning_rate_functions.PolynomialDecay(initial_learning_rate=lr,
                                                      decay_steps=decay_steps,
                                                      end_learning_rate=lr / 10)
      configs[slot] = entry.HashTableConfigInstance(table([bias, vector], "id"),
                                                    [lr, decay])
    else:
      vector = entry.CombineAsSegment(
          args.tag_dim, entry.RandomUniformInitializer(-0.05, 0.05),
          entry.AdamOptimizer(learning_rate=lr / 10, epsilon=1e-6),
          entry.FixedR8Compressor(fixed_range=1.0))
      configs[slot] = entry.HashTableConfigInstance(table([vector], "tag"),
                                                    [lr / 10])
  return configs


def group_slots(configs):
  """Groups slots whose HashTableConfigInstance strings are equal.

  Args:
    configs: OrderedDict slot name -> HashTableConfigInstance.

  Returns:
    List of (HashTableConfigInstance, [slot names]), in first-seen order:
    one hash table each.
  """
  groups = collections.OrderedDict()
  for slot, instance in configs.items():
    groups.setdefault(str(instance), (instance, []))[1].append(slot)
  return list(groups.values())


def _fns_text(instance):
  """The learning-rate functions of a HashTableConfigInstance, as text."""
  return "[{}]".format(", ".join(str(fn) for fn in instance.learning_rate_fns))


def _segments_text(instance):
  """E.g. "1 ftrl fp32 + 16 adagrad fp16"."""
  return " + ".join("{} {} {}".format(s.dim_size, s.opt_config.WhichOneof(
      "type"), s.comp_config.WhichOneof("type"))
                    for s in instance.table_config.entry_config.segments)


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

  def update(self,
             step,
             loss,
             auc,
             examples_per_sec,
             table_rows=None,
             evicted=None):
    """Reports the state after `step` steps.

    Args:
      step: steps done.
      loss: loss of the last batch.
      auc: AUC of recent batches (NaN when undefined).
      examples_per_sec: training throughput.
      table_rows: rows of each hash table, or None.
      evicted: entries evicted so far, all tables together, or None.
    """
    text = ("step {step:>{width}}/{total}  loss {loss:.4f}  AUC {auc}  "
            "{eps:,.0f} examples/s").format(
                step=step,
                width=len(str(self._total)),
                total=self._total,
                loss=loss,
                auc="n/a  " if math.isnan(auc) else "{:.3f}".format(auc),
                eps=examples_per_sec)
    if table_rows is not None:
      text += "  table rows {}".format(" + ".join(
          "{:,}".format(int(r)) for r in table_rows))
    if evicted is not None:
      text += "  evicted {:,}".format(int(evicted))
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
              "# (hash table {}, learning-rate fns {})\n".format(
                  slot, group_of[slot], _fns_text(instance)))
      f.write(text_format.MessageToString(instance.table_config))
    paths.append(path)
  return paths


def _evictions_due(config, clock_before, clock_now, clock_start):
  """Whether a table evicts between two clocks (every n hours of log time)."""
  if not config.enable_feature_eviction:
    return False
  period = 3600 * config.feature_evict_every_n_hours
  return (clock_now - clock_start) // period > (clock_before -
                                                clock_start) // period


def train(args, train_log, model, groups, sess, first_step):
  """Runs training steps first_step..args.steps with a progress line.

  Ctrl-C stops after the step that is running (the caller then saves a
  checkpoint if it can).

  Args:
    args: parsed flags.
    train_log: the training ClickLog.
    model: output of ctr_model.build_model.
    groups: output of group_slots (one table each).
    sess: the Session, variables initialized or restored.
    first_step: the first step to run (1, or the checkpoint's step + 1).

  Returns:
    (seconds spent training, whether Ctrl-C stopped it).
  """
  progress = ProgressBar(args.steps, sys.stdout, args.log_every)
  window = collections.deque(maxlen=_AUC_WINDOW_BATCHES)
  stream = click_log.BatchStream(train_log, args.batch_size)
  evictions = [(op, instance.table_config)
               for op, (instance, _) in zip(model["evict_ops"], groups)
               if op is not None]
  fetches = [
      model["train_op"], model["loss"], model["prob"], model["table_sizes"],
      model["evicted_total"]
  ]
  started = time.monotonic()
  try:
    for step in range(first_step, args.steps + 1):
      rows = stream.rows(step)
      feed = ctr_model.feed_dict(model, train_log, rows)
      feed[model["req_time"]] = stream.clock(step)
      _, loss, prob, sizes, evicted = sess.run(fetches, feed)
      # monolith evicts every feature_evict_every_n_hours; here in log time.
      due = [
          op for op, config in evictions
          if _evictions_due(config, stream.clock(max(step - 1, 1)),
                            stream.clock(step), stream.clock(1))
      ]
      if due:
        sess.run(due)
        sizes, evicted = sess.run(
            [model["current_sizes"], model["evicted_total"]])
      window.append((train_log.labels[rows], prob))
      seconds = max(time.monotonic() - started, 1e-9)
      progress.update(
          step, float(loss),
          click_log.roc_auc(np.concatenate([w[0] for w in window]),
                            np.concatenate([w[1] for w in window])),
          (step - first_step + 1) * args.batch_size / seconds, sizes, evicted)
  except KeyboardInterrupt:
    print("\ninterrupted")
    return time.monotonic() - started, True
  return time.monotonic() - started, False


def main(argv=None):
  """Runs the demo; returns the process exit code."""
  args = parse_args(argv)
  if _QUIET_TF:
    tf.get_logger().setLevel("ERROR")
  started = time.monotonic()

  print("monolith-tf {} on TensorFlow {}".format(monolith.__version__,
                                                 tf.__version__))
  try:
    train_log, heldout, specs, what = load_data(args)
  except (movielens.MovieLensError, DataError) as e:
    print("{}: error: {}".format(build_parser().prog, e), file=sys.stderr)
    return 1
  print(click_log.describe(what + ", training part", train_log, specs))

  # The id vectors' learning rate decays over one pass over the data.
  configs = build_table_configs(args, specs,
                                len(train_log) // args.batch_size,
                                _EXPIRE_DAYS[args.data])
  groups = group_slots(configs)
  print("hash tables: {} slots in {} tables (equal HashTableConfigInstance "
        "strings share one)".format(len(configs), len(groups)))
  for index, (instance, slots) in enumerate(groups):
    print("  table {}: {}: segments {}, learning-rate fns {}".format(
        index, ", ".join(slots), _segments_text(instance), _fns_text(instance)))

  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.set_random_seed(args.seed)
    model = ctr_model.build_model(args, specs, groups)
    init = tf.compat.v1.global_variables_initializer()
    # The tables are tf.Modules whose variables and DenseHashTable index are
    # in the graph's collections: a plain Saver checkpoints them with the
    # DNN, Adam's slots, the global step and the eviction counts.
    saver = tf.compat.v1.train.Saver(max_to_keep=2)
    if args.export_dir:
      tables = {
          ctr_model.table_key(i): table
          for i, table in enumerate(model["tables"])
      }
      snapshots = export.snapshot_tensors(tables)
  graph.finalize()

  first_step = 1
  with tf.compat.v1.Session(graph=graph) as sess:
    sess.run(init)
    if args.resume:
      checkpoint = tf.train.latest_checkpoint(args.model_dir)
      saver.restore(sess, checkpoint)
      first_step = int(sess.run(model["global_step"])) + 1
      print("resumed from {} (step {})".format(checkpoint, first_step - 1))
    print("training steps {}..{} of {} examples".format(first_step, args.steps,
                                                        args.batch_size))
    train_seconds, interrupted = train(args, train_log, model, groups, sess,
                                       first_step)
    step = int(sess.run(model["global_step"]))
    if args.model_dir and step >= first_step:
      os.makedirs(args.model_dir, exist_ok=True)
      with open(os.path.join(args.model_dir, _FLAGS_FILE), "w") as f:
        json.dump(_model_flags(args), f, indent=1, sort_keys=True)
      path = saver.save(sess,
                        os.path.join(args.model_dir, "model.ckpt"),
                        global_step=step)
      print(
          "wrote checkpoint {} (dense variables and hash tables)".format(path))
    if interrupted:
      print("stopped at step {}{}".format(
          step, "; add --resume to the same command to continue"
          if args.model_dir else ""))
      return 130
    learning_rates, sizes, evicted = sess.run([
        model["learning_rates"], model["current_sizes"], model["evicted_total"]
    ])
    heldout_prob = ctr_model.predict(sess, model, heldout)
    if args.export_dir:
      export.export_saved_model_from_session(
          sess,
          args.export_dir,
          ctr_model.model_fn(args, specs, [slots for _, slots in groups]),
          tables,
          ctr_model.input_spec(specs),
          snapshots=snapshots)

  for index, rates in enumerate(learning_rates):
    print("  table {}: {:,} rows, learning rates after {} steps: {}".format(
        index, int(sizes[index]), args.steps,
        ", ".join("{:.4g}".format(r) for r in rates)))
  print("evicted {:,} expired entries in all".format(int(evicted)))
  output_dir = args.output_dir or args.model_dir or tempfile.mkdtemp(
      prefix="monolith_demo_")
  paths = write_table_configs(output_dir, configs, groups)
  print("wrote {} table configs (pbtxt) to {}".format(len(paths), output_dir))
  print("trained in {:.1f} s, {:.1f} s after TensorFlow was loaded".format(
      train_seconds,
      time.monotonic() - started))
  if heldout.click_prob is not None:
    print("held-out AUC of the hidden click model itself (the ceiling): "
          "{:.3f}".format(click_log.roc_auc(heldout.labels,
                                            heldout.click_prob)))
  else:
    print("held-out AUC of the items' training click rates (a baseline): "
          "{:.3f}".format(
              click_log.roc_auc(
                  heldout.labels,
                  movielens.item_rate_baseline(train_log, heldout))))
  heldout_auc = click_log.roc_auc(heldout.labels, heldout_prob)
  if heldout_auc > 0.5:
    verdict = "> 0.5: the model learned"
  else:
    verdict = "not above 0.5: train longer, e.g. --steps {}".format(
        max(400, 2 * args.steps))
  print("held-out AUC: {:.3f} ({})".format(heldout_auc, verdict))
  if args.export_dir:
    return _check_export(args.export_dir, heldout, heldout_auc)
  return 0


def _check_export(export_dir, heldout, heldout_auc):
  """Scores `heldout` with the SavedModel in a process without monolith."""
  arrays = {"labels": heldout.labels}
  for slot, column in heldout.slots.items():
    arrays[slot + "_values"] = column.values
    arrays[slot + "_row_splits"] = column.row_splits
  data = os.path.join(export_dir, "heldout_examples.npz")
  np.savez(data, **arrays)
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "serve_heldout.py")
  result = subprocess.run(
      [sys.executable, script, "--saved_model", export_dir, "--examples", data],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      universal_newlines=True,
      check=False)
  os.remove(data)
  if result.returncode != 0:
    print("the exported model failed to serve:\n" + result.stderr[-3000:],
          file=sys.stderr)
    return 1
  served = json.loads(result.stdout.strip().splitlines()[-1])
  print("exported the model to {} (tables in SERVING form)".format(export_dir))
  print("held-out AUC of the exported model, served by TensorFlow alone "
        "(monolith importable: {}): {:.3f} (training graph: {:.3f})".format(
            served["monolith_importable"], served["auc"], heldout_auc))
  return 0


if __name__ == "__main__":
  sys.exit(main())
