"""External repositories of the monolith-tf Bazel build, offline on Debian.

Bazel 4.2.3 (Debian's `bazel-bootstrap`, WORKSPACE mode) downloads
`rules_cc`, `rules_java` and `rules_proto` from GitHub the first time a build
needs them. `monolith_tf_repositories()` defines those three repositories
first, so the downloads in Bazel's built-in WORKSPACE suffix never run:

* each one links a copy that Debian installs (`bazel-bootstrap-source` ships
  `rules_cc`, `rules_java` and `rules_proto` under
  /usr/src/bazel-bootstrap/mock_repos; `bazel-rules-java` and
  `bazel-rules-proto` ship fuller `rules_java` and `rules_proto`), and only
  where no Debian copy is installed falls back to the very archive (same URLs
  and SHA-256) that Bazel 4.2.3 would have downloaded;
* `@com_google_protobuf//:protoc`, the compiler `proto_library` runs, wraps
  grpcio-tools' protoc (`python -m grpc_tools.protoc`), the same compiler
  that `setup.py` uses, so Bazel and pip generate the same `_pb2` modules.

The Python interpreter that provides `grpc_tools` is, in this order:
`$MONOLITH_PROTOC_PYTHON` if set; else `python3` on PATH if it can import
`grpc_tools`; else `$HOME/.cache/monolith-tf/protoc-venv/bin/python`, the
virtualenv that `.ci/bazel.sh` creates.
"""

load("@bazel_tools//tools/build_defs/repo:utils.bzl", "maybe")

_DEBIAN_MOCK_REPOS = "/usr/src/bazel-bootstrap/mock_repos"
_DEBIAN_RULES = "/usr/share/bazel/rules"

def _debian_or_http_repository_impl(rctx):
    for candidate in rctx.attr.local_paths:
        path = rctx.path(candidate)
        if path.exists:
            for child in path.readdir():
                rctx.symlink(child, child.basename)
            return
    if not rctx.attr.urls:
        fail("None of {} exists; install Debian's bazel-bootstrap-source.".format(
            rctx.attr.local_paths,
        ))
    rctx.download_and_extract(
        url = rctx.attr.urls,
        sha256 = rctx.attr.sha256,
        stripPrefix = rctx.attr.strip_prefix,
    )

debian_or_http_repository = repository_rule(
    implementation = _debian_or_http_repository_impl,
    doc = "Links the first existing directory of `local_paths`, else downloads `urls`.",
    attrs = {
        "local_paths": attr.string_list(
            doc = "Absolute paths of installed copies, tried in order.",
        ),
        "sha256": attr.string(doc = "SHA-256 of the archive at `urls`."),
        "strip_prefix": attr.string(doc = "Directory prefix to strip from the archive."),
        "urls": attr.string_list(doc = "Fallback archive, used only without a local copy."),
    },
)

_PROTOC_VENV = ".cache/monolith-tf/protoc-venv/bin/python"

_PROTOC_HINT = """\
proto_library needs grpcio-tools' protoc. Create a virtualenv for it (it
cannot live in TensorFlow's virtualenv: grpcio-tools 1.62 pins protobuf < 5):

  python3 -m venv ~/.cache/monolith-tf/protoc-venv
  ~/.cache/monolith-tf/protoc-venv/bin/pip install \\
      "grpcio-tools>=1.62.0,<1.63; python_version < '3.13'" \\
      "grpcio-tools>=1.66.0,<1.67; python_version >= '3.13'"

or point MONOLITH_PROTOC_PYTHON at a python that can import grpc_tools.
(bash .ci/bazel.sh does all of this.)"""

def _grpc_tools_protoc_repository_impl(rctx):
    explicit = rctx.os.environ.get("MONOLITH_PROTOC_PYTHON", "")
    candidates = []
    if explicit:
        candidates.append(explicit)
    else:
        python3 = rctx.which("python3")
        if python3:
            candidates.append(str(python3))
        home = rctx.os.environ.get("HOME", "")
        if home:
            candidates.append(home + "/" + _PROTOC_VENV)

    python = None
    version = None
    for candidate in candidates:
        if not rctx.path(candidate).exists:
            continue
        result = rctx.execute([
            candidate,
            "-c",
            "import grpc_tools.protoc, importlib.metadata as m; " +
            "print(m.version('grpcio-tools'))",
        ])
        if result.return_code == 0:
            python = candidate
            version = result.stdout.strip()
            break
    if not python:
        fail("No python that can import grpc_tools among {}.\n{}".format(
            candidates,
            _PROTOC_HINT,
        ))

    rctx.file(
        "protoc.sh",
        content = """#!/bin/sh
# grpcio-tools {version}'s protoc, found by //bazel:repositories.bzl.
exec '{python}' -m grpc_tools.protoc "$@"
""".format(python = python, version = version),
        executable = True,
    )
    rctx.file(
        "BUILD.bazel",
        content = """sh_binary(
    name = "protoc",
    srcs = ["protoc.sh"],
    visibility = ["//visibility:public"],
)
""",
    )

grpc_tools_protoc_repository = repository_rule(
    implementation = _grpc_tools_protoc_repository_impl,
    doc = "Defines `:protoc` as a wrapper of `python -m grpc_tools.protoc`.",
    environ = ["HOME", "MONOLITH_PROTOC_PYTHON", "PATH"],
    local = True,
)

def monolith_tf_repositories():
    """Defines the external repositories; call it first in WORKSPACE."""

    # URLs and SHA-256 of Bazel 4.2.3's DEFAULT.WORKSPACE.SUFFIX.
    maybe(
        debian_or_http_repository,
        name = "rules_cc",
        # Only the mock works with Bazel 4.2.3: Debian's bazel-rules-cc 0.0.4
        # needs a newer @bazel_tools.
        local_paths = [_DEBIAN_MOCK_REPOS + "/rules_cc"],
        sha256 = "d0c573b94a6ef20ef6ff20154a23d0efcb409fb0e1ff0979cec318dfe42f0cdd",
        strip_prefix = "rules_cc-b1c40e1de81913a3c40e5948f78719c28152486d",
        urls = [
            "https://mirror.bazel.build/github.com/bazelbuild/rules_cc/archive/b1c40e1de81913a3c40e5948f78719c28152486d.zip",
            "https://github.com/bazelbuild/rules_cc/archive/b1c40e1de81913a3c40e5948f78719c28152486d.zip",
        ],
    )
    maybe(
        debian_or_http_repository,
        name = "rules_java",
        local_paths = [
            _DEBIAN_RULES + "/java",
            _DEBIAN_MOCK_REPOS + "/rules_java",
        ],
        sha256 = "bc81f1ba47ef5cc68ad32225c3d0e70b8c6f6077663835438da8d5733f917598",
        strip_prefix = "rules_java-7cf3cefd652008d0a64a419c34c13bdca6c8f178",
        urls = [
            "https://mirror.bazel.build/github.com/bazelbuild/rules_java/archive/7cf3cefd652008d0a64a419c34c13bdca6c8f178.zip",
            "https://github.com/bazelbuild/rules_java/archive/7cf3cefd652008d0a64a419c34c13bdca6c8f178.zip",
        ],
    )
    maybe(
        debian_or_http_repository,
        name = "rules_proto",
        local_paths = [
            _DEBIAN_RULES + "/proto",
            _DEBIAN_MOCK_REPOS + "/rules_proto",
        ],
        sha256 = "8e7d59a5b12b233be5652e3d29f42fba01c7cbab09f6b3a8d0a57ed6d1e9a0da",
        strip_prefix = "rules_proto-7e4afce6fe62dbff0a4a03450143146f9f2d7488",
        urls = [
            "https://mirror.bazel.build/github.com/bazelbuild/rules_proto/archive/7e4afce6fe62dbff0a4a03450143146f9f2d7488.tar.gz",
            "https://github.com/bazelbuild/rules_proto/archive/7e4afce6fe62dbff0a4a03450143146f9f2d7488.tar.gz",
        ],
    )
    maybe(
        grpc_tools_protoc_repository,
        name = "com_google_protobuf",
    )
