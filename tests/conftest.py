"""pytest configuration shared by the whole test suite."""

import importlib.util
import os

# Keep TensorFlow's C++ start-up banner out of the test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_report_header(config):  # pylint: disable=unused-argument
  """Names the monolith package the tests import (checkout or installed).

  pytest runs with --import-mode=importlib (pyproject.toml), so this is the
  one on sys.path, e.g. the site-packages of a virtualenv with the wheel.
  """
  spec = importlib.util.find_spec("monolith")
  return "monolith: {}".format(spec.origin if spec else "not importable")


def pytest_collection_modifyitems(config, items):
  """Drops `tf.test.TestCase.test_session`, a context manager, not a test.

  TensorFlow's base class exposes it under a test-like name and skips it
  when run, which would otherwise show up as a skipped test in every class.
  """
  kept = [item for item in items if item.name != "test_session"]
  if len(kept) != len(items):
    config.hook.pytest_deselected(
        items=[item for item in items if item.name == "test_session"])
    items[:] = kept
