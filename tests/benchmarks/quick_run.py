"""Shared harness of the benchmark smoke tests.

`QuickRunTestCase` runs one benchmark script once per test class with
`--quick --json` in a subprocess (as CI does) and keeps its process result
and JSON; `load_script` imports a script as a module to test its helpers.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import tensorflow as tf

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_script(script: pathlib.Path, module_name: str):
  """Imports the benchmark `script` as a module named `module_name`."""
  spec = importlib.util.spec_from_file_location(module_name, script)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class QuickRunTestCase(tf.test.TestCase):
  """Runs `SCRIPT --quick --json` once; `proc` and `result` for every test.

  Subclasses set `SCRIPT` and may override `extra_args` (e.g. `--plot`).
  Every test fails with the script's output tail if the run failed.
  """

  SCRIPT: pathlib.Path = None

  @classmethod
  def extra_args(cls, tmpdir: str):
    """More command-line arguments; `tmpdir` is removed after the class."""
    del tmpdir
    return []

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._tmp = tempfile.TemporaryDirectory()
    path = os.path.join(cls._tmp.name, "out.json")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    argv = [sys.executable, str(cls.SCRIPT), "--quick", "--json", path]
    cls.proc = subprocess.run(argv + cls.extra_args(cls._tmp.name),
                              cwd=str(ROOT),
                              env=env,
                              capture_output=True,
                              text=True,
                              timeout=600,
                              check=False)
    cls.result = None
    if cls.proc.returncode == 0 and os.path.exists(path):
      with open(path) as f:
        cls.result = json.load(f)

  @classmethod
  def tearDownClass(cls):
    cls._tmp.cleanup()
    super().tearDownClass()

  def setUp(self):
    super().setUp()
    self.assertEqual(
        self.proc.returncode, 0,
        f"benchmark failed:\n{self.proc.stdout[-3000:]}\n"
        f"{self.proc.stderr[-3000:]}")
    self.assertIsNotNone(self.result)
