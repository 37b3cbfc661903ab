#!/usr/bin/env bash
# Packaging check of monolith-tf (run by .ci/run; about 2 minutes):
#
#   1. `python -m build`: the sdist, then the wheel built from the unpacked
#      sdist (so an sdist without the .proto files fails here).
#   2. Installs the sdist and the wheel, each into a fresh virtualenv, with a
#      plain `pip install <file>[cpu]` (dependencies resolved, tensorflow-cpu
#      from the extra; pip's cache is reused), both at once.
#   3. sdist: from outside the checkout, imports monolith.native_training.
#      entry from the virtualenv, builds and serializes a table config and
#      evaluates its learning rates.
#   4. wheel: runs part of the test suite, from the checkout's tests/, against
#      the installed wheel, from outside the checkout (pytest's
#      --import-mode=importlib keeps the checkout off sys.path; the
#      "monolith:" header line pytest prints must name the wheel's
#      virtualenv).
#
# Usage: bash .ci/packaging.sh. Needs python3 with venv; writes only to a
# temporary directory (and monolith_tf.egg-info, which `build` refreshes).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
export PIP_DISABLE_PIP_VERSION_CHECK=1
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

echo "::: packaging: python -m build (sdist, then the wheel from the sdist)"
python3 -m venv "${work}/build-venv"
"${work}/build-venv/bin/pip" install -q build
if ! "${work}/build-venv/bin/python" -m build --outdir "${work}/dist" . \
  >"${work}/build.log" 2>&1; then
  cat "${work}/build.log"
  exit 1
fi
sdist="$(echo "${work}"/dist/*.tar.gz)"
wheel="$(echo "${work}"/dist/*.whl)"
ls -l "${sdist}" "${wheel}"

smoke_test='
import sys

import monolith
from monolith.native_training import entry
from monolith.native_training import learning_rate_functions
from monolith.native_training.runtime.hash_table import embedding_hash_table_pb2

venv = sys.argv[1]
if not monolith.__file__.startswith(venv + "/"):
  sys.exit(f"imported {monolith.__file__}, not the package in {venv}")
table = entry.build_embedding_hash_table_config([
    entry.CombineAsSegment(8, entry.RandomUniformInitializer(-0.1, 0.1),
                           entry.AdagradOptimizer(0.05), entry.Fp16Compressor())
], entry.CuckooHashTableConfig(1 << 20, 24))
data = table.SerializeToString()
assert embedding_hash_table_pb2.EmbeddingHashTableConfig.FromString(
    data) == table
assert entry.config_from_pbtxt(entry.config_to_pbtxt(table)) == table
assert embedding_hash_table_pb2.DESCRIPTOR.name == (
    "monolith/native_training/runtime/hash_table/embedding_hash_table.proto")
instance = entry.HashTableConfigInstance(
    table, [learning_rate_functions.PolynomialDecay(0.05, 100)])
rates = instance.call_learning_rate_fns().numpy()
print(f"monolith-tf {monolith.__version__} from {monolith.__file__}: "
      f"{len(data)}-byte table config, learning rates {rates}")
'

install() { # venv name, file, extra pip arguments...
  local venv="${work}/$1-venv" file="$2"
  shift 2
  python3 -m venv "${venv}"
  "${venv}/bin/pip" install -q --no-compile "${file}[cpu]" "$@"
}

echo "::: packaging: pip install $(basename "${sdist}")[cpu] and" \
  "$(basename "${wheel}")[cpu] pytest, each into a fresh virtualenv"
install sdist "${sdist}" >"${work}/sdist-install.log" 2>&1 &
sdist_install=$!
install wheel "${wheel}" "pytest>=7"
if ! wait "${sdist_install}"; then
  cat "${work}/sdist-install.log"
  exit 1
fi

echo "::: packaging: sdist: import entry and serialize a config"
(cd "${work}" && TF_CPP_MIN_LOG_LEVEL=2 "${work}/sdist-venv/bin/python" -c \
  "${smoke_test}" "${work}/sdist-venv")

echo "::: packaging: wheel: tests against it, run from outside the checkout"
(cd "${work}" && PYTHONDONTWRITEBYTECODE=1 "${work}/wheel-venv/bin/python" \
  -m pytest "${root}/tests/test_protos.py" \
  "${root}/tests/native_training/test_entry.py" \
  "${root}/tests/native_training/test_learning_rate_functions.py") 2>&1 |
  tee "${work}/pytest.log"
if ! grep -q "^monolith: ${work}/wheel-venv/lib/.*/site-packages/monolith/" \
  "${work}/pytest.log"; then
  echo "pytest did not import monolith from the wheel's virtualenv" >&2
  exit 1
fi
echo "::: packaging passed (${SECONDS} s)"
