"""Build script of monolith-tf.

The four `monolith.hash_table` protos in `protos/` are compiled into
`monolith/native_training/runtime/hash_table/**/*_pb2.py` by grpcio-tools'
protoc on every build (`pip install .` and `pip install -e .`); the generated
files are never committed. A missing or broken protoc stops the build with a
message saying what to install, so no package without its protos is produced.
"""

import os
import subprocess
import sys

import setuptools
from setuptools.command.build_py import build_py

_HERE = os.path.dirname(os.path.abspath(__file__))
_PROTO_ROOT = os.path.join(_HERE, "protos")
_GRPC_TOOLS_HINT = ("pip install 'grpcio-tools>=1.62.0,<1.63' (Python < 3.13) "
                    "or 'grpcio-tools>=1.66.0,<1.67' (Python >= 3.13)")


def _read_version_file():
  """Returns the globals of monolith/version.py without importing monolith."""
  scope = {}
  with open(os.path.join(_HERE, "monolith", "version.py")) as f:
    exec(f.read(), scope)  # pylint: disable=exec-used
  return scope


def _proto_files():
  protos = []
  for root, _, files in os.walk(_PROTO_ROOT):
    protos.extend(
        os.path.relpath(os.path.join(root, name), _PROTO_ROOT)
        for name in files
        if name.endswith(".proto"))
  return sorted(protos)


def generate_protos(out_dir=_HERE):
  """Compiles protos/ into *_pb2.py modules under `out_dir`.

  Raises:
    SystemExit: grpcio-tools is missing, or protoc failed.
  """
  try:
    from grpc_tools import protoc  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise SystemExit(
        "monolith-tf: generating the hash-table protos needs grpcio-tools, "
        f"which could not be imported ({e}). Install it: {_GRPC_TOOLS_HINT}"
    ) from e
  protos = _proto_files()
  if not protos:
    raise SystemExit(f"monolith-tf: no .proto files found under {_PROTO_ROOT}")
  include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
  args = [
      "grpc_tools.protoc", f"-I{_PROTO_ROOT}", f"-I{include}",
      f"--python_out={out_dir}"
  ] + protos
  cwd = os.getcwd()
  try:
    os.chdir(_PROTO_ROOT)
    status = protoc.main(args)
  finally:
    os.chdir(cwd)
  if status != 0:
    raise SystemExit(
        f"monolith-tf: protoc failed (exit {status}) on {protos}. Check the "
        f"installed grpcio-tools ({_GRPC_TOOLS_HINT}).")
  for proto in protos:
    generated = os.path.join(out_dir, proto[:-len(".proto")] + "_pb2.py")
    if not os.path.isfile(generated):
      raise SystemExit(f"monolith-tf: protoc did not produce {generated}")


class BuildPyWithProtos(build_py):
  """build_py that first generates the *_pb2.py modules in the source tree."""

  def run(self):
    generate_protos()
    super().run()


_VERSION = _read_version_file()
_TF_RANGE = f">={_VERSION['MIN_TF_VERSION']},<{_VERSION['MAX_TF_VERSION']}"

with open(os.path.join(_HERE, "README.md"), encoding="utf-8") as readme:
  _LONG_DESCRIPTION = readme.read()

setuptools.setup(
    name="monolith-tf",
    version=_VERSION["__version__"],
    description=("monolith's embedding combiners and hash-table configs "
                 "as a pure-Python TensorFlow extension"),
    long_description=_LONG_DESCRIPTION,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=setuptools.find_packages(include=["monolith", "monolith.*"]),
    cmdclass={"build_py": BuildPyWithProtos},
    # TensorFlow is not a hard requirement: users bring `tensorflow`,
    # `tensorflow-cpu` or a vendor build; the extras install one for them.
    install_requires=[
        "numpy>=1.23",
        "protobuf>=4.25.0,<8; python_version < '3.13'",
        "protobuf>=5.28.0,<8; python_version >= '3.13'",
    ],
    extras_require={
        "cpu": [f"tensorflow-cpu{_TF_RANGE}"],
        "gpu": [f"tensorflow[and-cuda]{_TF_RANGE}"],
        "test": [
            "pytest>=7", "pytest-xdist>=3", "absl-py>=1.0", "yapf==0.43.0",
            "matplotlib>=3.5"
        ],
        "plot": ["matplotlib>=3.5"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
