"""The demo's TF1 click model on monolith-tf hash tables.

`build_model` builds, in the current default graph, one
`hash_table_ops.HashTable` per distinct table config (from
`hash_table_from_config`) and the training step:

  ids --tf.unique--> table.lookup --gather--> combiner per slot
      --> attention + DNN --> log loss
  d loss / d looked-up rows --> table.apply_gradients(..., global_step,
      enable_dedup=True, req_time)   (the table's optimizers, per-segment
                                      learning rates)
  d loss / d DNN weights    --> tf.compat.v1.train.AdamOptimizer
  then global_step += 1

Why `enable_dedup=True`: the graph already de-duplicates the ids of each
table before the lookup (as monolith's distributed path does), and with
dedup the table sums the gradients of equal ids and takes one vectorized
step per unique id. `enable_dedup=False` (monolith's default) takes one
sequential step per occurrence, a `tf.while_loop` of as many rounds as the
most frequent id occurs: exact for non-SGD optimizers but much slower, and
it would change nothing here since the ids are already unique.
"""

import math
from typing import Any, Dict, List, Tuple

import numpy as np
import tensorflow as tf

from monolith.native_training import embedding_combiners
from monolith.native_training import hash_table_ops


def dense_layer(x, units, name, seed):
  """A fully connected layer from plain TF1 variables (placed by the
  current device scope, e.g. on a parameter server)."""
  with tf.compat.v1.variable_scope(name):
    kernel = tf.compat.v1.get_variable(
        "kernel", [int(x.shape[-1]), units],
        initializer=tf.compat.v1.glorot_uniform_initializer(seed=seed))
    bias = tf.compat.v1.get_variable(
        "bias", [units], initializer=tf.compat.v1.zeros_initializer())
  return tf.matmul(x, kernel) + bias


def _combiner(spec, hist_len):
  """The embedding combiner of a slot."""
  if spec.combiner == "ReduceSum":
    return embedding_combiners.ReduceSum()
  if spec.combiner == "ReduceMean":
    return embedding_combiners.ReduceMean()
  return embedding_combiners.FirstN(hist_len)


def table_key(index: int) -> str:
  """The name of table `index` in `model_fn`'s `lookup` calls."""
  return "table_{}".format(index)


def input_spec(specs) -> Dict[str, tf.RaggedTensorSpec]:
  """The exported model's inputs: one ragged int64 id tensor per slot."""
  return {slot: tf.RaggedTensorSpec([None, None], tf.int64, 1) for slot in specs}


def model_fn(args, specs, group_slots: List[List[str]]):
  """The click model as `fn(lookup, features) -> {"logit", "prob"}`.

  The same function builds the training graph (`lookup` reads the training
  tables) and the exported serving graph (`export.export_saved_model_*`).

  Args:
    args: parsed flags (id_dim, hist_len, hidden_units, seed).
    specs: OrderedDict slot name -> click_log.SlotSpec (see `build_model`).
    group_slots: the slots of each table, in table order.

  Returns:
    `fn(lookup, features)`: `lookup(table_key(i), ids)` gives table i's rows,
    `features` maps each slot to a `tf.RaggedTensor` of ids.
  """
  history = [s for s, spec in specs.items() if spec.combiner == "FirstN"][0]

  def forward(lookup, ragged):
    # One lookup per table: its slots' ids de-duplicated, looked up once.
    pooled = {}
    for index, slots in enumerate(group_slots):
      with tf.name_scope("table_{}".format(index)):
        all_ids = tf.concat([ragged[s].values for s in slots], axis=0)
        unique_ids, position = tf.unique(all_ids, out_idx=tf.int64)
        rows = lookup(table_key(index), unique_ids)
        offset = 0
        for slot in slots:
          count = tf.size(ragged[slot].values, out_type=tf.int64)
          embedding = tf.gather(rows, position[offset:offset + count])
          offset += count
          pooled[slot] = _combiner(specs[slot], args.hist_len).combine(
              ragged[slot], embedding)

    # Candidate x history attention, as in monolith's DIN-style models.
    item_vec = pooled["item_id"][:, 1:]
    hist_vec = pooled[history][:, :, 1:]
    mask = tf.sequence_mask(
        tf.minimum(ragged[history].row_lengths(), args.hist_len), args.hist_len)
    scores = tf.einsum("bd,bnd->bn", item_vec, hist_vec) / math.sqrt(
        args.id_dim)
    scores = tf.where(mask, scores, tf.fill(tf.shape(scores), -1e9))
    weights = tf.nn.softmax(scores) * tf.cast(mask, tf.float32)
    interest = tf.einsum("bn,bnd->bd", weights, hist_vec)
    features = [item_vec, interest, item_vec * interest]
    bias = 0.0
    sides = {"user": [], "item": []}
    for slot, spec in specs.items():
      if slot == history:
        continue
      if spec.kind == "id":
        bias += pooled[slot][:, 0]
        if slot != "item_id":  # e.g. user_id: its vector and its match.
          features += [pooled[slot][:, 1:], pooled[slot][:, 1:] * item_vec]
      else:
        features.append(pooled[slot])
        sides[spec.side].append(pooled[slot])
    if sides["user"] and sides["item"]:
      features.append(tf.add_n(sides["user"]) * tf.add_n(sides["item"]))
    features = tf.concat(features, axis=1)
    hidden = tf.nn.relu(
        dense_layer(features, args.hidden_units, "dnn1", args.seed))
    hidden = tf.nn.relu(
        dense_layer(hidden, max(1, args.hidden_units // 2), "dnn2",
                    args.seed + 1))
    logit = dense_layer(hidden, 1, "logit", args.seed + 2)[:, 0] + bias
    return {"logit": logit, "prob": tf.sigmoid(logit)}

  return forward


def build_model(args, specs, groups: List[Tuple[Any,
                                                List[str]]]) -> Dict[str, Any]:
  """Builds the tables and the training graph in the current default graph.

  Args:
    args: parsed flags (id_dim, hist_len, hidden_units, dense_lr, seed).
    specs: OrderedDict slot name -> click_log.SlotSpec. Needs an item-side
      "id" slot `item_id` (the candidate) and one "id" slot with the FirstN
      combiner (the history).
    groups: [(HashTableConfigInstance, [slot names])], one table each.

  Returns:
    dict with the feed placeholders ("<slot>/values", "<slot>/row_lengths",
    "labels", "req_time"), the tensors "loss", "prob", "train_op",
    "global_step", "learning_rates" (one stacked tensor per table, for
    display), "table_sizes" (rows after the step), the list "evict_ops" (per
    table: an op that evicts and adds the count to "evicted", or None when
    the table's config does not enable eviction), "evicted"
    (int64 variable per table, checkpointed), and the list "tables".

  Raises:
    ValueError: `specs` lacks the candidate or the history slot.
  """
  history = [s for s, spec in specs.items() if spec.combiner == "FirstN"]
  if "item_id" not in specs or specs["item_id"].kind != "id" or len(
      history) != 1 or specs[history[0]].kind != "id":
    raise ValueError("build_model: specs need an 'id' slot 'item_id' and one "
                     "'id' slot with the FirstN combiner, got {}".format(
                         dict(specs)))
  history = history[0]
  global_step = tf.compat.v1.train.get_or_create_global_step()
  step_now = global_step.read_value()
  out = {"learning_rates": [], "evict_ops": [], "evicted": []}
  ragged = {}
  for slot in specs:
    values = tf.compat.v1.placeholder(tf.int64, [None], slot + "/values")
    lengths = tf.compat.v1.placeholder(tf.int64, [None], slot + "/row_lengths")
    out[slot + "/values"], out[slot + "/row_lengths"] = values, lengths
    ragged[slot] = tf.RaggedTensor.from_row_lengths(values,
                                                    lengths,
                                                    validate=False)
  labels = tf.compat.v1.placeholder(tf.float32, [None], "labels")
  req_time = tf.compat.v1.placeholder(tf.int64, [], "req_time")
  out["labels"], out["req_time"] = labels, req_time

  tables = {}
  for index, (instance, _) in enumerate(groups):
    # Variables MonolithHashTable_<index>/...
    tables[table_key(index)] = hash_table_ops.hash_table_from_config(
        instance, name_suffix="_{}".format(index), seed=args.seed + index)
  out["tables"] = list(tables.values())
  lookups = []

  def lookup(name, ids):
    rows = tables[name].lookup(ids)
    lookups.append((tables[name], ids, rows))
    return rows

  forward = model_fn(args, specs, [slots for _, slots in groups])
  logit = forward(lookup, ragged)["logit"]
  loss = tf.reduce_mean(
      tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logit))
  out["loss"], out["prob"] = loss, tf.sigmoid(logit)

  # Gradients of the looked-up rows go to the tables, the DNN's to Adam.
  dense_vars = tf.compat.v1.trainable_variables()
  grads = tf.gradients(loss, dense_vars + [rows for _, _, rows in lookups])
  updates = [
      tf.compat.v1.train.AdamOptimizer(args.dense_lr).apply_gradients(
          zip(grads[:len(dense_vars)], dense_vars))
  ]
  sizes = []
  for (table, unique_ids, _), grad in zip(lookups, grads[len(dense_vars):]):
    with tf.name_scope(table.name + "_update"):
      updated = table.apply_gradients(unique_ids,
                                      tf.convert_to_tensor(grad),
                                      step_now,
                                      enable_dedup=True,
                                      req_time=req_time)
      updates.append(updated.as_op())
      sizes.append(updated.size())
  with tf.control_dependencies(updates):
    out["train_op"] = global_step.assign_add(1, read_value=False)
  out["table_sizes"] = tf.stack(sizes)
  out["global_step"] = global_step

  for index, (instance, _) in enumerate(groups):
    out["learning_rates"].append(instance.call_learning_rate_fns())
    evicted = tf.Variable(tf.constant(0, tf.int64),
                          trainable=False,
                          name="table_{}_evicted".format(index))
    out["evicted"].append(evicted)
    if not instance.table_config.enable_feature_eviction:
      out["evict_ops"].append(None)
      continue
    with tf.name_scope("table_{}_evict".format(index)):
      table = out["tables"][index]
      before = table.size()
      with tf.control_dependencies([before]):
        count = before - table.evict().size()
      out["evict_ops"].append(evicted.assign_add(count, read_value=False))
  out["evicted_total"] = tf.add_n([v.read_value() for v in out["evicted"]])
  out["current_sizes"] = tf.stack([t.size() for t in out["tables"]])
  return out


def feed_dict(model: Dict[str, Any], log, rows: np.ndarray) -> Dict:
  """Feed dict of the given example rows of a ClickLog."""
  feed = {model["labels"]: log.labels[rows]}
  for slot, column in log.slots.items():
    values, lengths = column.take(rows)
    feed[model[slot + "/values"]] = values
    feed[model[slot + "/row_lengths"]] = lengths
  return feed


def predict(sess: tf.compat.v1.Session,
            model: Dict[str, Any],
            log,
            batch_size: int = 4096) -> np.ndarray:
  """Click probabilities of all examples of a ClickLog."""
  probs = []
  for start in range(0, len(log), batch_size):
    rows = np.arange(start, min(start + batch_size, len(log)))
    probs.append(sess.run(model["prob"], feed_dict(model, log, rows)))
  return np.concatenate(probs)
