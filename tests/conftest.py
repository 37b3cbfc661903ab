"""pytest configuration shared by the whole test suite."""

import os

# Keep TensorFlow's C++ start-up banner out of the test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
