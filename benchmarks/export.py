"""Size and speed of exported hash tables (SavedModels in SERVING form).

For each compressor (fp32, fp16, fixed_r8, one_bit) this builds a table of
`--entries` ids with `--dim` dims, exports it with
`export.export_saved_model` behind a `ReduceSum` model, and reports

* the SavedModel's bytes on disk per entry against the ideal
  `8 + bytes of the stored value` (the id plus the encoded embedding);
* export time, and the time to load it with `tf.saved_model.load` in a fresh
  process that cannot import monolith and answer one request.

Usage:

  python benchmarks/export.py                 # 1,000,000 entries, dim 16
  python benchmarks/export.py --quick         # 20,000 entries (CI smoke test)
  python benchmarks/export.py --json out.json
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import tensorflow as tf

from monolith.native_training import embedding_combiners
from monolith.native_training import entry
from monolith.native_training import export
from monolith.native_training import hash_table_serving

_COMPRESSORS = {
    "fp32": (entry.Fp32Compressor, 4.0),
    "fp16": (entry.Fp16Compressor, 2.0),
    "fixed_r8": (entry.FixedR8Compressor, 1.0),
    "one_bit": (entry.OneBitCompressor, 0.125),
}


def _dir_bytes(path):
  total = 0
  for root, _, files in os.walk(path):
    total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
  return total


def _model(lookup, features):
  ids = features["ids"]
  return {
      "pooled":
          embedding_combiners.ReduceSum().combine(ids, lookup("t", ids.values))
  }


def run_case(comp, entries, dim, workdir):
  """Exports one table and measures it; returns a result dict."""
  factory, value_bytes = _COMPRESSORS[comp]
  config = entry.build_embedding_hash_table_config([
      entry.CombineAsSegment(dim, entry.ZerosInitializer(),
                             entry.SgdOptimizer(), factory())
  ], entry.CuckooHashTableConfig())
  rng = np.random.default_rng(0)
  ids = rng.choice(1 << 40, size=entries, replace=False).astype(np.int64)
  weights = rng.normal(scale=0.1, size=[entries, dim]).astype(np.float32)
  table = hash_table_serving.ServingHashTable(config, ids, weights, "t")
  export_dir = os.path.join(workdir, comp)
  start = time.perf_counter()
  export.export_saved_model(
      export_dir, _model, {"t": table},
      {"ids": tf.RaggedTensorSpec([None, None], tf.int64, 1)})
  export_s = time.perf_counter() - start
  size = _dir_bytes(export_dir)
  ideal = 8 + dim * value_bytes
  query = ids[:5].tolist()
  code = textwrap.dedent(f"""
      import sys, time
      sys.modules["monolith"] = None
      start = time.perf_counter()
      import tensorflow as tf
      imported = time.perf_counter()
      model = tf.saved_model.load({export_dir!r})
      out = model.signatures["serving_default"](
          ids_values=tf.constant({query}, tf.int64),
          ids_row_splits=tf.constant([0, 5], tf.int64))
      print(time.perf_counter() - imported)
      """)
  result = subprocess.run([sys.executable, "-c", code],
                          capture_output=True,
                          text=True,
                          check=True)
  load_s = float(result.stdout.strip().splitlines()[-1])
  shutil.rmtree(export_dir)
  return {
      "compressor": comp,
      "entries": entries,
      "dim": dim,
      "saved_model_bytes": size,
      "bytes_per_entry": size / entries,
      "ideal_bytes_per_entry": ideal,
      "ratio_to_ideal": size / entries / ideal,
      "export_s": export_s,
      "load_and_first_request_s": load_s,
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--entries", type=int, default=1_000_000)
  parser.add_argument("--dim", type=int, default=16)
  parser.add_argument("--quick",
                      action="store_true",
                      help="20,000 entries: a smoke test")
  parser.add_argument("--json", help="write the results here")
  args = parser.parse_args(argv)
  entries = 20_000 if args.quick else args.entries
  if entries < 1 or args.dim < 1:
    parser.error("--entries and --dim must be >= 1")
  results = []
  workdir = tempfile.mkdtemp(prefix="monolith_export_bench_")
  try:
    print(f"{'compressor':<10} {'bytes/entry':>12} {'ideal':>6} {'ratio':>6} "
          f"{'export s':>9} {'load+request s':>15}")
    for comp in _COMPRESSORS:
      r = run_case(comp, entries, args.dim, workdir)
      results.append(r)
      print(f"{comp:<10} {r['bytes_per_entry']:>12.1f} "
            f"{r['ideal_bytes_per_entry']:>6.0f} {r['ratio_to_ideal']:>6.2f} "
            f"{r['export_s']:>9.2f} {r['load_and_first_request_s']:>15.2f}")
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  print(
      f"{entries:,} entries of dim {args.dim}"
      f"{' (quick: sizes include fixed overhead, not judged)' if args.quick else ''}"
  )
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
