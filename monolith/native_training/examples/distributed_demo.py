"""Distributed training demo: a click model on PS-sharded hash tables.

Starts a cluster of parameter servers and workers and trains a small click
model on the synthetic click log (`click_log.generate_click_log`) with
TensorFlow's own distributed runtime: between-graph replication, one
`sharded_hash_table.ShardedHashTable` whose shards live on the PS tasks
(`id mod num_ps`), dense weights placed by `replica_device_setter`,
asynchronous workers in `MonitoredTrainingSession` (the chief initializes,
checkpoints every shard with `Saver(sharded=True)` and, at the end,
reports the AUC on held-out examples).

On one machine (every task a subprocess on 127.0.0.1, output prefixed with
the task):

  python -m monolith.native_training.examples.distributed_demo --ps 2 \\
      --workers 2

On a real cluster run one process per task with the same flags, either

  python -m monolith.native_training.examples.distributed_demo \\
      --cluster_spec '{"ps": ["ps0:2222", "ps1:2222"],
                       "worker": ["w0:2222", "w1:2222"]}' \\
      --job_name worker --task_index 0 --model_dir /shared/model

or with `TF_CONFIG` set (`{"cluster": {...}, "task": {"type": "worker",
"index": 0}}`) and no cluster flags. Worker 0 is the chief; `--model_dir`
must be shared by the chief and the PS tasks (each PS writes its shards of
the checkpoint); a restarted chief resumes from the latest checkpoint there.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

from monolith.native_training import distributed
from monolith.native_training import entry
from monolith.native_training import sharded_hash_table
from monolith.native_training.examples import click_log
from monolith.native_training.examples import ctr_model

_MODULE = "monolith.native_training.examples.distributed_demo"


def build_parser() -> argparse.ArgumentParser:
  """The demo's flags."""
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  local = parser.add_argument_group("local cluster (launcher)")
  local.add_argument("--ps",
                     type=int,
                     default=2,
                     help="PS tasks of the local cluster")
  local.add_argument("--workers",
                     type=int,
                     default=2,
                     help="worker tasks of the local cluster")
  task = parser.add_argument_group("one task of a cluster")
  task.add_argument("--cluster_spec",
                    default=None,
                    help='JSON {"ps": ["host:port", ...], "worker": [...]} '
                    "(default: TF_CONFIG, else launch a local cluster)")
  task.add_argument("--job_name", choices=("ps", "worker"), default=None)
  task.add_argument("--task_index", type=int, default=0)
  model = parser.add_argument_group("training")
  model.add_argument("--model_dir",
                     default=None,
                     help="checkpoints (default: a new temporary directory)")
  model.add_argument("--examples",
                     type=int,
                     default=60000,
                     help="synthetic training examples")
  model.add_argument("--eval_examples",
                     type=int,
                     default=10000,
                     help="held-out examples (after the training ones)")
  model.add_argument("--batch_size", type=int, default=256)
  model.add_argument("--steps",
                     type=int,
                     default=1200,
                     help="training steps in all workers together")
  model.add_argument("--dim", type=int, default=8, help="embedding dims")
  model.add_argument("--seed", type=int, default=0)
  model.add_argument("--log_every",
                     type=int,
                     default=200,
                     help="print progress every N local steps")
  return parser


def _cluster(args):
  """(cluster dict, job, task) from the flags or TF_CONFIG; None: launch."""
  if args.cluster_spec:
    if args.job_name is None:
      raise SystemExit("--cluster_spec needs --job_name and --task_index")
    return (distributed.parse_cluster_spec(args.cluster_spec), args.job_name,
            args.task_index)
  if os.environ.get("TF_CONFIG"):
    return distributed.cluster_from_tf_config()
  return None


def _print(task: str, message: str) -> None:
  print(f"[{task}] {message}", flush=True)


# -------------------------------------------------------------------- model


def build_model(cluster: Dict[str, List[str]], args) -> Dict[str, object]:
  """The training and prediction graph (in the current default graph).

  Returns:
    A dict of placeholders (`<slot>/values`, `<slot>/row_lengths`,
    `labels`) and tensors/ops (`loss`, `prob`, `train_op`, `global_step`,
    `table`, `shard_sizes`).
  """
  num_ps = len(cluster["ps"])
  out = {}
  with tf.compat.v1.device(
      tf.compat.v1.train.replica_device_setter(
          cluster=tf.train.ClusterSpec(cluster))):
    global_step = tf.compat.v1.train.get_or_create_global_step()
    segment = entry.CombineAsSegment(
        args.dim, entry.RandomUniformInitializer(-0.05, 0.05),
        entry.AdagradOptimizer(learning_rate=0.2), entry.Fp32Compressor())
    config = entry.HashTableConfigInstance(
        entry.build_embedding_hash_table_config([segment]), [0.2])
    table = sharded_hash_table.ShardedHashTable(config,
                                                num_ps,
                                                name="demo_embeddings",
                                                seed=args.seed)
    values, lengths = [], []
    for slot in click_log.SYNTHETIC_SLOTS:
      out[slot + "/values"] = tf.compat.v1.placeholder(tf.int64, [None],
                                                       slot + "/values")
      out[slot + "/row_lengths"] = tf.compat.v1.placeholder(
          tf.int64, [None], slot + "/row_lengths")
      values.append(out[slot + "/values"])
      lengths.append(out[slot + "/row_lengths"])
    labels = tf.compat.v1.placeholder(tf.float32, [None], "labels")
    out["labels"] = labels
    all_ids = tf.concat(values, 0)
    embeddings = table.lookup(all_ids)  # Unique ids, one request per PS.
    pooled = []
    for rows, row_lengths in zip(
        tf.split(embeddings, [tf.size(v) for v in values]), lengths):
      ragged = tf.RaggedTensor.from_row_lengths(rows,
                                                row_lengths,
                                                validate=False)
      count = tf.maximum(tf.cast(row_lengths, tf.float32), 1.0)[:, None]
      pooled.append(tf.reduce_sum(ragged, axis=1) / count)  # Mean, 0 if none.
    # Slots in SYNTHETIC_SLOTS order: item_id, item_cats, user_hist,
    # user_tags; user x item products make the crosses easy to learn.
    item, cats, hist, tags = pooled
    features = tf.concat(pooled +
                         [item * hist, item * tags, cats * hist, cats * tags],
                         axis=1)
    hidden = tf.nn.relu(ctr_model.dense_layer(features, 32, "dnn", args.seed))
    logit = ctr_model.dense_layer(hidden, 1, "logit", args.seed + 1)[:, 0]
    loss = tf.reduce_mean(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logit))
    dense_vars = tf.compat.v1.trainable_variables()
    grads = tf.gradients(loss, [embeddings] + dense_vars)
    update_table = table.apply_gradients(all_ids, grads[0], global_step)
    update_dense = tf.compat.v1.train.AdamOptimizer(0.005).apply_gradients(
        zip(grads[1:], dense_vars))
    with tf.control_dependencies([update_table.as_op(), update_dense]):
      out["train_op"] = global_step.assign_add(1)
    out["loss"], out["prob"] = loss, tf.sigmoid(logit)
    out["global_step"], out["table"] = global_step, table
    out["shard_sizes"] = table.shard_sizes()
  return out


def _feed(model, log: click_log.ClickLog, rows) -> Dict[object, np.ndarray]:
  feed = {model["labels"]: log.labels[rows]}
  for slot, column in log.slots.items():
    values, lengths = column.take(rows)
    feed[model[slot + "/values"]] = values
    feed[model[slot + "/row_lengths"]] = lengths
  return feed


def _wait_for_chief(target: str, task: int, timeout: float = 600.0) -> None:
  """Polls until the chief initialized the model (every 0.5 s).

  `MonitoredTrainingSession` would wait too, but checks only every 30 s.
  """
  uninitialized = tf.compat.v1.report_uninitialized_variables()
  deadline = time.time() + timeout
  with tf.compat.v1.Session(target,
                            config=distributed.session_config("worker",
                                                              task)) as sess:
    while sess.run(uninitialized).size:
      if time.time() > deadline:
        raise RuntimeError(f"the chief did not initialize the model within "
                           f"{timeout} s")
      time.sleep(0.5)


def run_worker(cluster, task: int, args) -> None:
  """Trains with `MonitoredTrainingSession`; the chief evaluates at the end."""
  name = f"worker {task}"
  server = distributed.start_server(cluster, "worker", task)
  num_workers = len(cluster["worker"])
  log = click_log.generate_click_log(args.examples + args.eval_examples,
                                     args.seed)
  train_log, held_out = log.split(args.examples)
  mine = np.arange(task, len(train_log), num_workers)  # This worker's part.
  rng = np.random.default_rng(args.seed + task)
  with tf.Graph().as_default():  # TF1 graph mode.
    model = build_model(cluster, args)
    is_chief = task == 0
    if not is_chief:
      _wait_for_chief(server.target, task)
    hooks = [tf.compat.v1.train.StopAtStepHook(last_step=args.steps)]
    local_step, start = 0, time.time()
    with tf.compat.v1.train.MonitoredTrainingSession(
        master=server.target,
        is_chief=is_chief,
        checkpoint_dir=args.model_dir if is_chief else None,
        save_checkpoint_secs=60,
        save_summaries_steps=None,
        save_summaries_secs=None,
        log_step_count_steps=None,
        hooks=hooks,
        config=distributed.session_config("worker", task)) as sess:
      _print(name, "initialized the model" if is_chief else "joined")
      while not sess.should_stop():
        rows = rng.choice(mine, args.batch_size, replace=False)
        _, loss, step = sess.run(
            [model["train_op"], model["loss"], model["global_step"]],
            _feed(model, train_log, rows))
        local_step += 1
        if local_step % args.log_every == 0 and not sess.should_stop():
          sizes = sess.run(model["shard_sizes"])
          _print(
              name, f"local step {local_step}, global step {step}, loss "
              f"{loss:.4f}, table entries per PS {sizes.tolist()}, "
              f"{local_step * args.batch_size / (time.time() - start):.0f} "
              "examples/s")
    _print(name, f"done after {local_step} local steps")
    if not is_chief:
      return
    # The chief scores the held-out examples with the trained shards.
    with tf.compat.v1.Session(server.target,
                              config=distributed.session_config("worker",
                                                                task)) as sess:
      probs = []
      for begin in range(0, len(held_out), 4096):
        rows = np.arange(begin, min(begin + 4096, len(held_out)))
        probs.append(sess.run(model["prob"], _feed(model, held_out, rows)))
      auc = click_log.roc_auc(held_out.labels, np.concatenate(probs))
      sizes = sess.run(model["shard_sizes"])
    best = click_log.roc_auc(held_out.labels, held_out.click_prob)
    _print(
        name, f"held-out AUC {auc:.4f} on {len(held_out)} examples "
        f"(the generator's true click probabilities score {best:.4f}); "
        f"table entries per PS {sizes.tolist()}")


# ----------------------------------------------------------------- launcher


def _stream(name: str, process: subprocess.Popen) -> None:
  """Prints a task's output, each line prefixed with the task."""
  for line in process.stdout:
    line = line.rstrip()
    print(line if line.startswith(f"[{name}]") else f"[{name}] {line}",
          flush=True)


def launch_local(args, argv: List[str]) -> int:
  """Runs every task of a local cluster as a subprocess; returns exit code."""
  if args.ps < 1 or args.workers < 1:
    raise SystemExit(f"--ps and --workers must be >= 1, got {args.ps}, "
                     f"{args.workers}")
  cluster = distributed.local_cluster_spec(args.ps, args.workers)
  model_dir = args.model_dir or tempfile.mkdtemp(prefix="distributed_demo_")
  print(f"cluster {json.dumps(cluster)}\nmodel_dir {model_dir}", flush=True)
  env = dict(os.environ)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  env.pop("TF_CONFIG", None)

  def start(job, task):
    command = [
        sys.executable, "-m", _MODULE, *argv, "--cluster_spec",
        json.dumps(cluster), "--job_name", job, "--task_index",
        str(task), "--model_dir", model_dir
    ]
    return subprocess.Popen(command,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            env=env,
                            text=True)

  processes = []
  try:
    for job, count in (("ps", args.ps), ("worker", args.workers)):
      for task in range(count):
        process = start(job, task)
        processes.append((job, task, process))
        threading.Thread(target=_stream,
                         args=(f"{job} {task}", process),
                         daemon=True).start()
    code = 0
    for job, task, process in processes:
      if job == "worker":
        code = code or process.wait()
    return code
  finally:
    for _, _, process in processes:
      if process.poll() is None:
        process.kill()
        process.wait()


def training_flags(argv: List[str]) -> List[str]:
  """`argv` without the launcher's own flags (what each task gets)."""
  kept, skip = [], False
  for flag in argv:
    if skip:
      skip = False
      continue
    if flag.split("=")[0] in ("--ps", "--workers", "--model_dir"):
      skip = "=" not in flag
      continue
    kept.append(flag)
  return kept


def main(argv: Optional[List[str]] = None) -> int:
  """Launches a local cluster, or runs the task the flags/TF_CONFIG name."""
  argv = list(sys.argv[1:] if argv is None else argv)
  args = build_parser().parse_args(argv)
  found = _cluster(args)
  if found is None:
    return launch_local(args, training_flags(argv))
  cluster, job, task = found
  if job not in ("ps", "worker") or "ps" not in cluster:
    raise SystemExit(f"this demo runs 'ps' and 'worker' tasks (worker 0 is "
                     f"the chief), got task {job}:{task} of {cluster}")
  if args.model_dir is None:
    raise SystemExit("--model_dir is required for a task of a cluster "
                     "(shared by the chief and the PS tasks)")
  if job == "ps":
    server = distributed.start_server(cluster, "ps", task)
    _print(f"ps {task}", f"serving at {server.target}")
    server.join()
    return 0
  run_worker(cluster, task, args)
  return 0


if __name__ == "__main__":
  sys.exit(main())
