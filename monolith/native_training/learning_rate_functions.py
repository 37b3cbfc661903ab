"""Learning-rate schedules for monolith hash-table optimizers.

A learning-rate function is a callable object with no arguments that returns
the current learning rate as a scalar `tf.Tensor`. Its `str()` is
deterministic (class name plus sorted parameters), so that
`entry.HashTableConfigInstance` can tell two table configs apart by their
strings.

Example:

  lr_fn = PolynomialDecay(initial_learning_rate=0.1, decay_steps=1000)
  learning_rate = lr_fn()  # Scalar float32 tensor at the current global step.
"""

import abc
from typing import Optional

import tensorflow as tf


class LearningRateFunction(abc.ABC):
  """A learning-rate schedule: a no-argument callable returning a tensor.

  Subclasses store their parameters as instance attributes; `str()` lists
  them sorted by name, so equal parameters give equal strings.

  Example:

    class Constant(LearningRateFunction):

      def __init__(self, value):
        self.value = value

      def __call__(self):
        return tf.constant(self.value, tf.float32)

    str(Constant(0.5))  # 'LearningRateFunction("Constant",Params:value=0.5)'
  """

  @abc.abstractmethod
  def __call__(self) -> tf.Tensor:
    """Returns the current learning rate as a scalar tensor."""

  def __str__(self) -> str:
    """Returns `LearningRateFunction("<ClassName>",Params:k1=v1,k2=v2)`."""
    params = ",".join(
        "{}={}".format(key, value) for key, value in sorted(vars(self).items()))
    return 'LearningRateFunction("{}",Params:{})'.format(
        type(self).__name__, params)


class PolynomialDecay(LearningRateFunction):
  """Polynomial decay of the learning rate over the global step.

  Follows `tf.compat.v1.train.polynomial_decay` with the global step of
  `tf.compat.v1.train.get_or_create_global_step()`. Works in TF1 graph mode
  (returns a tensor to run in a session), in eager mode (returns the value at
  the current step; the global step is a variable, so later calls see its
  updates) and inside `tf.function`.

  Example:

    lr_fn = PolynomialDecay(0.1, decay_steps=100, end_learning_rate=0.01)
    lr_fn()  # 0.1 at step 0, 0.055 at step 50, 0.01 from step 100 on.
  """

  def __init__(self,
               initial_learning_rate: float,
               decay_steps: int,
               end_learning_rate: float = 0.0001,
               power: float = 1.0,
               cycle: bool = False,
               name: Optional[str] = None):
    """Stores the schedule; see `tf.compat.v1.train.polynomial_decay`.

    Args:
      initial_learning_rate: The learning rate at step 0.
      decay_steps: Number of steps over which the rate decays.
      end_learning_rate: The learning rate after `decay_steps` steps.
      power: The power of the polynomial.
      cycle: Whether to restart the decay after `decay_steps` steps.
      name: Optional name of the decay op.
    """
    self.initial_learning_rate = initial_learning_rate
    self.decay_steps = decay_steps
    self.end_learning_rate = end_learning_rate
    self.power = power
    self.cycle = cycle
    self.name = name

  def __call__(self) -> tf.Tensor:
    """Returns the decayed learning rate at the current global step.

    Returns:
      A scalar tensor with the learning rate.
    """
    global_step = tf.compat.v1.train.get_or_create_global_step()
    decayed = tf.compat.v1.train.polynomial_decay(
        self.initial_learning_rate,
        global_step,
        self.decay_steps,
        end_learning_rate=self.end_learning_rate,
        power=self.power,
        cycle=self.cycle,
        name=self.name)
    # In eager mode TF returns a function that computes the rate when called.
    if callable(decayed):
      decayed = decayed()
    return decayed
