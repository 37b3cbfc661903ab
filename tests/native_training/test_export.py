"""Tests of `export` and `hash_table_serving`: SavedModels served by plain TF.

The SERVING encodings are checked against NumPy references written from
HASH_TABLE_SPEC Part B section 4; exported models are reloaded in a fresh
process in which `import monolith` fails.
"""

import json
import os
import subprocess
import sys
import textwrap

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from monolith.native_training import embedding_combiners
from monolith.native_training import entry
from monolith.native_training import export
from monolith.native_training import hash_table_ops
from monolith.native_training import hash_table_serving

_COMPRESSORS = {
    "fp32": entry.Fp32Compressor,
    "fp16": entry.Fp16Compressor,
    "fixed_r8": lambda: entry.FixedR8Compressor(0.5),
    "one_bit": lambda: entry.OneBitCompressor(amplitude=0.05),
}
_RAGGED = tf.RaggedTensorSpec([None, None], tf.int64, 1)


def _config(comps, dims, expire_time=None):
  segments = [
      entry.CombineAsSegment(d, entry.RandomUniformInitializer(-0.5, 0.5),
                             entry.AdagradOptimizer(), _COMPRESSORS[c]())
      for c, d in zip(comps, dims)
  ]
  config = entry.build_embedding_hash_table_config(
      segments, entry.CuckooHashTableConfig())
  if expire_time is not None:
    config.slot_expire_time_config.default_expire_time = expire_time
  return entry.HashTableConfigInstance(config, [0.1] * len(dims))


def _np_fixed_r8(w, r):
  """Spec B.4.3: round half away from zero on the r/128 grid, clamp."""
  step = np.float32(r) / np.float32(128)
  t = np.where(w >= 0, w + step / 2, w - step / 2)
  q = np.clip(np.trunc(t / step), -128, 127)
  return (q * step).astype(np.float32)


def _np_serving(comp, w):
  """The decoded SERVING value of raw weights `w` (spec B.4.1)."""
  if comp == "fp16":
    return w.astype(np.float16).astype(np.float32)
  if comp == "fixed_r8":
    return _np_fixed_r8(w, 0.5)
  if comp == "one_bit":
    return np.where(0.05 * np.tanh(w) > 0, 0.05, -0.05).astype(np.float32)
  return w


def _run_without_monolith(code):
  """Runs `code` in a fresh Python whose `import monolith` fails."""
  prelude = "import sys\nsys.modules['monolith'] = None\n"
  result = subprocess.run([sys.executable, "-c", prelude + code],
                          capture_output=True,
                          text=True,
                          timeout=120,
                          check=False)
  if result.returncode != 0:
    raise AssertionError(result.stdout + result.stderr)
  return json.loads(result.stdout.strip().splitlines()[-1])


def _pooled_model(lookup, features):
  ids = features["ids"]
  emb = lookup("item", ids.values)
  return {"pooled": embedding_combiners.ReduceSum().combine(ids, emb)}


class ServingEncodingTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("fp32", "fp32", 7), ("fp16", "fp16", 8), ("fixed_r8", "fixed_r8", 17),
      ("one_bit", "one_bit", 17), ("one_bit_d1", "one_bit", 1))
  def test_lookup_decodes_like_the_reference(self, comp, dim):
    instance = _config([comp], [dim])
    rng = np.random.default_rng(dim)
    ids = rng.choice(1 << 40, size=50, replace=False).astype(np.int64)
    weights = rng.normal(scale=0.4, size=[50, dim]).astype(np.float32)
    weights[0, 0] = 0.0  # one_bit: w <= 0 maps to -a.
    table = hash_table_serving.ServingHashTable(instance.table_config, ids,
                                                weights, "t")
    query = np.concatenate([ids[::-1], [12345]])  # Last id is missing.
    got = table.lookup(query).numpy()
    want = _np_serving(comp, weights[::-1])
    self.assertAllEqual(got[:-1], want)
    self.assertAllEqual(got[-1], np.zeros(dim))

  def test_fixed_r8_examples_of_the_spec(self):
    codec = hash_table_serving.SegmentCodec(
        "fixed_r8",
        entry.FixedR8Compressor(5.0).as_proto().fixed_r8, 1)
    got = codec.decode(codec.encode([[100.0], [3.5], [-100.0]])).numpy()
    self.assertAllEqual(got.ravel(), [4.9609375, 3.515625, -5.0])
    self.assertAllEqual(
        codec.encode([[100.0], [3.5]]).numpy().ravel(), [127, 90])

  @parameterized.named_parameters(("fp32", "fp32", 4), ("fp16", "fp16", 2),
                                  ("fixed_r8", "fixed_r8", 1),
                                  ("one_bit", "one_bit", 0.125))
  def test_bytes_per_entry(self, comp, bytes_per_value):
    instance = _config([comp], [16])
    table = hash_table_serving.ServingHashTable(instance.table_config, [], [],
                                                "t")
    self.assertEqual(table.bytes_per_entry(), 8 + 16 * bytes_per_value)

  def test_update_remove_and_empty_table(self):
    instance = _config(["fp32", "fp16"], [2, 3])
    table = hash_table_serving.ServingHashTable(instance.table_config, [],
                                                np.zeros([0, 5]), "t")
    self.assertEqual(int(table.size()), 0)
    self.assertAllEqual(table.lookup([1, 2]), np.zeros([2, 5]))
    rows = np.arange(15, dtype=np.float32).reshape([3, 5])
    table.update([7, 3, 7], rows)  # The later 7 wins.
    self.assertEqual(int(table.size()), 2)
    got = table.lookup([3, 7, 8]).numpy()
    self.assertAllEqual(got[0], rows[1])
    self.assertAllClose(got[1], rows[2], rtol=1e-3)
    self.assertAllEqual(got[2], np.zeros(5))
    table.remove([3, 99])
    self.assertEqual(int(table.size()), 1)
    self.assertAllEqual(table.lookup([3]), np.zeros([1, 5]))
    with self.assertRaises(tf.errors.InvalidArgumentError):
      table.update([1, 2], np.zeros([1, 5], np.float32))


class ExportTest(tf.test.TestCase, parameterized.TestCase):

  def _trained_table(self, comps, dims, steps=3, **kwargs):
    table = hash_table_ops.hash_table_from_config(_config(
        comps, dims, **kwargs))
    rng = np.random.default_rng(0)
    for step in range(steps):
      ids = rng.integers(0, 40, size=64)
      grads = rng.normal(size=[64, sum(dims)]).astype(np.float32)
      table.apply_gradients(ids, grads, step, enable_dedup=True)
    return table

  @parameterized.named_parameters(("fp32", "fp32", 0.0), ("fp16", "fp16", 2e-3),
                                  ("fixed_r8", "fixed_r8", 2e-3 * 40),
                                  ("one_bit", "one_bit", None))
  def test_tf2_export_answers_like_training_without_monolith(self, comp, tol):
    table = self._trained_table([comp], [5])
    export_dir = os.path.join(self.get_temp_dir(), "tf2_" + comp)
    export.export_saved_model(export_dir, _pooled_model, {"item": table},
                              {"ids": _RAGGED})
    values = [3, 1, 4, 1, 5, 9, 2, 6, 1000]
    splits = [0, 2, 2, 5, 9]
    served = _run_without_monolith(
        textwrap.dedent(f"""
        import json
        import tensorflow as tf
        model = tf.saved_model.load({export_dir!r})
        out = model.signatures["serving_default"](
            ids_values=tf.constant({values}, tf.int64),
            ids_row_splits=tf.constant({splits}, tf.int64))
        ragged = model.predict({{"ids": tf.RaggedTensor.from_row_splits(
            tf.constant({values}, tf.int64), tf.constant({splits}, tf.int64))}})
        assert (ragged["pooled"].numpy() == out["pooled"].numpy()).all()
        print(json.dumps(out["pooled"].numpy().tolist()))
        """))
    ids = tf.RaggedTensor.from_row_splits(values, splits)
    weights = table.lookup(ids.values).numpy()
    if comp == "one_bit":  # The sign form of the raw weights.
      raw = table.export_entries()
      by_id = dict(zip(raw["ids"].numpy(), raw["weights"].numpy()))
      weights = np.stack([
          _np_serving("one_bit", by_id[i]) if i in by_id else np.zeros(5)
          for i in values
      ])
      tol = 1e-6
    want = tf.math.segment_sum(weights, ids.value_rowids()).numpy()
    want = np.pad(want, [[0, 4 - len(want)], [0, 0]])
    self.assertAllClose(served, want, atol=tol, rtol=0)

  def test_tf1_export_restores_dense_variables_and_updates(self):
    spec = {"ids": _RAGGED, "x": tf.TensorSpec([None, 2], tf.float32)}

    def model_fn(lookup, features):
      ids = features["ids"]
      emb = lookup("item", ids.values)
      pooled = embedding_combiners.ReduceSum().combine(ids, emb)
      kernel = tf.compat.v1.get_variable("dense/kernel", [6, 1])
      return {"score": tf.matmul(tf.concat([pooled, features["x"]], 1), kernel)}

    values, splits = [1, 2, 3, 77], [0, 2, 3, 4]
    x = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    export_dir = os.path.join(self.get_temp_dir(), "tf1")
    with tf.Graph().as_default():
      table = hash_table_ops.hash_table_from_config(_config(["fp32"], [4]))
      v = tf.compat.v1.placeholder(tf.int64, [None])
      s = tf.compat.v1.placeholder(tf.int64, [None])
      xs = tf.compat.v1.placeholder(tf.float32, [None, 2])
      out = model_fn(lambda name, i: table.lookup(i), {
          "ids": tf.RaggedTensor.from_row_splits(v, s),
          "x": xs
      })
      write = table.assign(tf.range(50, dtype=tf.int64),
                           tf.random.normal([50, 4], seed=1)).as_op()
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        sess.run(write)
        want = sess.run(out["score"], {v: values, s: splits, xs: x})
        export.export_saved_model_from_session(sess, export_dir, model_fn,
                                               {"item": table}, spec)
    served = _run_without_monolith(
        textwrap.dedent(f"""
        import json
        import tensorflow as tf
        model = tf.saved_model.load({export_dir!r})
        sig = model.signatures
        out = sig["serving_default"](
            ids_values=tf.constant({values}, tf.int64),
            ids_row_splits=tf.constant({splits}, tf.int64),
            x=tf.constant({x}))["score"].numpy().tolist()
        size = sig["update_item"](ids=tf.constant([77], tf.int64),
                                  values=tf.ones([1, 4]))["size"]
        after = sig["serving_default"](
            ids_values=tf.constant([77], tf.int64),
            ids_row_splits=tf.constant([0, 1], tf.int64),
            x=tf.zeros([1, 2]))["score"].numpy().tolist()
        print(json.dumps([out, int(size), after]))
        """))
    self.assertAllClose(served[0], want, rtol=1e-6)
    self.assertEqual(served[1], 51)
    # id 77 is now all ones: the score is the kernel's first 4 rows summed.
    self.assertNotAllClose(served[2], [[0.0]])

  def test_only_stock_ops_and_saved_model_cli(self):
    table = self._trained_table(["fp16", "one_bit", "fixed_r8"], [2, 3, 4])
    export_dir = os.path.join(self.get_temp_dir(), "ops")
    export.export_saved_model(export_dir, _pooled_model, {"item": table},
                              {"ids": _RAGGED})
    unregistered = _run_without_monolith(
        textwrap.dedent(f"""
        import json, os
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2
        model = saved_model_pb2.SavedModel()
        with open(os.path.join({export_dir!r}, "saved_model.pb"), "rb") as f:
          model.ParseFromString(f.read())
        types = set()
        for meta in model.meta_graphs:
          types.update(n.op for n in meta.graph_def.node)
          for fn in meta.graph_def.library.function:
            types.update(n.op for n in fn.node_def)
        print(json.dumps(sorted(t for t in types if not hasattr(tf.raw_ops, t))
                         + ["count=%d" % len(types)]))
        """))
    self.assertEqual(unregistered[:-1], [])
    self.assertGreater(int(unregistered[-1].split("=")[1]), 10)
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    inputs = []
    for name, value in (("ids_values", [1, 2, 3]), ("ids_row_splits", [0, 1,
                                                                       3])):
      path = os.path.join(self.get_temp_dir(), name + ".npy")
      np.save(path, np.array(value, np.int64))
      inputs.append(f"{name}={path}")
    result = subprocess.run([
        cli, "run", "--dir", export_dir, "--tag_set", "serve",
        "--signature_def", "serving_default", "--inputs", ";".join(inputs)
    ],
                            capture_output=True,
                            text=True,
                            timeout=120,
                            check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    self.assertIn("pooled", result.stdout)

  def test_expired_entries_are_not_exported_and_load_replaces(self):
    table = hash_table_ops.hash_table_from_config(
        _config(["fp32"], [2], expire_time=1))
    table.assign([1, 2], [[1.0, 1.0], [2.0, 2.0]], req_time=0)
    table.assign([3], [[3.0, 3.0]], req_time=86400 * 2)
    serving = export.serving_table(table)
    self.assertEqual(int(serving.size()), 1)
    self.assertAllEqual(serving.lookup([1, 3]), [[0.0, 0.0], [3.0, 3.0]])
    # Serving-time sync from a monolith-format checkpoint.
    trained = self._trained_table(["fp32"], [2])
    basename = os.path.join(self.get_temp_dir(), "sync", "table")
    os.makedirs(os.path.dirname(basename))
    trained.save(basename)
    serving.load_entry_dumps(basename + "-*-of-*")
    entries = trained.export_entries()
    self.assertEqual(int(serving.size()), int(trained.size()))
    self.assertAllEqual(serving.lookup(entries["ids"]), entries["weights"])
    with self.assertRaises(tf.errors.InvalidArgumentError):
      serving.load_entry_dumps(os.path.join(self.get_temp_dir(), "none-*"))

  def test_bad_requests_get_invalid_argument(self):
    table = hash_table_ops.hash_table_from_config(_config(["fp32"], [3]))
    export_dir = os.path.join(self.get_temp_dir(), "empty")
    export.export_saved_model(export_dir, _pooled_model, {"item": table},
                              {"ids": _RAGGED})
    loaded = tf.saved_model.load(export_dir)
    serve = loaded.signatures["serving_default"]
    out = serve(ids_values=tf.constant([5], tf.int64),
                ids_row_splits=tf.constant([0, 1], tf.int64))
    self.assertAllEqual(out["pooled"], [[0.0, 0.0, 0.0]])
    with self.assertRaises(tf.errors.InvalidArgumentError):
      serve(ids_values=tf.constant([5, 6], tf.int64),
            ids_row_splits=tf.constant([0, 3], tf.int64))
    with self.assertRaises(
        (TypeError, ValueError, tf.errors.InvalidArgumentError)):
      serve(ids_values=tf.constant([5.0]),
            ids_row_splits=tf.constant([0, 1], tf.int64))

  def test_bad_export_arguments(self):
    table = hash_table_ops.hash_table_from_config(_config(["fp32"], [3]))
    with self.assertRaisesRegex(ValueError, "tables keys must be"):
      export.export_saved_model("/tmp/unused", _pooled_model,
                                {"bad name": table}, {"ids": _RAGGED})
    with self.assertRaisesRegex(TypeError, r"input_spec\['ids'\]"):
      export.export_saved_model("/tmp/unused", _pooled_model, {"item": table},
                                {"ids": [None]})


if __name__ == "__main__":
  tf.test.main()
