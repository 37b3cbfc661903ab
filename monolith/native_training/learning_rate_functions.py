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
import math
import numbers
from typing import Any, Optional

import numpy as np
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


def _check_number(arg: str,
                  value: Any,
                  low: Optional[float] = None,
                  low_open: bool = False) -> None:
  """Raises unless `value` is a finite real number >= (or >) `low`.

  Args:
    arg: Name of the argument, used in the messages.
    value: The value to check.
    low: Lower bound, or None.
    low_open: Whether `low` itself is excluded.

  Raises:
    TypeError: If `value` is not an int, float or NumPy number (a bool is
      not a number).
    ValueError: If `value` is NaN, infinite or below the bound.
  """
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (numbers.Real, np.integer, np.floating)):
    raise TypeError("PolynomialDecay: {} must be a number, got {} {!r}".format(
        arg,
        type(value).__name__, value))
  if not math.isfinite(float(value)):
    raise ValueError("PolynomialDecay: {} must be a finite number, got "
                     "{!r}".format(arg, value))
  if low is not None and (value < low or (low_open and value == low)):
    raise ValueError("PolynomialDecay: {} must be {} {}, got {!r}".format(
        arg, ">" if low_open else ">=", low, value))


def _global_step() -> tf.Variable:
  """Returns the global step, creating it if there is none yet.

  Like `tf.compat.v1.train.get_or_create_global_step()`, except inside a
  `tf.function` being traced: there TF's function looks in (and adds to) the
  collections of the function graph, so a step it creates while tracing is
  not found at the next trace, and is created again, which `tf.function`
  rejects. This one looks the step up and creates it under `tf.init_scope`,
  in the outermost graph: the TF1 graph that calls the function or, in eager
  mode, the global default graph, where `get_or_create_global_step()` finds
  it later.
  """
  with tf.init_scope():
    # In eager mode the function graph stays the default graph in init_scope.
    graph = tf.compat.v1.get_default_graph()
    while graph.building_function and getattr(graph, "outer_graph",
                                              None) is not None:
      graph = graph.outer_graph
    step = tf.compat.v1.train.get_global_step(graph)
    if step is None:
      step = tf.compat.v1.train.create_global_step(graph)
      # Created eagerly while tracing: it went into the function graph's
      # collection (or none), so register it where later lookups look.
      if tf.compat.v1.train.get_global_step(graph) is None:
        graph.add_to_collection(tf.compat.v1.GraphKeys.GLOBAL_STEP, step)
    return step


class PolynomialDecay(LearningRateFunction):
  """Polynomial decay of the learning rate over the global step.

  Follows `tf.compat.v1.train.polynomial_decay` with the global step of
  `tf.compat.v1.train.get_or_create_global_step()`, and always returns a
  float32 rate (also for an int rate such as `PolynomialDecay(1, 100)`).
  Works in TF1 graph mode (returns a tensor to run in a session), in eager
  mode (returns the value at the current step; the global step is a variable,
  so later calls see its updates) and inside `tf.function`, also when no
  global step exists yet when the function is traced (it is then created
  outside the function, like the global step of eager mode).

  The arguments are stored as given, so `str()` is monolith's: e.g.
  `PolynomialDecay(0.1, 100)` and `PolynomialDecay(0.1, 100.0)` print
  `decay_steps=100` and `decay_steps=100.0`, as in monolith. Their
  `HashTableConfigInstance` strings differ, so slots using them do not share
  a table: pass the same values of the same types to share one.

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
      initial_learning_rate: The learning rate at step 0, a number >= 0.
      decay_steps: Number of steps over which the rate decays, > 0.
      end_learning_rate: The learning rate after `decay_steps` steps, >= 0.
      power: The power of the polynomial, a finite number.
      cycle: Whether to restart the decay after `decay_steps` steps.
      name: Optional name of the decay op.

    Raises:
      TypeError: If an argument has the wrong type (numbers are int, float or
        NumPy numbers, not bool).
      ValueError: If a rate is negative, `decay_steps <= 0`, or a number is
        NaN or infinite. The message names the argument.
    """
    _check_number("initial_learning_rate", initial_learning_rate, low=0)
    _check_number("decay_steps", decay_steps, low=0, low_open=True)
    _check_number("end_learning_rate", end_learning_rate, low=0)
    _check_number("power", power)
    if not isinstance(cycle, (bool, np.bool_)):
      raise TypeError(
          "PolynomialDecay: cycle must be a bool, got {} {!r}".format(
              type(cycle).__name__, cycle))
    if name is not None and not isinstance(name, str):
      raise TypeError("PolynomialDecay: name must be a str or None, got {} "
                      "{!r}".format(type(name).__name__, name))
    self.initial_learning_rate = initial_learning_rate
    self.decay_steps = decay_steps
    self.end_learning_rate = end_learning_rate
    self.power = power
    self.cycle = cycle
    self.name = name

  def __call__(self) -> tf.Tensor:
    """Returns the decayed learning rate at the current global step.

    Returns:
      A scalar float32 tensor with the learning rate.
    """
    # Python floats become float32 tensors. TF computes the decay in the
    # dtype of the initial rate: an int rate fails, a float64 one would give
    # a float64 rate.
    decayed = tf.compat.v1.train.polynomial_decay(
        float(self.initial_learning_rate),
        _global_step(),
        self.decay_steps,
        end_learning_rate=float(self.end_learning_rate),
        power=float(self.power),
        cycle=bool(self.cycle),
        name=self.name)
    # In eager mode TF returns a function that computes the rate when called.
    if callable(decayed):
      decayed = decayed()
    return decayed
