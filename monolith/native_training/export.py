"""Export trained hash-table models to SavedModels that plain TF serves.

A model is described by a `model_fn(lookup, features) -> outputs`:
`features` maps input names to tensors (ragged id inputs arrive as
`tf.RaggedTensor`s), `lookup(table_name, ids)` returns the `[len(ids), D]`
embeddings of a table, and `outputs` is a dict of named tensors. The same
function builds the training graph (with `HashTable.lookup`) and the serving
graph (with the `ServingHashTable` snapshot of each table, in SERVING form:
no optimizer slots, compressed values, expired entries left out).

Two entry points:

* `export_saved_model(export_dir, model_fn, tables, input_spec,
  trackables=...)` for TF2 code (eager, Keras): the dense variables are those
  of `trackables` (e.g. a Keras model), captured by the exported function.
* `export_saved_model_from_session(session, export_dir, model_fn, tables,
  input_spec)` for TF1 graphs: the serving graph is rebuilt in a new
  `tf.Graph` by calling `model_fn` again, and every variable it creates takes
  the value of the training variable with the same name.

Signatures (flat tensors only, as TensorFlow Serving wants them): a ragged
input `x` becomes `x_values` and `x_row_splits` (validated: mismatched row
splits give an InvalidArgument error); dense inputs keep their name.

* `serving_default`: `model_fn`'s outputs.
* (TF2 export only) `loaded.predict(features)`: the same, as a function of
  the original inputs (`tf.RaggedTensor`s), for Python users of
  `tf.saved_model.load`.
* `update_<table>(ids, values)`: upsert float32 rows into a table in place.
* `remove_<table>(ids)`: delete ids.
* `load_<table>(file_pattern)`: replace a table with monolith-format
  `EntryDump` shards (`HashTable.save` output) matching a glob.
  Each returns the table's new `size`.

The SavedModel contains stock TensorFlow ops only; it loads with
`tf.saved_model.load` or `saved_model_cli` in a process where monolith-tf is
not installed, and TensorFlow Serving serves it unmodified.
"""

import re
from typing import Any, Callable, Dict, Mapping, Optional, Union

import tensorflow as tf

from monolith.native_training import hash_table_ops
from monolith.native_training import hash_table_serving

Spec = Union[tf.TensorSpec, tf.RaggedTensorSpec]
ModelFn = Callable[[Callable[[str, tf.Tensor], tf.Tensor], Dict[str, Any]],
                   Mapping[str, tf.Tensor]]
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def serving_table(
    table: hash_table_ops.HashTable,
    session: Optional[tf.compat.v1.Session] = None,
    name: Optional[str] = None) -> hash_table_serving.ServingHashTable:
  """A SERVING-form snapshot of a trained table (expired entries dropped).

  Args:
    table: The trained table.
    session: The TF1 session holding it (None: eager).
    name: Name of the serving table (default: the table's name).

  Returns:
    The `ServingHashTable`.
  """
  if session is None:
    entries = table.export_entries(drop_expired=True)
    ids, weights = entries["ids"].numpy(), entries["weights"].numpy()
  else:
    with session.graph.as_default():
      entries = table.export_entries(drop_expired=True)
      ids, weights = session.run([entries["ids"], entries["weights"]])
  return hash_table_serving.ServingHashTable(table.config.table_config, ids,
                                             weights, name or table.name)


def snapshot_tensors(tables: Mapping[str, hash_table_ops.HashTable]):
  """`{name: (ids, weights)}` tensors of each table's unexpired entries.

  Build them in the training graph (before `graph.finalize()`) and pass
  them to `export_saved_model_from_session(..., snapshots=...)`.
  """
  snapshots = {}
  for name, table in tables.items():
    entries = table.export_entries(drop_expired=True)
    snapshots[name] = (entries["ids"], entries["weights"])
  return snapshots


def _check_names(tables: Mapping[str, Any], input_spec: Mapping[str, Spec]):
  for kind, names in (("tables", tables), ("input_spec", input_spec)):
    if not names:
      raise ValueError(f"export: {kind} must not be empty")
    for key in names:
      if not isinstance(key, str) or not _NAME.match(key):
        raise ValueError(f"export: {kind} keys must be identifiers "
                         f"([A-Za-z_][A-Za-z0-9_]*), got {key!r}")
  for key, spec in input_spec.items():
    if not isinstance(spec, (tf.TensorSpec, tf.RaggedTensorSpec)):
      raise TypeError(f"export: input_spec[{key!r}] must be a tf.TensorSpec "
                      f"or tf.RaggedTensorSpec, got {type(spec).__name__}")
    if isinstance(spec, tf.RaggedTensorSpec) and spec.ragged_rank != 1:
      raise ValueError(f"export: input_spec[{key!r}] must have ragged_rank "
                       f"1, got {spec.ragged_rank}")


def _flat_specs(input_spec: Mapping[str, Spec]) -> Dict[str, tf.TensorSpec]:
  """Signature inputs: `x_values` / `x_row_splits` for ragged `x`."""
  flat = {}
  for key, spec in input_spec.items():
    if isinstance(spec, tf.RaggedTensorSpec):
      flat[key + "_values"] = tf.TensorSpec([None], spec.dtype, key + "_values")
      flat[key + "_row_splits"] = tf.TensorSpec([None], spec.row_splits_dtype,
                                                key + "_row_splits")
    else:
      flat[key] = tf.TensorSpec(spec.shape, spec.dtype, key)
  return flat


def _features(input_spec: Mapping[str, Spec],
              flat: Mapping[str, tf.Tensor]) -> Dict[str, Any]:
  features = {}
  for key, spec in input_spec.items():
    if isinstance(spec, tf.RaggedTensorSpec):
      features[key] = tf.RaggedTensor.from_row_splits(flat[key + "_values"],
                                                      flat[key + "_row_splits"],
                                                      validate=True)
    else:
      features[key] = flat[key]
  return features


def _lookup_fn(serving: Mapping[str, hash_table_serving.ServingHashTable]):

  def lookup(name: str, ids: tf.Tensor) -> tf.Tensor:
    if name not in serving:
      raise KeyError(f"lookup: unknown table {name!r}; tables: "
                     f"{sorted(serving)}")
    return serving[name].lookup(ids)

  return lookup


def _as_dict(outputs) -> Dict[str, tf.Tensor]:
  if isinstance(outputs, Mapping):
    return dict(outputs)
  return {"output": outputs}


def export_saved_model(export_dir: str,
                       model_fn: ModelFn,
                       tables: Mapping[str, Any],
                       input_spec: Mapping[str, Spec],
                       trackables: Optional[Mapping[str, Any]] = None) -> str:
  """Writes a SavedModel of `model_fn` over SERVING-form tables (TF2).

  Args:
    export_dir: Where to write (created; must not hold a SavedModel).
    model_fn: `model_fn(lookup, features) -> {name: tensor}`.
    tables: Name -> trained `HashTable` (or a `ServingHashTable`).
    input_spec: Input name -> `tf.TensorSpec` / `tf.RaggedTensorSpec`.
    trackables: Objects whose variables `model_fn` uses (e.g. Keras models).

  Returns:
    `export_dir`.

  Raises:
    ValueError / TypeError: bad names or specs.
  """
  _check_names(tables, input_spec)
  module = tf.Module()
  module.tables = {
      name: (t if isinstance(t, hash_table_serving.ServingHashTable) else
             serving_table(t, name=name)) for name, t in tables.items()
  }
  module.trackables = dict(trackables or {})
  lookup = _lookup_fn(module.tables)
  flat = _flat_specs(input_spec)

  @tf.function(input_signature=[flat])
  def serve(inputs):
    return _as_dict(model_fn(lookup, _features(input_spec, inputs)))

  @tf.function(input_signature=[dict(input_spec)])
  def predict(features):
    return _as_dict(model_fn(lookup, dict(features)))

  module.serve = serve
  # For Python users of tf.saved_model.load: takes the RaggedTensors.
  module.predict = predict
  signatures = {"serving_default": serve.get_concrete_function()}
  for name, table in module.tables.items():
    signatures.update(_table_signatures(name, table))
  # Keep signature functions alive on the module.
  module.table_functions = {
      k: v for k, v in signatures.items() if k != "serving_default"
  }
  tf.saved_model.save(module, export_dir, signatures=signatures)
  return export_dir


def _table_signatures(name: str, table: hash_table_serving.ServingHashTable):
  dim = table.dim_size

  @tf.function(input_signature=[
      tf.TensorSpec([None], tf.int64, "ids"),
      tf.TensorSpec([None, dim], tf.float32, "values")
  ])
  def update(ids, values):
    with tf.control_dependencies([table.update(ids, values)]):
      return {"size": table.size()}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, "ids")])
  def remove(ids):
    with tf.control_dependencies([table.remove(ids)]):
      return {"size": table.size()}

  @tf.function(input_signature=[tf.TensorSpec([], tf.string, "file_pattern")])
  def load(file_pattern):
    with tf.control_dependencies([table.load_entry_dumps(file_pattern)]):
      return {"size": table.size()}

  return {
      f"update_{name}": update.get_concrete_function(),
      f"remove_{name}": remove.get_concrete_function(),
      f"load_{name}": load.get_concrete_function(),
  }


def export_saved_model_from_session(session: tf.compat.v1.Session,
                                    export_dir: str,
                                    model_fn: ModelFn,
                                    tables: Mapping[str,
                                                    hash_table_ops.HashTable],
                                    input_spec: Mapping[str, Spec],
                                    snapshots=None) -> str:
  """Writes a SavedModel of a TF1 model trained in `session`.

  `model_fn` is called again in a new graph, with SERVING-form tables; each
  variable it creates takes the value of the variable of the same name in
  `session`'s graph (so build the training model with the same `model_fn`,
  under the same variable scopes).

  Args:
    session: The training session.
    export_dir: Where to write (must not exist yet).
    model_fn: `model_fn(lookup, features) -> {name: tensor}`.
    tables: Name -> trained `HashTable` of `session`'s graph.
    input_spec: Input name -> `tf.TensorSpec` / `tf.RaggedTensorSpec`.
    snapshots: `snapshot_tensors(tables)` built in the training graph before
      it was finalized (None: build them now).

  Returns:
    `export_dir`.

  Raises:
    ValueError: bad names or specs, a finalized graph without `snapshots`,
      or a serving-graph variable with no
      training variable of the same name and shape.
  """
  _check_names(tables, input_spec)
  if snapshots is None:
    if session.graph.finalized:
      raise ValueError(
          "export_saved_model_from_session: the session's graph is "
          "finalized; build snapshots=export.snapshot_tensors(tables) "
          "before finalizing it")
    with session.graph.as_default():
      snapshots = snapshot_tensors(tables)
  missing = sorted(set(tables) - set(snapshots))
  if missing:
    raise ValueError("export_saved_model_from_session: snapshots lacks "
                     f"tables {missing}")
  values = session.run({name: snapshots[name] for name in tables})
  snapshots = {
      name: (table.config.table_config, *values[name])
      for name, table in tables.items()
  }
  with session.graph.as_default():
    trained = {v.op.name: v for v in tf.compat.v1.global_variables()}
  graph = tf.Graph()
  with graph.as_default():
    serving = {
        name: hash_table_serving.ServingHashTable(cfg, ids, weights, name)
        for name, (cfg, ids, weights) in snapshots.items()
    }
    flat = {
        key: tf.compat.v1.placeholder(spec.dtype, spec.shape, name=key)
        for key, spec in _flat_specs(input_spec).items()
    }
    outputs = _as_dict(
        model_fn(_lookup_fn(serving), _features(input_spec, flat)))
    table_vars = set()
    for table in serving.values():
      table_vars.update(v.ref() for v in [table.ids] + table.codes)
    model_vars = [
        v for v in tf.compat.v1.global_variables() if v.ref() not in table_vars
    ]
    missing = [v.op.name for v in model_vars if v.op.name not in trained]
    if missing:
      raise ValueError(
          "export_saved_model_from_session: the serving graph creates "
          f"variables with no training variable of the same name: {missing}")
    values = session.run({v.op.name: trained[v.op.name] for v in model_vars})
    feed = {}
    for table in serving.values():
      feed.update(table.initializer_feed)
    signatures = {
        "serving_default":
            tf.compat.v1.saved_model.predict_signature_def(flat, outputs)
    }
    for name, table in serving.items():
      signatures.update(_session_table_signatures(name, table))
    with tf.compat.v1.Session(graph=graph) as sess:
      sess.run(tf.compat.v1.global_variables_initializer(), feed_dict=feed)
      for v in model_vars:
        v.load(values[v.op.name], sess)
      builder = tf.compat.v1.saved_model.Builder(export_dir)
      builder.add_meta_graph_and_variables(sess, [tf.saved_model.SERVING],
                                           signature_def_map=signatures,
                                           strip_default_attrs=True)
      builder.save()
  return export_dir


def _session_table_signatures(name, table):
  sig = tf.compat.v1.saved_model.signature_def_utils.build_signature_def
  info = tf.compat.v1.saved_model.utils.build_tensor_info
  ids = tf.compat.v1.placeholder(tf.int64, [None], name=f"{name}_update_ids")
  values = tf.compat.v1.placeholder(tf.float32, [None, table.dim_size],
                                    name=f"{name}_update_values")
  with tf.control_dependencies([table.update(ids, values)]):
    size_after_update = tf.identity(table.size())
  remove_ids = tf.compat.v1.placeholder(tf.int64, [None],
                                        name=f"{name}_remove_ids")
  with tf.control_dependencies([table.remove(remove_ids)]):
    size_after_remove = tf.identity(table.size())
  pattern = tf.compat.v1.placeholder(tf.string, [], name=f"{name}_pattern")
  with tf.control_dependencies([table.load_entry_dumps(pattern)]):
    size_after_load = tf.identity(table.size())
  method = tf.saved_model.PREDICT_METHOD_NAME
  return {
      f"update_{name}":
          sig({
              "ids": info(ids),
              "values": info(values)
          }, {"size": info(size_after_update)}, method),
      f"remove_{name}":
          sig({"ids": info(remove_ids)}, {"size": info(size_after_remove)},
              method),
      f"load_{name}":
          sig({"file_pattern": info(pattern)}, {"size": info(size_after_load)},
              method),
  }
