"""Wire-contract tests of the generated `monolith.hash_table` protos.

The installed descriptors are compared, type by type and field by field, with
`tests/data/hash_table_schema.json` (a copy of the wire contract kept in the
project), so any change of a number, type, label, default, oneof or file path
fails here. Round trips of a fully populated config check the generated code.
"""

import json
import math
import os

from absl.testing import absltest
from absl.testing import parameterized
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import text_format
import numpy as np

from monolith.native_training.runtime.hash_table import embedding_hash_table_pb2
from monolith.native_training.runtime.hash_table.compressor import float_compressor_pb2
from monolith.native_training.runtime.hash_table.initializer import initializer_config_pb2
from monolith.native_training.runtime.hash_table.optimizer import optimizer_pb2

_SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                            "hash_table_schema.json")

_FILES = {
    module.DESCRIPTOR.name: module.DESCRIPTOR
    for module in (embedding_hash_table_pb2, float_compressor_pb2,
                   initializer_config_pb2, optimizer_pb2)
}

_TYPE_NAMES = {
    value: name[len("TYPE_"):].lower()
    for name, value in descriptor_pb2.FieldDescriptorProto.Type.items()
}
_LABEL_NAMES = {
    value: name[len("LABEL_"):].lower()
    for name, value in descriptor_pb2.FieldDescriptorProto.Label.items()
}


def _load_schema():
  with open(_SCHEMA_PATH) as f:
    return json.load(f)


def _file_proto(file_descriptor):
  proto = descriptor_pb2.FileDescriptorProto()
  file_descriptor.CopyToProto(proto)
  return proto


def _collect_types(file_proto):
  """Returns {full type name: (kind, DescriptorProto/EnumDescriptorProto)}."""
  found = {}

  def visit_enum(prefix, enum):
    found[f"{prefix}.{enum.name}"] = ("enum", enum)

  def visit_message(prefix, message):
    name = f"{prefix}.{message.name}"
    found[name] = ("message", message)
    for nested in message.nested_type:
      visit_message(name, nested)
    for enum in message.enum_type:
      visit_enum(name, enum)

  for message in file_proto.message_type:
    visit_message(file_proto.package, message)
  for enum in file_proto.enum_type:
    visit_enum(file_proto.package, enum)
  return found


def _canonical_default(type_name, text):
  """Returns the shortest text of a float/double default at its precision.

  protoc records float defaults with 9 significant digits ("0.00999999978"),
  the contract with the shortest text that round-trips ("0.01"); both denote
  the same float32, so floats are compared at their own precision.
  """
  if type_name == "float":
    return np.format_float_positional(np.float32(text), trim="-")
  if type_name == "double":
    return np.format_float_positional(np.float64(text), trim="-")
  return text


def _expected_type(schema_type):
  """Returns a schema type entry in the vocabulary of `_describe_installed`."""
  expected = json.loads(json.dumps(schema_type))
  if "enum" not in expected:
    expected.setdefault("fields", {})
  for field in expected.get("fields", {}).values():
    if "default" in field:
      field["default"] = _canonical_default(field["type"], field["default"])
  return expected


def _describe_field(message_proto, field):
  """Renders one FieldDescriptorProto in the schema's JSON vocabulary."""
  described = {
      "label": _LABEL_NAMES[field.label],
      "number": field.number,
      "type": _TYPE_NAMES[field.type],
  }
  if field.HasField("default_value"):
    described["default"] = _canonical_default(described["type"],
                                              field.default_value)
  if field.type_name:
    described["type_name"] = field.type_name.lstrip(".")
  if field.HasField("oneof_index"):
    described["oneof"] = message_proto.oneof_decl[field.oneof_index].name
  return described


def _describe_installed():
  """Renders the installed descriptors like the schema's "types" section."""
  types = {}
  for file_name, file_descriptor in _FILES.items():
    for name, (kind,
               proto) in _collect_types(_file_proto(file_descriptor)).items():
      entry = {"file": file_name}
      if kind == "enum":
        entry["enum"] = {value.name: value.number for value in proto.value}
      else:
        entry["fields"] = {
            field.name: _describe_field(proto, field) for field in proto.field
        }
      types[name] = entry
  return types


class SchemaTest(parameterized.TestCase):
  """Installed descriptors equal the wire contract exactly."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.schema = _load_schema()
    cls.installed = _describe_installed()

  def test_schema_copy_has_all_57_types(self):
    self.assertLen(self.schema["types"], 57)

  def test_same_type_names(self):
    self.assertCountEqual(self.schema["types"].keys(), self.installed.keys())

  def test_every_type_equals_schema(self):
    for name, expected in self.schema["types"].items():
      with self.subTest(type=name):
        self.assertIn(name, self.installed)
        self.assertEqual(_expected_type(expected), self.installed[name])

  def test_files_equal_schema(self):
    self.assertCountEqual(self.schema["files"].keys(), _FILES.keys())
    for file_name, expected in self.schema["files"].items():
      with self.subTest(file=file_name):
        proto = _file_proto(_FILES[file_name])
        public = [proto.dependency[i] for i in proto.public_dependency]
        self.assertEqual(expected["package"], proto.package)
        self.assertEqual(expected["syntax"], proto.syntax or "proto2")
        self.assertEqual(expected["dependencies"], list(proto.dependency))
        self.assertEqual(expected["public_dependencies"], public)

  def test_registered_in_default_pool_under_schema_paths(self):
    default_pool = descriptor_pool.Default()
    for file_name in self.schema["files"]:
      with self.subTest(file=file_name):
        self.assertEqual(file_name, default_pool.FindFileByName(file_name).name)
    for name, expected in self.schema["types"].items():
      with self.subTest(type=name):
        if "enum" in expected:
          found = default_pool.FindEnumTypeByName(name)
        else:
          found = default_pool.FindMessageTypeByName(name)
        self.assertEqual(expected["file"], found.file.name)

  def test_public_import_reexports_component_messages(self):
    self.assertIs(embedding_hash_table_pb2.OptimizerConfig,
                  optimizer_pb2.OptimizerConfig)
    self.assertIs(embedding_hash_table_pb2.InitializerConfig,
                  initializer_config_pb2.InitializerConfig)
    self.assertIs(embedding_hash_table_pb2.FloatCompressorConfig,
                  float_compressor_pb2.FloatCompressorConfig)

  @parameterized.named_parameters(
      ("number", "number", 99),
      ("default", "default", "0.5"),
      ("type", "type", "double"),
      ("oneof", "oneof", None),
  )
  def test_comparison_detects_a_single_divergence(self, key, value):
    # Guards the comparison itself: a one-field change must be visible.
    name = "monolith.hash_table.AdamOptimizerConfig"
    field = "beta1" if key != "oneof" else None
    mutated = json.loads(json.dumps(self.schema["types"]))
    if key == "oneof":
      mutated["monolith.hash_table.OptimizerConfig"]["fields"]["adam"].pop(
          "oneof")
      name = "monolith.hash_table.OptimizerConfig"
    else:
      mutated[name]["fields"][field][key] = value
    self.assertEqual(_expected_type(self.schema["types"][name]),
                     self.installed[name])
    self.assertNotEqual(_expected_type(mutated[name]), self.installed[name])


def _fully_populated_config():
  """Returns an EmbeddingHashTableConfig with every config field set."""
  cfg = embedding_hash_table_pb2.EmbeddingHashTableConfig()
  cfg.initial_capacity = 1 << 40
  cfg.cuckoo.SetInParent()
  cfg.entry_type = cfg.RAW
  cfg.enable_feature_eviction = True
  cfg.feature_evict_every_n_hours = 72
  cfg.skip_zero_embedding = True
  expire = cfg.slot_expire_time_config
  expire.default_expire_time = 30
  expire.slot_expire_times.add(slot=7, expire_time=3)
  entry = cfg.entry_config
  entry.entry_type = entry.SERVING
  oneof_names = {
      "opt_config": [
          f.name for f in
          optimizer_pb2.OptimizerConfig.DESCRIPTOR.oneofs_by_name["type"].fields
      ],
      "init_config": [
          f.name for f in initializer_config_pb2.InitializerConfig.DESCRIPTOR.
          oneofs_by_name["type"].fields
      ],
      "comp_config": [
          f.name for f in float_compressor_pb2.FloatCompressorConfig.DESCRIPTOR.
          oneofs_by_name["type"].fields
      ],
  }
  count = max(len(names) for names in oneof_names.values())
  for i in range(count):
    segment = entry.segments.add(dim_size=i + 1)
    for slot, names in oneof_names.items():
      member = getattr(getattr(segment, slot), names[i % len(names)])
      member.SetInParent()
      for field in member.DESCRIPTOR.fields:
        if field.name == "dim_size":
          setattr(member, field.name, i + 1)
        elif field.type == field.TYPE_FLOAT:
          setattr(member, field.name, 0.25 + i)
        elif field.type == field.TYPE_BOOL:
          setattr(member, field.name, True)
        else:
          setattr(member, field.name, 3 + i)
    segment.opt_config.stochastic_rounding_float16 = bool(i % 2)
  return cfg


class RoundTripTest(parameterized.TestCase):
  """Binary and text round trips of a fully populated config."""

  def test_populated_config_sets_every_oneof_member(self):
    cfg = _fully_populated_config()
    used = {
        segment.opt_config.WhichOneof("type")
        for segment in cfg.entry_config.segments
    }
    self.assertLen(used, 15)
    self.assertTrue(math.isclose(cfg.entry_config.segments[1].dim_size, 2))

  def test_binary_round_trip(self):
    cfg = _fully_populated_config()
    data = cfg.SerializeToString()
    parsed = embedding_hash_table_pb2.EmbeddingHashTableConfig.FromString(data)
    self.assertEqual(cfg, parsed)
    self.assertEqual(data, parsed.SerializeToString())

  def test_text_round_trip(self):
    cfg = _fully_populated_config()
    text = text_format.MessageToString(cfg)
    parsed = text_format.Parse(
        text, embedding_hash_table_pb2.EmbeddingHashTableConfig())
    self.assertEqual(cfg, parsed)
    self.assertIn("cuckoo {", text)
    self.assertIn("entry_type: SERVING", text)

  def test_defaults_match_schema(self):
    cfg = embedding_hash_table_pb2.EmbeddingHashTableConfig()
    self.assertEqual(1, cfg.initial_capacity)
    self.assertEqual(240, cfg.feature_evict_every_n_hours)
    self.assertEqual(cfg.PACKED, cfg.entry_type)
    self.assertEqual(cfg.entry_config.TRAINING, cfg.entry_config.entry_type)
    self.assertAlmostEqual(0.99,
                           optimizer_pb2.AdamOptimizerConfig().beta2,
                           places=6)
    self.assertEqual(b"", cfg.SerializeToString())


if __name__ == "__main__":
  absltest.main()
