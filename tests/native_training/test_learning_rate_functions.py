"""Tests of monolith.native_training.learning_rate_functions."""

import inspect
import re

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from monolith.native_training import learning_rate_functions


def _expected_decay(step, initial=0.1, decay_steps=10, end=0.01, power=1.0):
  """tf.compat.v1.train.polynomial_decay without cycle, in plain Python."""
  fraction = min(step, decay_steps) / decay_steps
  return (initial - end) * (1 - fraction)**power + end


class LearningRateFunctionTest(tf.test.TestCase, parameterized.TestCase):

  def test_str_lists_sorted_attributes(self):
    fn = learning_rate_functions.PolynomialDecay(initial_learning_rate=0.1,
                                                 decay_steps=10,
                                                 end_learning_rate=0.01)
    self.assertEqual(
        str(fn), 'LearningRateFunction("PolynomialDecay",Params:cycle=False,'
        "decay_steps=10,end_learning_rate=0.01,initial_learning_rate=0.1,"
        "name=None,power=1.0)")

  def test_str_of_a_subclass(self):

    class Constant(learning_rate_functions.LearningRateFunction):

      def __init__(self, value):
        self.zeta = "z"
        self.value = value

      def __call__(self):
        return tf.constant(self.value, tf.float32)

    self.assertEqual(
        str(Constant(0.5)),
        'LearningRateFunction("Constant",Params:value=0.5,zeta=z)')
    self.assertAllClose(Constant(0.5)(), 0.5)

  def test_equal_params_give_equal_strings(self):
    make = learning_rate_functions.PolynomialDecay
    self.assertEqual(str(make(0.1, 10)), str(make(0.1, 10)))
    self.assertNotEqual(str(make(0.1, 10)), str(make(0.1, 11)))

  def test_call_is_abstract(self):
    with self.assertRaisesRegex(TypeError, "abstract"):
      learning_rate_functions.LearningRateFunction()  # pylint: disable=abstract-class-instantiated

  def test_signature_matches_monolith(self):
    parameters = inspect.signature(
        learning_rate_functions.PolynomialDecay).parameters
    self.assertEqual([(p.name, p.default) for p in parameters.values()],
                     [("initial_learning_rate", inspect.Parameter.empty),
                      ("decay_steps", inspect.Parameter.empty),
                      ("end_learning_rate", 0.0001), ("power", 1.0),
                      ("cycle", False), ("name", None)])

  @parameterized.named_parameters(("linear", 1.0, [0, 5, 10, 20]),
                                  ("square", 2.0, [0, 3, 7, 10]))
  def test_graph_mode(self, power, steps):
    with tf.Graph().as_default():
      fn = learning_rate_functions.PolynomialDecay(0.1,
                                                   10,
                                                   end_learning_rate=0.01,
                                                   power=power)
      rate = fn()
      self.assertIsInstance(rate, tf.Tensor)
      self.assertEqual(rate.dtype, tf.float32)
      step = tf.compat.v1.train.get_global_step()
      new_step = tf.compat.v1.placeholder(tf.int64, [])
      assign = step.assign(new_step)
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        for value in steps:
          sess.run(assign, {new_step: value})
          self.assertAllClose(sess.run(rate), _expected_decay(value,
                                                              power=power))

  def test_graph_mode_cycle(self):
    with tf.Graph().as_default():
      rate = learning_rate_functions.PolynomialDecay(0.1,
                                                     10,
                                                     end_learning_rate=0.01,
                                                     cycle=True,
                                                     name="lr")()
      step = tf.compat.v1.train.get_global_step()
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        sess.run(step.assign(15))
        # With cycle, decay_steps becomes 20 at step 15.
        self.assertAllClose(sess.run(rate), (0.1 - 0.01) * 0.25 + 0.01)

  def test_eager_follows_the_global_step_variable(self):
    fn = learning_rate_functions.PolynomialDecay(0.1,
                                                 10,
                                                 end_learning_rate=0.01)
    step = tf.compat.v1.train.get_or_create_global_step()
    step.assign(0)
    self.assertAllClose(fn(), 0.1)
    step.assign(5)
    self.assertAllClose(fn(), _expected_decay(5))
    step.assign(50)
    self.assertAllClose(fn(), 0.01)
    step.assign(0)

  def test_tf_function(self):
    fn = learning_rate_functions.PolynomialDecay(0.1,
                                                 10,
                                                 end_learning_rate=0.01)
    step = tf.compat.v1.train.get_or_create_global_step()
    compute = tf.function(fn.__call__)
    step.assign(2)
    self.assertAllClose(compute(), _expected_decay(2))
    step.assign(8)
    self.assertAllClose(compute(), _expected_decay(8))
    step.assign(0)

  def _rate_at(self, fn, step, mode):
    """fn() at global step `step`, in a TF1 graph, eagerly or in tf.function."""
    if mode == "graph":
      with tf.Graph().as_default():
        rate = fn()
        self.assertEqual(rate.dtype, tf.float32)
        with tf.compat.v1.Session() as sess:
          sess.run(tf.compat.v1.global_variables_initializer())
          sess.run(tf.compat.v1.train.get_global_step().assign(step))
          return sess.run(rate)
    global_step = tf.compat.v1.train.get_or_create_global_step()
    global_step.assign(step)
    rate = tf.function(fn.__call__)() if mode == "function" else fn()
    global_step.assign(0)
    self.assertEqual(rate.dtype, tf.float32)
    return rate.numpy()

  @parameterized.named_parameters(("graph", "graph"), ("eager", "eager"),
                                  ("tf_function", "function"))
  def test_int_and_float64_rates_give_float32(self, mode):
    fn = learning_rate_functions.PolynomialDecay(1, 100)
    self.assertAllClose(self._rate_at(fn, 50, mode),
                        _expected_decay(50, 1.0, 100, 0.0001))
    fn = learning_rate_functions.PolynomialDecay(
        np.float64(0.1), np.int64(10), end_learning_rate=np.float64(0.01))
    self.assertAllClose(self._rate_at(fn, 5, mode), _expected_decay(5))

  def test_str_keeps_the_arguments_as_given(self):
    # As in monolith: these print differently, so slots using them get
    # different HashTableConfigInstance strings and do not share a table.
    make = learning_rate_functions.PolynomialDecay
    self.assertIn("decay_steps=100,", str(make(0.1, 100)))
    self.assertIn("decay_steps=100.0,", str(make(0.1, 100.0)))
    self.assertIn("initial_learning_rate=1,", str(make(1, 100)))
    self.assertIn("PolynomialDecay(0.1, 100.0)",
                  learning_rate_functions.PolynomialDecay.__doc__)

  @parameterized.named_parameters(
      ("zero_decay_steps", dict(decay_steps=0), ValueError,
       "decay_steps must be > 0, got 0"),
      ("negative_decay_steps", dict(decay_steps=-5), ValueError,
       "decay_steps must be > 0, got -5"),
      ("nan_decay_steps", dict(decay_steps=float("nan")), ValueError,
       "decay_steps must be a finite number, got nan"),
      ("negative_rate", dict(initial_learning_rate=-0.1), ValueError,
       "initial_learning_rate must be >= 0, got -0.1"),
      ("nan_rate", dict(initial_learning_rate=float("nan")), ValueError,
       "initial_learning_rate must be a finite number, got nan"),
      ("infinite_rate", dict(initial_learning_rate=float("inf")), ValueError,
       "initial_learning_rate must be a finite number, got inf"),
      ("negative_end_rate", dict(end_learning_rate=-0.01), ValueError,
       "end_learning_rate must be >= 0, got -0.01"),
      ("nan_end_rate", dict(end_learning_rate=np.float32("nan")), ValueError,
       "end_learning_rate must be a finite number, got "),
      ("nan_power", dict(power=float("nan")), ValueError,
       "power must be a finite number, got nan"),
      ("string_rate", dict(initial_learning_rate="0.1"), TypeError,
       "initial_learning_rate must be a number, got str '0.1'"),
      ("bool_decay_steps", dict(decay_steps=True), TypeError,
       "decay_steps must be a number, got bool True"),
      ("none_rate", dict(initial_learning_rate=None), TypeError,
       "initial_learning_rate must be a number, got NoneType None"),
      ("int_cycle", dict(cycle=1), TypeError,
       "cycle must be a bool, got int 1"),
      ("int_name", dict(name=3), TypeError,
       "name must be a str or None, got int 3"),
  )
  def test_rejects_invalid_arguments(self, overrides, error, message):
    kwargs = dict(initial_learning_rate=0.1, decay_steps=10)
    kwargs.update(overrides)
    with self.assertRaisesRegex(error,
                                "^" + re.escape("PolynomialDecay: " + message)):
      learning_rate_functions.PolynomialDecay(**kwargs)

  def test_boundary_values_are_accepted(self):
    fn = learning_rate_functions.PolynomialDecay(0, 1e-3, 0, power=-1.0)
    self.assertEqual(fn.initial_learning_rate, 0)
    learning_rate_functions.PolynomialDecay(np.float32(0.5),
                                            np.int32(1),
                                            cycle=np.bool_(True),
                                            name="lr")


class GlobalStepTest(tf.test.TestCase, parameterized.TestCase):
  """PolynomialDecay in every context, with and without a global step."""

  def setUp(self):
    super().setUp()
    self.fn = learning_rate_functions.PolynomialDecay(0.1,
                                                      10,
                                                      end_learning_rate=0.01)

  @parameterized.named_parameters(
      ("created_before_tracing", True),
      ("created_after_tracing", False),
  )
  def test_tf_function(self, step_first):
    self.assertIsNone(tf.compat.v1.train.get_global_step())
    if step_first:
      tf.compat.v1.train.get_or_create_global_step().assign(2)
    compute = tf.function(self.fn.__call__)
    self.assertAllClose(compute(), _expected_decay(2 if step_first else 0))
    # Without a step, tracing created it where get_or_create finds it.
    step = tf.compat.v1.train.get_or_create_global_step()
    self.assertIs(tf.compat.v1.train.get_global_step(), step)
    step.assign(8)
    self.assertAllClose(compute(), _expected_decay(8))
    # A second function, traced later, and eager calls use the same step.
    self.assertAllClose(tf.function(self.fn.__call__)(), _expected_decay(8))
    self.assertAllClose(self.fn(), _expected_decay(8))
    step.assign(0)

  def test_nested_tf_functions_without_a_global_step(self):
    self.assertIsNone(tf.compat.v1.train.get_global_step())
    inner = tf.function(self.fn.__call__)
    outer = tf.function(lambda: inner() * 2.0)
    self.assertAllClose(outer(), 2 * _expected_decay(0))
    tf.compat.v1.train.get_global_step().assign(5)
    self.assertAllClose(outer(), 2 * _expected_decay(5))
    tf.compat.v1.train.get_global_step().assign(0)

  def test_eager_without_a_global_step(self):
    self.assertIsNone(tf.compat.v1.train.get_global_step())
    self.assertAllClose(self.fn(), _expected_decay(0))
    step = tf.compat.v1.train.get_global_step()
    step.assign(4)
    self.assertAllClose(self.fn(), _expected_decay(4))
    step.assign(0)

  @parameterized.named_parameters(("step_first", True), ("no_step", False))
  def test_tf_function_in_a_tf1_graph(self, step_first):
    with tf.Graph().as_default() as graph:
      if step_first:
        tf.compat.v1.train.create_global_step()
      rate = tf.function(self.fn.__call__)()
      step = tf.compat.v1.train.get_global_step(graph)
      self.assertIsNotNone(step)
      self.assertIn(step, tf.compat.v1.global_variables())
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        sess.run(step.assign(6))
        self.assertAllClose(sess.run(rate), _expected_decay(6))

  def test_tf1_graph_under_control_dependencies(self):
    with tf.Graph().as_default():
      trigger = tf.constant(1.0)
      with tf.control_dependencies([trigger]):
        rate = self.fn()
      step = tf.compat.v1.train.get_global_step()
      # The step's initializer does not depend on the caller's inputs.
      self.assertEmpty(step.initializer.control_inputs)
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        self.assertAllClose(sess.run(rate), _expected_decay(0))


if __name__ == "__main__":
  tf.test.main()
