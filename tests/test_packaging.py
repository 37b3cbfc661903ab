"""Tests of the packaging: the sdist's contents and how pytest imports.

CI (.ci/packaging.sh) also builds the sdist and the wheel, installs each into
a fresh virtualenv and runs part of this suite against the installed wheel;
these tests check the two things that make that work, in seconds.
"""

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap

from absl.testing import parameterized
import tensorflow as tf

_ROOT = pathlib.Path(__file__).resolve().parents[1]

# What `pip install monolith-tf-*.tar.gz` needs besides the Python modules.
_SDIST_FILES = ("setup.py", "pyproject.toml", "MANIFEST.in", "README.md",
                "monolith/version.py", "monolith/__init__.py",
                "monolith/native_training/entry.py",
                "tests/data/hash_table_schema.json", "tests/conftest.py")


def _run(args, cwd, env=None):
  return subprocess.run(args,
                        cwd=cwd,
                        env=dict(os.environ,
                                 PYTHONDONTWRITEBYTECODE="1",
                                 **(env or {})),
                        capture_output=True,
                        text=True,
                        timeout=300,
                        check=False)


def _tempdir(test):
  """A new temporary directory, removed after `test`."""
  tmp = tempfile.TemporaryDirectory()
  test.addCleanup(tmp.cleanup)
  return tmp.name


class SdistTest(tf.test.TestCase):

  def test_sdist_carries_the_protos_and_the_build_inputs(self):
    if not (_ROOT / "setup.py").is_file():
      self.skipTest("needs the source tree (e.g. not under Bazel)")
    if importlib.util.find_spec("setuptools") is None:
      self.skipTest("needs setuptools")
    protos = sorted(
        path.relative_to(_ROOT).as_posix()
        for path in (_ROOT / "protos").rglob("*.proto"))
    self.assertLen(protos, 4)
    # Build from a copy, so that the checkout is not written to.
    source = os.path.join(_tempdir(self), "source")
    shutil.copytree(_ROOT,
                    source,
                    ignore=shutil.ignore_patterns(".git", ".venv", "bazel-*",
                                                  "build", "dist", "*.egg-info",
                                                  "__pycache__",
                                                  ".pytest_cache"))
    out = _tempdir(self)
    result = _run([sys.executable, "setup.py", "-q", "sdist", "-d", out],
                  cwd=source)
    self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
    (sdist,) = os.listdir(out)
    with tarfile.open(os.path.join(out, sdist)) as tar:
      # Names without the leading "monolith-tf-<version>/" (or
      # "monolith_tf-<version>/").
      names = {name.partition("/")[2] for name in tar.getnames()}
    for name in protos + list(_SDIST_FILES):
      self.assertIn(name, names)
    # The _pb2 modules are generated from the protos at install time.
    self.assertEmpty([name for name in names if name.endswith("_pb2.py")])


class PytestImportModeTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(("checkout_tests", "tests"),
                                  ("one_test_file", "tests/sub/test_probe.py"))
  def test_tests_import_the_installed_package_not_the_checkout(self, target):
    # A stand-in checkout: this project's pytest settings, a package that
    # must not be imported (like an unbuilt checkout, whose _pb2 modules are
    # missing), and a test package like tests/ with a helper module; plus the
    # "installed" package on PYTHONPATH. pytest runs from outside the
    # checkout, like CI's run against the installed wheel.
    pyproject = _ROOT / "pyproject.toml"
    if not pyproject.is_file():
      self.skipTest("needs pyproject.toml")
    tmp = _tempdir(self)
    checkout = os.path.join(tmp, "checkout")
    files = {
        "checkout/pyproject.toml":
            pyproject.read_text(encoding="utf-8"),
        "checkout/probe_pkg/__init__.py":
            "WHERE = 'checkout'\n",
        "checkout/tests/__init__.py":
            "",
        "checkout/tests/sub/__init__.py":
            "",
        "checkout/tests/sub/helper.py":
            "VALUE = 42\n",
        "checkout/tests/sub/test_probe.py":
            textwrap.dedent("""\
                import probe_pkg
                from tests.sub import helper


                def test_imports_the_installed_package():
                  assert probe_pkg.WHERE == "installed", probe_pkg.__file__
                  assert helper.VALUE == 42
                """),
        "site/probe_pkg/__init__.py":
            "WHERE = 'installed'\n",
    }
    for name, text in files.items():
      path = os.path.join(tmp, name)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    outside = os.path.join(tmp, "elsewhere")
    os.makedirs(outside)
    result = _run(
        [sys.executable, "-m", "pytest", "-q",
         os.path.join(checkout, target)],
        cwd=outside,
        env={"PYTHONPATH": os.path.join(tmp, "site")})
    self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
    self.assertIn("1 passed", result.stdout)


if __name__ == "__main__":
  tf.test.main()
