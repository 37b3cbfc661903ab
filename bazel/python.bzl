"""Python rules of the monolith-tf Bazel build.

Bazel 4.2.3's Python rules are native, and this offline build has no
`rules_python`, so BUILD files load them from here. To move to rules_python,
forward these three to `@rules_python//python:defs.bzl`.

Python tests run under pytest, like CI's `python -m pytest`: each
`tests/**/test_*.py` becomes one `py_test` whose main is
`//bazel:pytest_main.py` (see `pytest_tests`).

Everything runs with the `python3` on PATH (Bazel's autodetecting Python
toolchain), so TensorFlow, protobuf, absl-py and pytest come from the
virtualenv that is active when `bazel test` starts.
"""

def py_library(**kwargs):
    # buildifier: disable=native-py
    native.py_library(**kwargs)

def py_binary(**kwargs):
    # buildifier: disable=native-py
    native.py_binary(**kwargs)

def py_test(**kwargs):
    # buildifier: disable=native-py
    native.py_test(**kwargs)

_PYTEST_MAIN = "//bazel:pytest_main.py"

def pytest_tests(
        name,
        srcs,
        deps = [],
        data = [],
        size = "medium",
        slow = [],
        **kwargs):
    """One pytest-driven `py_test` per file of `srcs`, and a test_suite of them.

    Each test is named after its file (`test_protos.py` -> `:test_protos`).
    Fails if a subdirectory holds `test_*.py` files but no BUILD.bazel of its
    own, since Bazel would silently not run them.

    Args:
      name: name of the test_suite of all the tests.
      srcs: the test files, usually `glob(["test_*.py"])`.
      deps: py_library targets the tests import.
      data: data files the tests read.
      size: Bazel test size of each test.
      slow: files of `srcs` whose tests take tens of seconds (clusters,
        subprocesses, whole demo runs); their tests get the tag "slow", so
        `bazel test //... --test_tag_filters=-slow` (CI) skips them.
      **kwargs: passed to every py_test (tags, timeout, ...).
    """
    for src in slow:
        if src not in srcs:
            fail("pytest_tests: slow file {} is not in srcs".format(src))
    orphans = native.glob(["*/**/test_*.py"])
    if orphans:
        fail(("{} are in directories without a BUILD.bazel, so Bazel would " +
              "not run them: add one calling pytest_package() there, like " +
              "tests/native_training/BUILD.bazel.").format(
            [native.package_name() + "/" + orphan for orphan in orphans],
        ))
    tags = kwargs.pop("tags", [])
    tests = []
    for src in srcs:
        if not src.endswith(".py"):
            fail("pytest_tests: {} is not a .py file".format(src))
        test_name = src[:-len(".py")]
        py_test(
            name = test_name,
            srcs = [src, _PYTEST_MAIN],
            main = _PYTEST_MAIN,
            args = ["$(rootpath {})".format(src)],
            data = data + ["//:pyproject.toml"],
            python_version = "PY3",
            size = size,
            deps = deps,
            tags = tags + (["slow"] if src in slow else []),
            **kwargs
        )
        tests.append(test_name)
    native.test_suite(
        name = name,
        tests = tests,
    )

def pytest_package(parent, data = [], size = "medium", slow = [], **kwargs):
    """The BUILD content of a test directory below `tests/`.

    Defines `:package` (its `__init__.py`, conftest and helper modules, on top
    of `parent`) and, through `pytest_tests`, one py_test per `test_*.py`
    plus the `:tests` suite. Every test sees `//tests:data` and the package.

    Args:
      parent: the `:package` library of the enclosing test directory.
      data: extra data files the tests read.
      size: Bazel test size of each test.
      slow: test files tagged "slow" (see `pytest_tests`).
      **kwargs: passed to every py_test.
    """
    py_library(
        name = "package",
        srcs = native.glob(
            ["*.py"],
            exclude = ["test_*.py"],
        ),
        visibility = ["//tests:__subpackages__"],
        deps = [parent],
    )
    pytest_tests(
        name = "tests",
        srcs = native.glob(["test_*.py"]),
        data = data + ["//tests:data"],
        size = size,
        slow = slow,
        deps = [
            ":package",
            "//:monolith_tf",
        ],
        **kwargs
    )
