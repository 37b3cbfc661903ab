"""Smoke test of benchmarks/combiners.py (no timing assertions).

Runs the benchmark once in --quick mode in a subprocess (as CI does) and
checks the JSON it writes: structure, that every variant was checked against
the NumPy reference before being timed, that the stock baselines that are
wrong by design are reported as differing as expected (not WRONG, so that a
CI log does not look broken) and never picked as the best baseline. A few
pure helpers are tested in-process.
"""

import os
import sys

import numpy as np
import tensorflow as tf

from tests.benchmarks import quick_run

_SCRIPT = quick_run.ROOT / "benchmarks" / "combiners.py"

_CASE_KEYS = {
    "workload", "op", "mode", "exec", "floor_bytes", "floor_ms", "overhead_ms",
    "variants", "best_baseline", "ours_status", "ours_ms", "ratio",
    "ratio_vs_monolith"
}
_SUMMARY_KEYS = {
    "n_cases", "n_compared", "geomean_ours_over_best_baseline", "worst",
    "firstn_fwdbwd_ours_over_monolith_geomean", "firstn_fwdbwd_cases",
    "xla_geomean_ours_over_best_baseline", "ours_not_ok", "wrong_variants",
    "expected_differences", "targets"
}


def _load_benchmark_module():
  return quick_run.load_script(_SCRIPT, "combiners_benchmark")


class QuickRunTest(quick_run.QuickRunTestCase):
  """Runs `combiners.py --quick --json` once and inspects the result."""

  SCRIPT = _SCRIPT

  def test_prints_table_and_summary(self):
    out = self.proc.stdout
    self.assertIn("OVERVIEW", out)
    self.assertIn("geomean ours / best baseline", out)
    self.assertIn("target <= 0.70", out)
    self.assertIn("target <= 1.00", out)
    self.assertIn("target <= 0.20", out)

  def test_top_level_structure(self):
    r = self.result
    self.assertEqual(r["schema_version"], 2)
    self.assertTrue(r["config"]["quick"])
    self.assertGreater(r["bandwidth"]["bytes_per_s"], 0)
    self.assertNotEmpty(r["bandwidth"]["measurements"])
    self.assertIn("tensorflow", r["environment"])
    self.assertContainsSubset(_SUMMARY_KEYS, r["summary"].keys())
    wl = r["workloads"]["a"]
    self.assertGreaterEqual(wl["trailing_empty_rows"], 1)
    self.assertGreater(wl["empty_rows"], wl["trailing_empty_rows"])

  def test_every_op_mode_and_exec_was_run(self):
    cfg = self.result["config"]
    got = {(c["workload"], c["op"], c["mode"], c["exec"])
           for c in self.result["cases"]}
    want = {(w, o, m, e)
            for w in cfg["workloads"]
            for o in cfg["ops"]
            for m in cfg["modes"]
            for e in cfg["execs"]
            if not o.startswith("firstn") or w in cfg["firstn_workloads"]}
    self.assertEqual(got, want)
    self.assertTrue(any(o.startswith("firstn") for o in cfg["ops"]))
    self.assertEqual(set(cfg["modes"]), {"fwd", "fwdbwd"})
    self.assertEqual(set(cfg["execs"]), {"function", "graph"})

  def test_cases_checked_before_timing(self):
    for case in self.result["cases"]:
      label = "%s/%s/%s/%s" % (case["workload"], case["op"], case["mode"],
                               case["exec"])
      self.assertContainsSubset(_CASE_KEYS, case.keys(), label)
      ours = [v for v in case["variants"] if v["is_ours"]]
      self.assertLen(ours, 1, label)
      self.assertEqual(ours[0]["status"], "ok", (label, ours[0]))
      self.assertGreater(len(case["variants"]), 3, label)
      ok = [v for v in case["variants"] if v["status"] == "ok"]
      self.assertGreaterEqual(len(ok), 4, label)
      for v in case["variants"]:
        # ERROR (a baseline that does not build on this TF version) is
        # tolerated for baselines, never for ours; n/a only exists with --xla.
        self.assertIn(v["status"], ("ok", "differs", "WRONG", "ERROR"),
                      (label, v))
        if v["status"] == "ERROR":
          self.assertFalse(v["is_ours"])
          continue
        self.assertTrue(v["checked"], (label, v["name"]))
        if v["status"] == "ok":
          self.assertTrue(v["check"]["output"]["ok"], (label, v["name"]))
          if case["mode"] == "fwdbwd":
            self.assertTrue(v["check"]["grad"]["ok"], (label, v["name"]))
          self.assertGreater(v["ms"], 0)
          self.assertGreater(v["raw_ms"], 0)
          self.assertIsNotNone(v["ratio_to_floor"])
        else:
          self.assertNotIn("ms", v, (label, v["name"]))
          self.assertIsNone(v["ratio_to_best_baseline"])

  def test_expected_differences_are_labelled_and_excluded(self):
    differs_seen = set()
    for case in self.result["cases"]:
      status = {v["name"]: v["status"] for v in case["variants"]}
      best = case["best_baseline"]
      self.assertIsNotNone(best)
      self.assertEqual(status[best["name"]], "ok")
      self.assertNotEqual(best["name"], "ours")
      differs_seen.update(n for n, s in status.items() if s == "differs")
      if not case["op"].startswith("firstn"):
        # Workload a has trailing empty rows: embedding_lookup_sparse drops
        # them, so used as is it differs, on purpose.
        self.assertEqual(status["tf.nn.embedding_lookup_sparse"], "differs")
        self.assertEqual(
            status["tf.nn.embedding_lookup_sparse(prebuilt sp_ids)"], "differs")
        self.assertEqual(status["tf.nn.embedding_lookup_sparse+pad"], "ok")
      if case["op"] == "mean":
        # Empty rows make tf.reduce_mean on a ragged tensor NaN.
        self.assertEqual(status["tf.reduce_mean(ragged)"], "differs")
      for v in case["variants"]:
        if v["status"] == "differs":
          self.assertIn(v["expected"],
                        ("NaN for empty rows", "drops trailing empty rows"))
          self.assertNotIn("ms", v)
    self.assertIn("tf.nn.embedding_lookup_sparse", differs_seen)
    self.assertIn("tf.reduce_mean(ragged)", differs_seen)
    self.assertNotEmpty(self.result["summary"]["expected_differences"])
    # Nothing is wrong unexpectedly, and the log says so.
    self.assertEqual(self.result["summary"]["wrong_variants"], [])
    out = self.proc.stdout
    self.assertIn("differs (expected: NaN for empty rows)", out)
    self.assertIn("differs (expected: drops trailing empty rows)", out)
    self.assertNotRegex(out, r"\sWRONG \(")  # No variant's status.
    self.assertIn("baselines WRONG unexpectedly (excluded): 0", out)

  def test_prebuilt_sparse_ids_baseline(self):
    for case in self.result["cases"]:
      if case["op"].startswith("firstn"):
        continue
      names = [v["name"] for v in case["variants"]]
      self.assertIn("tf.nn.embedding_lookup_sparse(prebuilt sp_ids)", names)

  def test_firstn_compared_with_monolith(self):
    firstn = [
        c for c in self.result["cases"]
        if c["op"].startswith("firstn") and c["mode"] == "fwdbwd"
    ]
    self.assertNotEmpty(firstn)
    for case in firstn:
      self.assertIsNotNone(case["ratio_vs_monolith"])
    self.assertIsNotNone(
        self.result["summary"]["firstn_fwdbwd_ours_over_monolith_geomean"])

  def test_plot(self):
    try:
      import matplotlib  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      self.skipTest("matplotlib not installed")
    module = _load_benchmark_module()
    path = os.path.join(self.get_temp_dir(), "ratios.png")
    module.write_plot(path, self.result["cases"], self.result["summary"])
    with open(path, "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")


class HelpersTest(tf.test.TestCase):
  """In-process tests of the benchmark's pure helpers."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.bm = _load_benchmark_module()

  def _workload(self, lengths, dim=1):
    wl = self.bm.make_workload("a", True, 0, tf.float32)
    wl.lengths = np.asarray(lengths, np.int64)
    wl.splits = np.concatenate([[0], np.cumsum(wl.lengths)]).astype(np.int64)
    wl.dim = dim
    wl.embedding = np.arange(1, wl.splits[-1] + 1,
                             dtype=np.float64).reshape(-1, 1)
    return wl

  def test_reference_outputs(self):
    wl = self._workload([1, 2, 3, 0])
    self.assertAllClose(
        self.bm.reference_output(wl, "firstn2")[:3],
        [[[1.0], [0.0]], [[2.0], [3.0]], [[4.0], [5.0]]])
    self.assertAllClose(self.bm.reference_output(wl, "sum"),
                        [[1.0], [5.0], [15.0], [0.0]])
    self.assertAllClose(self.bm.reference_output(wl, "mean"),
                        [[1.0], [2.5], [5.0], [0.0]])
    ct = np.ones((4, 1))
    self.assertAllClose(
        self.bm.reference_grad(wl, "sqrtn", ct)[:, 0],
        [1.0] + [2**-0.5] * 2 + [3**-0.5] * 3)
    ct = np.ones((4, 2, 1))
    self.assertAllClose(
        self.bm.reference_grad(wl, "firstn2", ct)[:, 0], [1, 1, 1, 1, 1, 0])

  def test_compare_flags_wrong_results(self):
    want = np.ones((3, 2))
    self.assertTrue(self.bm.compare("x", want + 1e-7, want, 1e-4)[0])
    ok, detail, _ = self.bm.compare("x", np.ones((2, 2)), want, 1e-4)
    self.assertFalse(ok)
    self.assertIn("shape", detail)
    bad = want.copy()
    bad[1, 1] = np.nan
    self.assertFalse(self.bm.compare("x", bad, want, 1e-4)[0])
    self.assertFalse(self.bm.compare("x", want * 1.01, want, 1e-4)[0])

  def test_expected_difference(self):
    wl = self._workload([1, 0, 2, 0])
    nan = {"status": "WRONG", "is_ours": False, "detail": "output has NaN/Inf"}
    self.assertEqual(
        self.bm.expected_difference(dict(nan, name="tf.reduce_mean(ragged)"),
                                    wl), "NaN for empty rows")
    # Ours is never excused, nor another baseline, nor another failure.
    self.assertIsNone(
        self.bm.expected_difference(
            dict(nan, name="tf.reduce_mean(ragged)", is_ours=True), wl))
    self.assertIsNone(
        self.bm.expected_difference(dict(nan, name="tf.sparse.segment_mean"),
                                    wl))
    dropped = {
        "status": "WRONG",
        "is_ours": False,
        "name": "tf.nn.embedding_lookup_sparse",
        "detail": "output shape [3, 1] != expected [4, 1]"
    }
    self.assertEqual(self.bm.expected_difference(dropped, wl),
                     "drops trailing empty rows")
    self.assertIsNone(
        self.bm.expected_difference(dict(dropped, detail="grad max abs err"),
                                    wl))
    self.assertIsNone(
        self.bm.expected_difference(dict(dropped, status="ok"), wl))

  def test_best_baseline_skips_ours_and_wrong(self):
    variants = [
        {
            "name": "ours",
            "is_ours": True,
            "status": "ok",
            "ms": 0.1
        },
        {
            "name": "fast_wrong",
            "is_ours": False,
            "status": "WRONG"
        },
        {
            "name": "broken",
            "is_ours": False,
            "status": "ERROR"
        },
        {
            "name": "slow",
            "is_ours": False,
            "status": "ok",
            "ms": 2.0
        },
        {
            "name": "fast",
            "is_ours": False,
            "status": "ok",
            "ms": 1.0
        },
    ]
    self.assertEqual(self.bm.best_baseline(variants)["name"], "fast")
    case = {"exec": "function", "variants": variants}
    self.bm.finish_case(case)
    self.assertAlmostEqual(case["ratio"], 0.1)
    self.assertIsNone(variants[1]["ratio_to_best_baseline"])

  def test_plot_without_matplotlib_is_a_clear_error(self):
    saved = sys.modules.get("matplotlib")
    sys.modules["matplotlib"] = None  # Makes `import matplotlib` fail.
    try:
      with self.assertRaisesRegex(SystemExit, "matplotlib"):
        self.bm.write_plot(os.path.join(self.get_temp_dir(), "x.png"), [], {})
    finally:
      if saved is None:
        del sys.modules["matplotlib"]
      else:
        sys.modules["matplotlib"] = saved


if __name__ == "__main__":
  tf.test.main()
