"""Scores held-out examples with an exported SavedModel, TensorFlow alone.

Run as a script (not as a module of the package): it refuses to import
monolith, to show that the exported model needs nothing but TensorFlow.

  python serve_heldout.py --saved_model DIR --examples heldout.npz

`heldout.npz` holds, for each input slot `s`, the arrays `s_values` and
`s_row_splits` (the signature's inputs), plus `labels`. The script calls the
`serving_default` signature and prints one JSON line:
`{"auc": ..., "examples": ..., "monolith_importable": false}`.
"""

import argparse
import json
import sys

sys.modules["monolith"] = None  # Any `import monolith` now fails.

# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
import tensorflow as tf


def roc_auc(labels, scores):
  """Rank-based ROC AUC (ties count one half)."""
  labels = np.asarray(labels).astype(bool).ravel()
  scores = np.asarray(scores, np.float64).ravel()
  num_pos = int(labels.sum())
  num_neg = labels.size - num_pos
  if num_pos == 0 or num_neg == 0:
    return float("nan")
  _, inverse, counts = np.unique(scores,
                                 return_inverse=True,
                                 return_counts=True)
  mean_rank = np.cumsum(counts) - (counts - 1) / 2.0
  pos_ranks = mean_rank[inverse.ravel()][labels].sum()
  return float(
      (pos_ranks - num_pos * (num_pos + 1) / 2.0) / (num_pos * num_neg))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--saved_model", required=True)
  parser.add_argument("--examples", required=True)
  parser.add_argument("--output", default="prob")
  args = parser.parse_args(argv)
  try:
    import monolith  # pylint: disable=unused-import
    importable = True
  except ImportError:
    importable = False
  data = np.load(args.examples)
  serve = tf.saved_model.load(args.saved_model).signatures["serving_default"]
  inputs = {key: tf.constant(data[key]) for key in data.files if key != "labels"}
  scores = serve(**inputs)[args.output].numpy()
  print(
      json.dumps({
          "auc": roc_auc(data["labels"], scores),
          "examples": int(len(data["labels"])),
          "monolith_importable": importable
      }))
  return 0


if __name__ == "__main__":
  sys.exit(main())
