"""Runs one test file under pytest inside `bazel test`.

The `py_test` targets of `pytest_tests()` (bazel/python.bzl) use this as
their main, with the test file (relative to the runfiles root, which is the
working directory of a Bazel test) as argument. pytest picks up
`pyproject.toml` and `tests/conftest.py` from the runfiles, as in CI's
`python -m pytest`, and writes its JUnit report where Bazel asks for it.
With `pyproject.toml`'s `--import-mode=importlib`, pytest does not change
`sys.path`: `monolith` (with Bazel's generated `_pb2` modules) and `tests.*`
helper modules are imported through the runfiles that Bazel's Python stub
puts on `sys.path`.
"""

import os
import sys

import pytest


def main(argv):
  args = list(argv[1:]) + ["-p", "no:cacheprovider"]
  xml_output = os.environ.get("XML_OUTPUT_FILE")
  if xml_output:
    args.append(f"--junitxml={xml_output}")
  # `bazel test --test_filter=EXPR` selects tests like `pytest -k EXPR`.
  test_filter = os.environ.get("TESTBRIDGE_TEST_ONLY")
  if test_filter:
    args.extend(["-k", test_filter])
  return pytest.main(args)


if __name__ == "__main__":
  sys.exit(main(sys.argv))
