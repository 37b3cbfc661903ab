"""Smoke test of benchmarks/hash_table.py (no timing assertions).

Runs the benchmark once in --quick mode in a subprocess (as CI does) and
checks the JSON it writes: structure, that every variant was checked against
the NumPy reference before being timed, that ours is correct and timed in
every case, and that the targets are reported as not judged. A few pure
helpers (the Zipf sampler, the id bijection, the NumPy reference and the
correctness check, which must reject a wrong variant) are tested in-process.
"""

import math
import os

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tests.benchmarks import quick_run

_SCRIPT = quick_run.ROOT / "benchmarks" / "hash_table.py"

_CASE_KEYS = {"dim", "optimizer", "exec", "variants", "train", "lookup"}
_VARIANT_KEYS = {
    "name", "is_ours", "status", "detail", "check", "entries", "train", "lookup"
}
_SUMMARY_KEYS = {
    "n_cases", "targets", "train_ours_over_floor", "train_ours_over_tfra",
    "lookup_ours_over_floor", "ours_not_ok", "wrong_variants"
}


def _load_benchmark_module():
  return quick_run.load_script(_SCRIPT, "hash_table_benchmark")


class QuickRunTest(quick_run.QuickRunTestCase):
  """Runs `hash_table.py --quick --json --plot` once and inspects the result."""

  SCRIPT = _SCRIPT

  @classmethod
  def extra_args(cls, tmpdir):
    try:
      import matplotlib  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      cls.plot = None
      return []
    cls.plot = os.path.join(tmpdir, "out.png")
    return ["--plot", cls.plot]

  def test_prints_overview_and_unjudged_targets(self):
    out = self.proc.stdout
    self.assertIn("OVERVIEW", out)
    self.assertIn("train ours / floor", out)
    self.assertIn("target <= 1.30: not judged", out)
    self.assertIn("target <= 0.50: not judged", out)
    self.assertIn("target <= 2.00: not judged", out)
    for target in self.result["summary"]["targets"].values():
      self.assertEqual(target["verdict"], "not judged")

  def test_top_level_structure(self):
    r = self.result
    self.assertEqual(r["schema_version"], 1)
    self.assertTrue(r["config"]["quick"])
    self.assertFalse(r["config"]["memory"])
    self.assertIn("tensorflow", r["environment"])
    self.assertContainsSubset(_SUMMARY_KEYS, r["summary"].keys())
    w = r["workload"]
    self.assertEqual(w["ids_per_batch"],
                     r["config"]["batch"] * r["config"]["ids_per_example"])
    self.assertGreater(w["distinct_total"], 0)
    self.assertLess(w["mean_unique_per_batch"], w["ids_per_batch"])

  def test_every_case_was_run(self):
    cfg = self.result["config"]
    got = {(c["dim"], c["optimizer"], c["exec"]) for c in self.result["cases"]}
    want = {(d, o, e)
            for d in cfg["dims"]
            for o in cfg["optimizers"]
            for e in cfg["execs"]}
    self.assertEqual(got, want)
    self.assertEqual(set(cfg["optimizers"]), {"adagrad", "adam"})
    self.assertEqual(set(cfg["execs"]), {"function", "graph"})

  def test_variants_checked_before_timing(self):
    for case in self.result["cases"]:
      label = f"{case['dim']}/{case['optimizer']}/{case['exec']}"
      self.assertContainsSubset(_CASE_KEYS, case.keys(), label)
      names = [v["name"] for v in case["variants"]]
      self.assertLen(set(names), len(names), label)
      for v in case["variants"]:
        self.assertContainsSubset(_VARIANT_KEYS, v.keys(), label)
        if v["status"] in ("ok", "WRONG"):
          self.assertIsNotNone(v["check"], f"{label} {v['name']}")
          self.assertIn("max_abs_err", v["check"])
        if v["status"] == "ok":
          self.assertTrue(v["check"]["ok"], f"{label} {v['name']}")
          for mode in ("train", "lookup"):
            self.assertGreater(v[mode]["ms"], 0, f"{label} {v['name']}")
            self.assertLen(v[mode]["spread_ms"], 2)
        else:
          for mode in ("train", "lookup"):
            self.assertIsNone(v[mode]["ms"], f"{label} {v['name']}")

  def test_ours_and_floor_correct_in_every_case(self):
    for case in self.result["cases"]:
      label = f"{case['dim']}/{case['optimizer']}/{case['exec']}"
      by_name = {v["name"]: v for v in case["variants"]}
      ours = by_name["ours"]
      self.assertEqual(ours["status"], "ok", f"{label}: {ours['detail']}")
      self.assertTrue(ours["is_ours"])
      self.assertLess(ours["check"]["max_abs_err"], 1e-5)
      self.assertEqual(ours["check"]["entries"], 64)
      self.assertEqual(by_name["floor: gather/scatter"]["status"], "ok", label)
      self.assertEqual(by_name["MutableHashTable"]["status"], "ok", label)
      kernel = by_name["floor: sparse-apply kernel"]
      self.assertEqual(kernel["status"],
                       "ok" if case["optimizer"] == "adagrad" else "n/a", label)
      self.assertIn(by_name["TFRA dynamic_embedding"]["status"], ("ok", "n/a"))
      self.assertIsNotNone(case["train"]["ours_over_floor"], label)
      self.assertIsNotNone(case["lookup"]["ours_over_floor"], label)
      self.assertGreater(ours["entries"], 0)
    self.assertEmpty(self.result["summary"]["ours_not_ok"])
    self.assertEmpty(self.result["summary"]["wrong_variants"])

  def test_plot_written(self):
    if self.plot is None:
      self.skipTest("matplotlib is not installed")
    self.assertGreater(os.path.getsize(self.plot), 1000)


class HelperTest(tf.test.TestCase, parameterized.TestCase):
  """The workload generator, the NumPy reference and the check."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.bench = _load_benchmark_module()

  def test_zipf_ranks_deterministic_and_in_range(self):
    b = self.bench
    x = b.zipf_ranks(np.random.default_rng(3), 1.2, 20000, 1 << 40)
    y = b.zipf_ranks(np.random.default_rng(3), 1.2, 20000, 1 << 40)
    np.testing.assert_array_equal(x, y)
    self.assertEqual(x.shape, (20000,))
    self.assertGreaterEqual(x.min(), 1)
    self.assertLess(x.max(), 1 << 40)

  @parameterized.named_parameters(("s1_2", 1.2), ("s2_0", 2.0))
  def test_zipf_ranks_follow_the_zeta_pmf(self, s):
    # P(rank = k) = k^-s / zeta(s); truncation at 2^40 is negligible here.
    x = self.bench.zipf_ranks(np.random.default_rng(0), s, 200000, 1 << 40)
    zeta = sum(k**-s for k in range(1, 200000)) + (200000**(1 - s)) / (s - 1)
    for k in (1, 2, 3, 10):
      want = k**-s / zeta
      got = float(np.mean(x == k))
      self.assertAllClose(got,
                          want,
                          atol=4 * math.sqrt(want / 200000),
                          msg=f"rank {k}")

  def test_ranks_to_ids_is_injective_in_the_id_space(self):
    b = self.bench
    ranks = np.concatenate([np.arange(1, 5000), (1 << 40) - np.arange(1, 100)])
    ids = b.ranks_to_ids(ranks)
    self.assertEqual(np.unique(ids).size, ranks.size)
    self.assertGreaterEqual(ids.min(), 0)
    self.assertLess(ids.max(), 1 << 40)

  def test_reference_adagrad_and_adam_by_hand(self):
    b = self.bench
    ids = np.array([5, 5, 9])
    grads = np.array([[1.0], [2.0], [-1.0]], np.float32)
    got = b.reference_steps(b.Opt("adagrad"), 1, [(ids, grads)])
    # id 5: g = 3, n = 0.1 + 9, w = -0.01 * 3 / sqrt(9.1).
    self.assertAllClose(got[5], [-0.03 / math.sqrt(9.1)])
    self.assertAllClose(got[9], [0.01 / math.sqrt(1.1)])
    got = b.reference_steps(b.Opt("adam"), 1, [(ids, grads)])
    # Step 1: m = 0.1 g, v = 0.01 g^2, lr_t = 0.01 sqrt(0.01) / 0.1.
    m, v = 0.3, 0.09
    self.assertAllClose(got[5], [-0.01 * m / (math.sqrt(v) + 0.01)])

  def test_check_accepts_ours_and_rejects_a_wrong_variant(self):
    b = self.bench

    class WrongLr(b.FloorGather):
      """The floor with a 10% larger learning rate."""

      def __init__(self, dim, opt, vocab, uid):
        super().__init__(dim, b.Opt(opt.name, lr=opt.lr * 1.1), vocab, uid)

    class Lossy(b.Ours):
      """Ours, but a lookup of the last id is dropped (zeros)."""

      def lookup(self, ids):
        values = super().lookup(ids)
        keep = tf.cast(tf.range(tf.size(ids)) < tf.size(ids) - 9, tf.float32)
        return values * keep[:, None]

    exe = b.FunctionExec()
    ok = b.check_variant(exe, b.Ours, 4, b.Opt("adagrad"), 901, 0)
    self.assertTrue(ok["ok"], ok["detail"])
    self.assertEqual(ok["entries"], b.CHECK_IDS)
    wrong = b.check_variant(exe, WrongLr, 4, b.Opt("adagrad"), 902, 0)
    self.assertFalse(wrong["ok"])
    self.assertGreater(wrong["max_abs_err"], 1e-4)
    lossy = b.check_variant(exe, Lossy, 4, b.Opt("adam"), 903, 0)
    self.assertFalse(lossy["ok"])

  def test_summary_verdicts(self):
    b = self.bench

    def case(train_floor, train_tfra, lookup_floor):
      return {
          "dim": 16,
          "optimizer": "adagrad",
          "exec": "function",
          "variants": [],
          "train": {
              "ours_over_floor": train_floor,
              "ours_over_tfra": train_tfra
          },
          "lookup": {
              "ours_over_floor": lookup_floor,
              "ours_over_tfra": None
          },
      }

    s = b.summarize([case(1.2, 0.4, 1.5), case(1.25, 0.45, 2.5)])
    t = s["targets"]
    self.assertEqual(t["train_ours_over_floor"]["verdict"], "PASS")
    self.assertEqual(t["train_ours_over_tfra"]["verdict"], "PASS")
    self.assertEqual(t["lookup_ours_over_floor"]["verdict"], "FAIL")
    self.assertAllClose(t["lookup_ours_over_floor"]["measured_worst"], 2.5)
    s = b.summarize([case(1.2, None, 1.5)], judge=False)
    self.assertEqual(s["targets"]["train_ours_over_floor"]["verdict"],
                     "not judged")


if __name__ == "__main__":
  tf.test.main()
