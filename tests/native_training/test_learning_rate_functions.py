"""Tests of monolith.native_training.learning_rate_functions."""

import inspect

from absl.testing import parameterized
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


if __name__ == "__main__":
  tf.test.main()
