#!/usr/bin/env bash
# Offline Bazel build and tests of monolith-tf: `bazel test //...` with
# Debian's Bazel 4.2.3, no network but the apt / PyPI / npm registries.
#
# Usage: bash .ci/bazel.sh [extra `bazel test` flags, e.g. --local_test_jobs=1]
#
# Run it as root (or a user with sudo, for apt-get) with the virtualenv that
# has tensorflow-cpu, protobuf, absl-py and pytest activated, e.g. CI's
# `.venv` after `pip install -e ".[cpu,test]"`: Bazel's py_test runs the
# `python3` on PATH, so tests import TensorFlow from there. It
#   1. apt-get installs Bazel 4.2.3 and Debian's copies of rules_cc,
#      rules_java and rules_proto, which WORKSPACE links instead of
#      downloading them (bazel/repositories.bzl);
#   2. creates a separate virtualenv with grpcio-tools (~/.cache/monolith-tf/
#      protoc-venv, or $MONOLITH_PROTOC_VENV) for proto_library's protoc:
#      grpcio-tools 1.62 pins protobuf < 5, which can't share a virtualenv
#      with TensorFlow 2.21 (protobuf >= 6.31.1);
#   3. checks the BUILD / .bzl files with buildifier (npm @bazel/buildifier);
#   4. runs `bazel test //...` (flags in .bazelrc), then stops the Bazel server.
set -euo pipefail
cd "$(dirname "$0")/.."
# Bazel keeps its output base and the protoc virtualenv under $HOME.
HOME="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME

BUILDIFIER_VERSION=8.2.1

echo "::: bazel: apt packages"
packages=(bazel-bootstrap bazel-bootstrap-source bazel-rules-java
  bazel-rules-proto)
missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "${package}" 2>/dev/null |
    grep -q "install ok installed"; then
    missing+=("${package}")
  fi
done
if ((${#missing[@]})); then
  sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
fi
bazel_bin="$(command -v bazel)"
echo "bazel: ${bazel_bin} (Debian bazel-bootstrap" \
  "$(dpkg-query -W -f='${Version}' bazel-bootstrap))"

echo "::: bazel: python3 on PATH runs the tests"
python3 - <<'EOF'
import importlib.util
import sys

missing = [m for m in ("tensorflow", "google.protobuf", "absl", "pytest")
           if importlib.util.find_spec(m) is None]
print(f"python3: {sys.executable} ({sys.version.split()[0]})")
if missing:
  sys.exit(f"{sys.executable} lacks {missing}: activate the virtualenv with "
           "TensorFlow and the test extras first, e.g. "
           "`python3 -m venv .venv && . .venv/bin/activate && "
           "pip install -e '.[cpu,test]'`.")
EOF

echo "::: bazel: grpcio-tools virtualenv for protoc"
protoc_venv="${MONOLITH_PROTOC_VENV:-${HOME}/.cache/monolith-tf/protoc-venv}"
if ! "${protoc_venv}/bin/python" -c "import grpc_tools.protoc" 2>/dev/null; then
  rm -rf "${protoc_venv}"
  python3 -m venv "${protoc_venv}"
  # The pins of pyproject.toml's build requirements, so Bazel generates the
  # same _pb2 modules as `pip install`.
  "${protoc_venv}/bin/python" -m pip install -q --disable-pip-version-check \
    "grpcio-tools>=1.62.0,<1.63; python_version < '3.13'" \
    "grpcio-tools>=1.66.0,<1.67; python_version >= '3.13'"
fi
export MONOLITH_PROTOC_PYTHON="${protoc_venv}/bin/python"
"${MONOLITH_PROTOC_PYTHON}" -c \
  "import importlib.metadata as m; print('grpcio-tools', m.version('grpcio-tools'))"

echo "::: bazel: buildifier ${BUILDIFIER_VERSION}"
if command -v npm >/dev/null; then
  buildifier_dir="$(mktemp -d)"
  npm install --silent --no-audit --no-fund --prefix "${buildifier_dir}" \
    "@bazel/buildifier@${BUILDIFIER_VERSION}" >/dev/null
  # Every Starlark file of the project (git-ignored ones, e.g. in .venv, not).
  mapfile -t starlark_files < <(git ls-files --cached --others \
    --exclude-standard -- WORKSPACE '*.bazel' '*.bzl' '*/BUILD' BUILD)
  if ((${#starlark_files[@]} == 0)); then
    echo "No BUILD / .bzl files found: run this from a git checkout." >&2
    exit 1
  fi
  "${buildifier_dir}/node_modules/.bin/buildifier" -mode=check -lint=warn \
    "${starlark_files[@]}"
  rm -rf "${buildifier_dir}"
  echo "buildifier: ${#starlark_files[@]} files clean"
else
  echo "WARNING: npm not found, buildifier check skipped (needs Node.js)."
fi

echo "::: bazel test //..."
trap '"${bazel_bin}" shutdown' EXIT
"${bazel_bin}" test //... --show_progress_rate_limit=30 "$@"
