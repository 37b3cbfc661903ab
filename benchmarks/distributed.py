"""Benchmark of the PS-sharded hash table on one machine.

Times one training step of an embedding table -- ``lookup`` of a batch's ids,
a gradient computed from the looked-up rows, ``apply_gradients`` (Adagrad,
gradients of equal ids summed, one step per unique id) -- for

* ``single``: one ``hash_table_ops.HashTable`` in a local session (no
  network);
* ``ps=N``: a ``sharded_hash_table.ShardedHashTable`` with one shard on each
  of N parameter servers (N = 1, 2, 4 by default), trained by one worker
  over gRPC. Every task is a ``tf.distribute.Server`` in this process on
  127.0.0.1; the worker de-duplicates the ids, sends each PS its unique ids
  once and pushes one summed gradient row per unique id.

Workload: ``--batch`` examples x ``--ids-per-example`` ids drawn from
Zipf(``--zipf``), ``--dim`` dims. Each variant first trains
``--check-steps`` steps on its own fresh table and its embeddings are compared
with the single table's (they must agree: same initializer, same summed
gradients); then ``--warmup`` untimed and ``--steps`` timed steps.

Reported per variant: examples/s (median step time), ms/step, and the bytes
the step moves between worker and PS: per unique id 8 (id, lookup) + 4*dim
(row back) + 8 (id, update) + 4*dim (gradient row) -- tensor payload from
the actual unique counts, without gRPC/protobuf framing (zero for
``single``).

What one machine can show: the cost of the distributed path (partitioning,
serialization, gRPC round trips, one extra process hop per shard) and the
payload per step, which does not depend on the number of PS (each PS gets
1/N of it). It cannot show scaling: here every PS shares the same cores and
memory bandwidth with the worker, so more PS tasks mostly add overhead. On
separate machines each PS brings its own CPU, memory and network link, and
the per-PS load falls as 1/N.

Usage: python benchmarks/distributed.py [--ps 1,2,4] [--quick]
"""

import argparse
import json
import statistics
import sys
import time
from typing import Dict, List

import numpy as np
import tensorflow as tf

from monolith.native_training import distributed
from monolith.native_training import entry
from monolith.native_training import hash_table_ops
from monolith.native_training import sharded_hash_table


def _config(dim: int) -> entry.HashTableConfigInstance:
  segment = entry.CombineAsSegment(dim,
                                   entry.RandomUniformInitializer(-0.01, 0.01),
                                   entry.AdagradOptimizer(learning_rate=0.05),
                                   entry.Fp32Compressor())
  return entry.HashTableConfigInstance(
      entry.build_embedding_hash_table_config([segment]), [0.05])


def _batches(args, count: int, seed: int) -> List[np.ndarray]:
  rng = np.random.default_rng(seed)
  size = args.batch * args.ids_per_example
  return [rng.zipf(args.zipf, size).astype(np.int64) for _ in range(count)]


def _build(table, dim: int):
  """The step: lookup, gradient from the rows, summed-gradient update."""
  ids = tf.compat.v1.placeholder(tf.int64, [None], "ids")
  step = tf.compat.v1.placeholder(tf.int64, [], "step")
  rows = table.lookup(ids)
  grads = 0.1 * rows + 0.01  # Stands in for d loss / d rows.
  train = table.apply_gradients(ids, grads, step, enable_dedup=True).as_op()
  del dim
  return ids, step, train


def run_variant(args, num_ps: int, check, batches) -> Dict:
  """Times one variant (num_ps == 0: the single-process table)."""
  graph = tf.Graph()
  with graph.as_default():
    if num_ps == 0:
      table = hash_table_ops.HashTable(_config(args.dim), seed=1)
      target, config = "", None
    else:
      cluster = distributed.local_cluster_spec(num_ps, 1)
      servers = [
          distributed.start_server(cluster, job, task)
          for job in ("ps", "worker")
          for task in range(len(cluster[job]))
      ]
      target = servers[-1].target
      config = distributed.session_config("worker", 0)
      table = sharded_hash_table.ShardedHashTable(_config(args.dim),
                                                  num_ps,
                                                  seed=1)
    ids, step, train = _build(table, args.dim)
    probe_ids = tf.compat.v1.placeholder(tf.int64, [None])
    probe = table.lookup(probe_ids)
    init = tf.compat.v1.global_variables_initializer()
  with tf.compat.v1.Session(target, graph=graph, config=config) as sess:
    sess.run(init)
    for k, batch in enumerate(check["batches"]):
      sess.run(train, {ids: batch, step: k})
    values = sess.run(probe, {probe_ids: check["probe"]})
    times = []
    for k, batch in enumerate(batches):
      start = time.perf_counter()
      sess.run(train, {ids: batch, step: k})
      if k >= args.warmup:
        times.append(time.perf_counter() - start)
  median = statistics.median(times)
  unique = [len(np.unique(b)) for b in batches[args.warmup:]]
  payload = 0 if num_ps == 0 else statistics.mean(unique) * (16 + 8 * args.dim)
  return {
      "variant": "single" if num_ps == 0 else f"ps={num_ps}",
      "examples_per_s": args.batch / median,
      "ms_per_step": 1000 * median,
      "unique_ids_per_step": statistics.mean(unique),
      "bytes_per_step": payload,
      "check_values": values,
  }


def parse_args(argv=None):
  p = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--ps",
                 default="1,2,4",
                 help="comma-separated numbers of PS tasks")
  p.add_argument("--batch", type=int, default=4096)
  p.add_argument("--ids-per-example", type=int, default=10)
  p.add_argument("--zipf", type=float, default=1.2)
  p.add_argument("--dim", type=int, default=16)
  p.add_argument("--warmup", type=int, default=5)
  p.add_argument("--steps", type=int, default=30)
  p.add_argument("--check-steps", type=int, default=3)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--quick",
                 action="store_true",
                 help="small batch, few steps (a smoke run)")
  p.add_argument("--json", default=None, help="also write results here")
  args = p.parse_args(argv)
  if args.quick:
    args.batch, args.steps, args.warmup = 512, 5, 2
  try:
    args.ps = [int(n) for n in args.ps.split(",")]
  except ValueError:
    p.error(f"--ps must be comma-separated integers, got {args.ps!r}")
  if any(n < 1 for n in args.ps):
    p.error(f"--ps values must be >= 1, got {args.ps}")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  check_batches = _batches(args, args.check_steps, args.seed + 1)
  check = {
      "batches": check_batches,
      "probe": np.unique(np.concatenate(check_batches))[:4096],
  }
  batches = _batches(args, args.warmup + args.steps, args.seed)
  print(
      f"batch {args.batch} x {args.ids_per_example} ids (Zipf "
      f"{args.zipf}), dim {args.dim}, Adagrad, {args.steps} timed steps",
      flush=True)
  results, reference, ok = [], None, True
  for num_ps in [0] + args.ps:
    result = run_variant(args, num_ps, check, batches)
    if reference is None:
      reference = result["check_values"]
      result["check"] = "reference"
    else:
      error = float(np.max(np.abs(result["check_values"] - reference)))
      result["check"] = "ok" if error <= 1e-6 else f"WRONG (max |diff| {error})"
      ok = ok and error <= 1e-6
    del result["check_values"]
    results.append(result)
  base = results[0]["examples_per_s"]
  print(f"{'variant':<8} {'examples/s':>11} {'ms/step':>8} {'vs single':>9} "
        f"{'unique ids':>10} {'MiB/step':>9}  check")
  for r in results:
    print(f"{r['variant']:<8} {r['examples_per_s']:>11,.0f} "
          f"{r['ms_per_step']:>8.1f} {r['examples_per_s'] / base:>8.2f}x "
          f"{r['unique_ids_per_step']:>10,.0f} "
          f"{r['bytes_per_step'] / 2**20:>9.2f}  {r['check']}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
