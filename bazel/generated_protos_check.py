"""Checks that Bazel tests import the `_pb2` modules that Bazel generated.

`pip install -e .` leaves `*_pb2.py` files in the source tree (git-ignored);
under `bazel test` the imports must resolve to the ones generated from
`//protos` by `py_proto_gen`, with monolith's descriptor-pool paths.
"""

import os
import unittest

from monolith.native_training.runtime.hash_table import embedding_hash_table_pb2
from monolith.native_training.runtime.hash_table.compressor import float_compressor_pb2
from monolith.native_training.runtime.hash_table.initializer import initializer_config_pb2
from monolith.native_training.runtime.hash_table.optimizer import optimizer_pb2

_ROOT = "monolith/native_training/runtime/hash_table/"


class GeneratedProtosTest(unittest.TestCase):

  def test_modules_are_bazel_outputs(self):
    for module, proto in (
        (embedding_hash_table_pb2, "embedding_hash_table.proto"),
        (float_compressor_pb2, "compressor/float_compressor.proto"),
        (initializer_config_pb2, "initializer/initializer_config.proto"),
        (optimizer_pb2, "optimizer/optimizer.proto"),
    ):
      with self.subTest(module=module.__name__):
        real = os.path.realpath(module.__file__)
        self.assertIn("/bazel-out/", real)
        self.assertTrue(real.endswith("/bin/" + _ROOT + proto[:-6] + "_pb2.py"),
                        real)
        self.assertEqual(module.DESCRIPTOR.name, _ROOT + proto)

  def test_public_import_reexports(self):
    config = embedding_hash_table_pb2.EmbeddingHashTableConfig()
    self.assertIsInstance(config,
                          embedding_hash_table_pb2.EmbeddingHashTableConfig)
    self.assertIs(embedding_hash_table_pb2.OptimizerConfig,
                  optimizer_pb2.OptimizerConfig)


if __name__ == "__main__":
  unittest.main()
