"""Combiner checks that can kill or reconfigure the process: run in a child.

* 0-row batches: every combiner x {eager, tf.function, TF1 Session, XLA} x
  loss kind x formulation, each case printed as it starts and ends, so that
  a crash (TF 2.21's Grappler died with SIGFPE on some formulations) fails
  this test, naming the case, instead of killing the test suite.
* Building a graph with the combiners must not start the TensorFlow runtime:
  `tf.config.threading` and `tf.config.set_logical_device_configuration`
  still work afterwards.

Run directly, this file is also the child: `python <this file> --zero-rows`
or `--runtime-untouched`.
"""

import os
import subprocess
import sys
from unittest import mock

import numpy as np
import tensorflow as tf

from monolith.native_training import embedding_combiner_ops as combiner_ops
from monolith.native_training import embedding_combiners as ec

_DIM = 5
_SEQ = 3
# Combiners: name -> (factory(portable), weighted).
_COMBINERS = {
    "sum": (lambda portable: ec.ReduceSum(portable=portable), False),
    "mean": (lambda portable: ec.ReduceMean(portable=portable), False),
    "sqrtn": (lambda portable: ec.ReduceSqrtN(portable=portable), False),
    "first3": (lambda portable: ec.FirstN(_SEQ, portable=portable), False),
    "weighted_mean": (lambda portable: ec.ReduceMean(portable=portable), True),
    "weighted_sqrtn":
        (lambda portable: ec.ReduceSqrtN(portable=portable), True),
}
_LOSSES = {
    "reduce_sum": tf.reduce_sum,
    "reduce_mean": tf.reduce_mean,
    "dot": lambda out: tf.reduce_sum(out * tf.fill(tf.shape(out), 0.5)),
}
# Formulations: "default" (what this machine picks), "portable"
# (portable=True) and "gpu" (the GPU formulation, forced on the CPU).
_FORMULATIONS = ("default", "portable", "gpu")
# Row lengths of batches without ids: no rows at all, and 3 empty rows.
_BATCHES = {"0rows": [], "3empty": [0, 0, 0]}
_TIMEOUT_S = 300


def _combine(combiner_name, portable, key, emb, w):
  make, weighted = _COMBINERS[combiner_name]
  if weighted:
    return make(portable).combine(key, emb, weights=w)
  return make(portable).combine(key, emb)


def _step(combiner_name, portable):
  """step(key, emb, w) -> [output, d loss / d emb for each loss kind]."""

  def step(key, emb, w):
    with tf.GradientTape(persistent=True) as tape:
      tape.watch(emb)
      out = _combine(combiner_name, portable, key, emb, w)
      losses = [loss_fn(out) for loss_fn in _LOSSES.values()]
    return [out] + [
        tf.convert_to_tensor(tape.gradient(loss, emb)) for loss in losses
    ]

  return step


def _run_graph(combiner_name, portable, lengths):
  """TF1 graph + Session, static shapes; returns the numpy results."""
  splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  with tf.Graph().as_default():
    key = tf.RaggedTensor.from_row_splits(tf.constant([], tf.int64),
                                          tf.constant(splits))
    emb = tf.compat.v1.placeholder(tf.float32, [0, _DIM])
    w = tf.compat.v1.placeholder(tf.float32, [0])
    out = _combine(combiner_name, portable, key, emb, w)
    grads = [
        tf.convert_to_tensor(tf.gradients(loss_fn(out), emb)[0])
        for loss_fn in _LOSSES.values()
    ]
    with tf.compat.v1.Session() as sess:
      return sess.run([out] + grads,
                      feed_dict={
                          emb: np.zeros([0, _DIM], np.float32),
                          w: np.zeros([0], np.float32)
                      })


def _check(combiner_name, lengths, results):
  out = np.asarray(results[0])
  if combiner_name.startswith("first"):
    shape = (len(lengths), _SEQ, _DIM)
  else:
    shape = (len(lengths), _DIM)
  if out.shape != shape or np.any(out != 0):
    raise AssertionError(f"output {out.shape}, want zeros {shape}")
  for loss_name, grad in zip(_LOSSES, results[1:]):
    if np.asarray(grad).shape != (0, _DIM):
      raise AssertionError(f"{loss_name}: gradient shape {grad.shape}, want "
                           f"(0, {_DIM})")


def _case(combiner_name, mode, formulation, lengths):
  """Runs one combiner on one batch without ids, every loss kind."""
  portable = formulation == "portable"
  with mock.patch.object(combiner_ops, "_gpu_available",
                         lambda: formulation == "gpu"):
    if mode == "graph":
      results = _run_graph(combiner_name, portable, lengths)
    elif mode == "function_constant_key":
      # The key built from constants inside the function: Grappler can fold
      # everything derived from it.
      step = _step(combiner_name, portable)
      results = tf.function(lambda e, w: step(
          tf.RaggedTensor.from_row_lengths(tf.constant([
          ], tf.int64), tf.constant(lengths, tf.int64)), e, w))(tf.zeros(
              [0, _DIM]), tf.zeros([0]))
    else:
      step = _step(combiner_name, portable)
      if mode == "function":
        step = tf.function(step)  # No input signature: static [0, 5] shapes.
      elif mode == "xla":
        step = tf.function(step, jit_compile=True)
      key = tf.RaggedTensor.from_row_lengths(tf.constant([], tf.int64),
                                             tf.constant(lengths, tf.int64))
      results = step(key, tf.zeros([0, _DIM]), tf.zeros([0]))
  _check(combiner_name, lengths, results)


def _zero_row_cases():
  """(name, kwargs) of the matrix (Grappler runs in function / graph mode).

  Each case runs one combiner with each loss kind (`_LOSSES`).
  """
  for combiner_name in _COMBINERS:
    for batch, lengths in _BATCHES.items():
      for mode in ("eager", "function", "function_constant_key", "graph",
                   "xla"):
        formulations = {
            "function": _FORMULATIONS,
            "function_constant_key": _FORMULATIONS[:2],
            "graph": _FORMULATIONS[:2]
        }.get(mode, _FORMULATIONS[:1])
        if batch != "0rows":
          if mode != "function":
            continue
          formulations = formulations[:1]
        for formulation in formulations:
          yield (f"{combiner_name}/{mode}/{formulation}/{batch}",
                 dict(combiner_name=combiner_name,
                      mode=mode,
                      formulation=formulation,
                      lengths=lengths))


def _run_zero_row_matrix():
  """Child: runs every case, printing START / OK / FAIL lines."""
  for name, kwargs in _zero_row_cases():
    print("START", name, flush=True)
    try:
      _case(**kwargs)
    except Exception as e:  # pylint: disable=broad-except
      message = " ".join(str(e).split())[:300]
      print("FAIL", name, type(e).__name__, message, flush=True)
    else:
      print("OK", name, flush=True)


def _build_graphs_then_configure_runtime():
  """Child: builds TF1 training graphs, then configures the runtime."""
  for name in _COMBINERS:
    for portable in (False, True):
      make, weighted = _COMBINERS[name]
      with tf.Graph().as_default():
        key = tf.compat.v1.ragged.placeholder(tf.int64, 1, [])
        emb = tf.compat.v1.placeholder(tf.float32, [None, _DIM])
        kwargs = {}
        if weighted:  # Ragged weights: a run-time check of the partition.
          kwargs["weights"] = tf.compat.v1.ragged.placeholder(tf.float32, 1, [])
        out = make(portable).combine(key, emb, **kwargs)
        tf.gradients(tf.reduce_sum(out), emb)
  tf.config.threading.set_inter_op_parallelism_threads(2)
  tf.config.threading.set_intra_op_parallelism_threads(2)
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  # Only now is the runtime started, with the configuration above.
  if len(tf.config.list_logical_devices("CPU")) != 2:
    raise AssertionError(tf.config.list_logical_devices("CPU"))
  if tf.config.threading.get_inter_op_parallelism_threads() != 2:
    raise AssertionError("inter-op threads not set")
  print("runtime configured after building graphs")


def _run_child(flag):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run(
      [sys.executable, os.path.abspath(__file__), flag],
      capture_output=True,
      text=True,
      env=env,
      timeout=_TIMEOUT_S,
      check=False)


class ZeroRowBatchTest(tf.test.TestCase):
  """Every combiner on batches without ids, in a child process."""

  def test_zero_row_batches_never_crash(self):
    proc = _run_child("--zero-rows")
    started, finished, failed = [], set(), []
    for line in proc.stdout.splitlines():
      status, _, rest = line.partition(" ")
      name = rest.split(" ", 1)[0]
      if status == "START":
        started.append(name)
      elif status == "OK":
        finished.add(name)
      elif status == "FAIL":
        finished.add(name)
        failed.append(rest)
    crashed = [name for name in started if name not in finished]
    expected = [name for name, _ in _zero_row_cases()]
    self.assertEqual(
        crashed, [], "the child died (exit %d) in this case:\n%s" %
        (proc.returncode, proc.stderr[-2000:]))
    self.assertEqual(failed, [])
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    self.assertEqual(started, expected)


class RuntimeUntouchedTest(tf.test.TestCase):
  """Building graphs with combiners leaves the TF runtime unconfigured."""

  def test_threading_configurable_after_building_graphs(self):
    proc = _run_child("--runtime-untouched")
    self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr[-3000:])
    self.assertIn("runtime configured after building graphs", proc.stdout)


if __name__ == "__main__":
  if sys.argv[1:] == ["--zero-rows"]:
    _run_zero_row_matrix()
  elif sys.argv[1:] == ["--runtime-untouched"]:
    _build_graphs_then_configure_runtime()
  else:
    tf.test.main()
