"""Config objects that emit the `monolith.hash_table` protos of a hash table.

Drop-in for monolith's `monolith.native_training.entry`: the optimizer,
initializer and compressor wrappers keep monolith's names, constructor
signatures and defaults, store their arguments as attributes named after the
proto fields, and `as_proto()` sets exactly the fields whose value is not
`None`, so the serialized bytes equal monolith's.

Beyond monolith:

* Arguments are validated at construction (a valid config keeps its bytes).
  `None` (unset) always passes, except for `BatchSoftmaxInitializer`.
  Numbers are `int`, `float` or numpy scalars, never `bool` (`TypeError`);
  float fields must be finite float32 values, integer fields must be integers
  in the range of their proto type; bool fields take `bool` only. Ranges
  (`ValueError`), checked on the value as stored in float32:

  | argument                                         | allowed          |
  |--------------------------------------------------|------------------|
  | learning_rate, initial_accumulator_value,        | >= 0             |
  | weight_decay_factor, epsilon, beta (FTRL/group), |                  |
  | l1_regularization, l2_regularization, lambda_    |                  |
  | beta1, beta2, momentum, averaging_ratio          | [0, 1)           |
  | warmup_steps                                     | int64, >= 0      |
  | hessian_compression_times                        | int32, >= 1      |
  | dynamic_wd_temperature, constant, minval, maxval | any finite       |
  | minval, maxval (RandomUniformInitializer)        | minval <= maxval |
  | init_step_interval (BatchSoftmaxInitializer)     | required, >= 1   |
  | step_size (OneBitCompressor)                     | int64, >= 1      |
  | amplitude (OneBitCompressor)                     | >= 0             |
  | fixed_range (FixedR8Compressor)                  | > 0              |
  | dim_size (CombineAsSegment)                      | int32, >= 1      |
  | initial_capacity (CuckooHashTableConfig)         | uint64 (>= 0)    |
  | feature_evict_every_n_hours                      | int32, >= 0      |

* Like monolith, `CombineAsSegment` and
  `StochasticRoundingFloat16OptimizerWrapper` accept any object with an
  `as_proto()` method (e.g. in-house wrapper classes); one returning the
  wrong message type raises `TypeError` naming the expected type.
  `HashTableConfigInstance` checks its arguments' types at construction.
* `OnesInitializer` and `DcOptimizer` cover the proto's `ones` and `dc`.
* Wrappers have `__repr__`, `__eq__` (same class and same proto) and
  `from_proto()`; `build_embedding_hash_table_config`, `config_to_pbtxt` and
  `config_from_pbtxt` build and (de)serialize whole table configs.

Example:

  segment = CombineAsSegment(
      16, RandomUniformInitializer(-0.01, 0.01),
      AdagradOptimizer(learning_rate=0.05), Fp16Compressor())
  table = build_embedding_hash_table_config(
      [segment], CuckooHashTableConfig(initial_capacity=1 << 20))
  instance = HashTableConfigInstance(table, [0.05])
"""

import abc
import dataclasses
import math
import numbers
from typing import (Any, Callable, Dict, List, Mapping, Optional, Sequence,
                    Tuple, Type, Union)

from google.protobuf import descriptor
from google.protobuf import message
from google.protobuf import text_format
import numpy as np
import tensorflow as tf

from monolith.native_training.runtime.hash_table import embedding_hash_table_pb2

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT_RANGES = {
    "int32": (-(1 << 31), (1 << 31) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
    "uint64": (0, (1 << 64) - 1),
}


def _convert_to_proto(obj: object, proto: message.Message) -> None:
  """Selects `proto` in its parent and copies `obj`'s non-None attributes.

  This is monolith's emission rule: every public attribute of `obj` is named
  after a field of `proto`, and exactly those that are not `None` are set.
  NumPy scalars are set as the equal Python scalar (same bytes): protobuf 4
  reads a `numpy.bool_` through `__index__`, which NumPy deprecates.

  Args:
    obj: The wrapper whose attributes are copied.
    proto: The (sub-)message to fill.
  """
  proto.SetInParent()
  for name, value in vars(obj).items():
    if value is not None and not name.startswith("_"):
      if isinstance(value, np.generic):
        value = value.item()
      setattr(proto, name, value)


def _number_text(bound: float) -> str:
  return "{:g}".format(bound)


@dataclasses.dataclass(frozen=True)
class _Number:
  """Validates a number argument stored in a proto field of type `kind`.

  Attributes:
    kind: "float" (a float32 field), "int32", "int64" or "uint64".
    low: Lower bound, or None.
    high: Upper bound, or None.
    low_open: Whether `low` itself is excluded.
    high_open: Whether `high` itself is excluded.
    required: Whether `None` is rejected.
  """
  kind: str = "float"
  low: Optional[float] = None
  high: Optional[float] = None
  low_open: bool = False
  high_open: bool = False
  required: bool = False

  def range_text(self) -> str:
    """Returns the allowed range in words, e.g. "in [0, 1)" or ">= 0"."""
    if self.low is not None and self.high is not None:
      return "in {}{}, {}{}".format("(" if self.low_open else "[",
                                    _number_text(self.low),
                                    _number_text(self.high),
                                    ")" if self.high_open else "]")
    if self.low is not None:
      return "{} {}".format(">" if self.low_open else ">=",
                            _number_text(self.low))
    if self.high is not None:
      return "{} {}".format("<" if self.high_open else "<=",
                            _number_text(self.high))
    return "any value"

  def _in_range(self, number: float) -> bool:
    if self.low is not None:
      if number < self.low or (self.low_open and number == self.low):
        return False
    if self.high is not None:
      if number > self.high or (self.high_open and number == self.high):
        return False
    return True

  def __call__(self, owner: str, arg: str, value: Any) -> None:
    """Raises if `value` is not a valid `arg` of `owner`.

    Args:
      owner: Name of the class or function, used in the messages.
      arg: Name of the argument, used in the messages.
      value: The value to check.

    Raises:
      TypeError: If `value` has the wrong type (a bool is not a number).
      ValueError: If `value` is outside the proto type's or the allowed range.
    """
    is_float = self.kind == "float"
    wanted = "a number (int or float)" if is_float else "an integer"
    if value is None:
      if self.required:
        raise TypeError("{}: {} must be {}, got None".format(
            owner, arg, wanted))
      return
    allowed = (int, float, np.integer,
               np.floating) if is_float else (int, np.integer)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, allowed):
      raise TypeError("{}: {} must be {}, got {} {!r}".format(
          owner, arg, wanted,
          type(value).__name__, value))
    if is_float:
      try:
        as_float = float(value)
      except OverflowError:
        as_float = math.inf
      if not abs(as_float) <= _FLOAT32_MAX:  # Also rejects NaN.
        raise ValueError(
            "{}: {} must be a finite float32 value (|x| <= {!r}), got {!r}".
            format(owner, arg, _FLOAT32_MAX, value))
      # The range applies to the value as stored in the float32 field.
      number = float(np.float32(as_float))
      stored = "" if number == as_float else " ({!r} as float32)".format(number)
    else:
      number = int(value)
      low, high = _INT_RANGES[self.kind]
      if not low <= number <= high:
        raise ValueError("{}: {} must fit in {} [{}, {}], got {!r}".format(
            owner, arg, self.kind, low, high, value))
      stored = ""
    if not self._in_range(number):
      raise ValueError("{}: {} must be {}, got {!r}{}".format(
          owner, arg, self.range_text(), value, stored))


@dataclasses.dataclass(frozen=True)
class _Bool:
  """Validates a bool argument (`bool` or `numpy.bool_`; `None` passes)."""

  def __call__(self, owner: str, arg: str, value: Any) -> None:
    """Raises TypeError if `value` is neither None nor a bool."""
    if value is not None and not isinstance(value, (bool, np.bool_)):
      raise TypeError("{}: {} must be a bool, got {} {!r}".format(
          owner, arg,
          type(value).__name__, value))


_Check = Union[_Number, _Bool]

_ANY_FLOAT = _Number()
_NON_NEGATIVE = _Number(low=0)
_POSITIVE = _Number(low=0, low_open=True)
_UNIT_INTERVAL = _Number(low=0, high=1, high_open=True)  # [0, 1)
_STEPS = _Number(kind="int64", low=0)
_BOOL = _Bool()


class _ProtoWrapper:
  """Table-driven storage, validation, emission, repr, eq and from_proto.

  A concrete wrapper declares its oneof member and a table of its constructor
  arguments; its constructor passes `locals()` to `_store`:

    class SgdOptimizer(_ProtoWrapper, Optimizer):
      _ONEOF = "sgd"
      _FIELDS = {"learning_rate": ("learning_rate", _NON_NEGATIVE)}

      def __init__(self, learning_rate=None):
        self._store(locals())

  The config message class `_CONFIG_CLASS` comes from the abstract base
  (`Optimizer`, `Initializer` or `Compressor`).
  """

  _CONFIG_CLASS: Type[message.Message]
  _ONEOF: str
  # Constructor argument -> (proto field name, check), in signature order.
  _FIELDS: Mapping[str, Tuple[str, _Check]] = {}

  def _store(self, args: Mapping[str, Any]) -> None:
    """Validates the constructor arguments and stores them by field name."""
    owner = type(self).__name__
    for arg, (_, check) in self._FIELDS.items():
      check(owner, arg, args[arg])
    self._check_together(args)
    for arg, (field, _) in self._FIELDS.items():
      setattr(self, field, args[arg])

  def _check_together(self, args: Mapping[str, Any]) -> None:
    """Checks constraints between arguments; none by default."""

  def as_proto(self) -> message.Message:
    """Returns the config message with this wrapper's oneof member selected.

    Exactly the attributes that are not None are set in the member.
    """
    config = self._CONFIG_CLASS()
    _convert_to_proto(self, getattr(config, self._ONEOF))
    return config

  @classmethod
  def _from_member(cls, member: message.Message) -> "_ProtoWrapper":
    """Rebuilds a wrapper from its oneof member message."""
    args = {
        arg: _field_value(member, field) if member.HasField(field) else None
        for arg, (field, _) in cls._FIELDS.items()
    }
    wrapper = cls(**args)
    # Fields no argument maps to (e.g. `dim_size`) are kept as attributes,
    # which `as_proto` emits like monolith's `_convert_to_proto`.
    for field, value in member.ListFields():
      if not hasattr(wrapper, field.name):
        setattr(wrapper, field.name, value)
    return wrapper

  def __repr__(self) -> str:
    names = {field: arg for arg, (field, _) in self._FIELDS.items()}
    items = ", ".join("{}={!r}".format(names.get(field, field), value)
                      for field, value in vars(self).items()
                      if field in names or value is not None)
    return "{}({})".format(type(self).__name__, items)

  def __eq__(self, other: Any) -> bool:
    if not isinstance(other, _ProtoWrapper):
      return NotImplemented
    return type(self) is type(other) and self.as_proto() == other.as_proto()

  def __hash__(self) -> int:
    return hash((type(self), self.as_proto().SerializeToString()))


def _field_value(member: message.Message, field: str) -> Any:
  """Returns a field's value; a float field as its shortest float32 decimal.

  E.g. a float field holding 0.1 reads as 0.10000000149011612 in Python;
  this returns 0.1, which is stored as the same float32.
  """
  value = getattr(member, field)
  field_type = member.DESCRIPTOR.fields_by_name[field].type
  if field_type == descriptor.FieldDescriptor.TYPE_FLOAT:
    return float(str(np.float32(value)))
  return value


def _wrapper_from_config(cls: type, config: message.Message,
                         config_class: Type[message.Message],
                         registry: Mapping[str, type]) -> Any:
  """Rebuilds the wrapper of `config` (oneof `type`) using `registry`."""
  where = "{}.from_proto".format(cls.__name__)
  if not isinstance(config, config_class):
    raise TypeError("{}: expected {} message, got {} {!r}".format(
        where, _with_article(config_class.__name__),
        type(config).__name__, config))
  member = config.WhichOneof("type")
  if member is None:
    raise ValueError("{}: no member of oneof 'type' is set in {}".format(
        where, config_class.__name__))
  if issubclass(cls, _ProtoWrapper) and cls._ONEOF == member:
    wrapper_class = cls  # E.g. BatchSoftmaxInitializer shares `constants`.
  elif member in registry:
    wrapper_class = registry[member]
  else:
    raise ValueError("{}: {} member {!r} has no wrapper class".format(
        where, config_class.__name__, member))
  return wrapper_class._from_member(getattr(config, member))


def _check_from_proto_result(cls: type, wrapper: Any, member: str) -> Any:
  if not isinstance(wrapper, cls):
    raise ValueError("{}.from_proto: the config selects {!r}, which is {}, "
                     "not {}".format(cls.__name__, member,
                                     _with_article(type(wrapper).__name__),
                                     _with_article(cls.__name__)))
  return wrapper


class Optimizer(abc.ABC):
  """Abstract optimizer config of a hash-table segment.

  Example:

    opt = Optimizer.from_proto(AdamOptimizer(learning_rate=0.01).as_proto())
    opt  # AdamOptimizer(learning_rate=0.01, beta1=0.9, beta2=0.99, ...)
  """

  _CONFIG_CLASS = embedding_hash_table_pb2.OptimizerConfig

  @abc.abstractmethod
  def as_proto(self) -> embedding_hash_table_pb2.OptimizerConfig:
    """Returns the `OptimizerConfig` message of this optimizer."""

  @classmethod
  def from_proto(
      cls, config: embedding_hash_table_pb2.OptimizerConfig) -> "Optimizer":
    """Rebuilds the optimizer wrapper of an `OptimizerConfig`.

    `stochastic_rounding_float16: true` gives a
    `StochasticRoundingFloat16OptimizerWrapper` around the optimizer.

    Args:
      config: The message, e.g. from `as_proto()` or a parsed pbtxt.

    Returns:
      A wrapper `w` with `w.as_proto() == config`.

    Raises:
      TypeError: If `config` is not an `OptimizerConfig`.
      ValueError: If no optimizer is selected, a field holds an invalid value,
        `stochastic_rounding_float16` is explicitly false, or the result is
        not an instance of `cls`.
    """
    wrapper = _wrapper_from_config(cls, config,
                                   embedding_hash_table_pb2.OptimizerConfig,
                                   _OPTIMIZERS)
    if config.HasField("stochastic_rounding_float16"):
      if not config.stochastic_rounding_float16:
        raise ValueError(
            "{}.from_proto: stochastic_rounding_float16 is explicitly false, "
            "which no wrapper emits".format(cls.__name__))
      wrapper = StochasticRoundingFloat16OptimizerWrapper(wrapper)
    return _check_from_proto_result(cls, wrapper, config.WhichOneof("type"))


class StochasticRoundingFloat16OptimizerWrapper(Optimizer):
  """Stores the wrapped optimizer's state in float16, stochastically rounded.

  `as_proto()` is (a copy of) the wrapped optimizer's message with
  `stochastic_rounding_float16 = True`.

  Args:
    optimizer: The `Optimizer` to wrap, or, as in monolith, any object whose
      `as_proto()` returns an `OptimizerConfig` (e.g. an in-house wrapper
      class that does not derive from `Optimizer`).

  Raises:
    TypeError: If `optimizer` is neither an `Optimizer` nor has an
      `as_proto()`, or its `as_proto()` returns something else than an
      `OptimizerConfig`.

  Example:

    opt = StochasticRoundingFloat16OptimizerWrapper(AdagradOptimizer(0.01))
    opt.as_proto().stochastic_rounding_float16  # True
  """

  def __init__(self, optimizer: Optimizer):
    if not isinstance(optimizer, Optimizer):
      # A duck-typed optimizer: check what it emits now, not at first use.
      self._optimizer_proto(optimizer)
    self._optimizer = optimizer

  def _optimizer_proto(
      self, optimizer: Any) -> embedding_hash_table_pb2.OptimizerConfig:
    return _as_proto_of(
        type(self).__name__, "optimizer must be an Optimizer", optimizer,
        embedding_hash_table_pb2.OptimizerConfig)

  @property
  def optimizer(self) -> Optimizer:
    """The wrapped optimizer."""
    return self._optimizer

  def as_proto(self) -> embedding_hash_table_pb2.OptimizerConfig:
    config = embedding_hash_table_pb2.OptimizerConfig()
    config.CopyFrom(self._optimizer_proto(self._optimizer))
    config.stochastic_rounding_float16 = True
    return config

  def __repr__(self) -> str:
    return "{}({!r})".format(type(self).__name__, self._optimizer)

  def __eq__(self, other: Any) -> bool:
    if not isinstance(other, StochasticRoundingFloat16OptimizerWrapper):
      return NotImplemented
    return (type(self) is type(other) and self._optimizer == other._optimizer)

  def __hash__(self) -> int:
    return hash((type(self), self._optimizer))


class SgdOptimizer(_ProtoWrapper, Optimizer):
  """Plain SGD (`OptimizerConfig.sgd`).

  Args:
    learning_rate: Learning rate, >= 0; None leaves the proto default.

  Raises:
    TypeError, ValueError: On an invalid argument (see the module docstring).

  Example:

    SgdOptimizer(learning_rate=0.1).as_proto()  # sgd { learning_rate: 0.1 }
  """

  _ONEOF = "sgd"
  _FIELDS = {"learning_rate": ("learning_rate", _NON_NEGATIVE)}

  def __init__(self, learning_rate: Optional[float] = None):
    self._store(locals())


class AdagradOptimizer(_ProtoWrapper, Optimizer):
  """Adagrad (`OptimizerConfig.adagrad`).

  Args:
    learning_rate: Learning rate, >= 0.
    initial_accumulator_value: Initial squared-gradient sum, >= 0.
    hessian_compression_times: int32 >= 1.
    warmup_steps: int64 >= 0.
    weight_decay_factor: >= 0.

  Raises:
    TypeError, ValueError: On an invalid argument (see the module docstring).

  Example:

    AdagradOptimizer(learning_rate=0.05, initial_accumulator_value=0.1)
  """

  _ONEOF = "adagrad"
  _FIELDS = {
      "learning_rate": ("learning_rate", _NON_NEGATIVE),
      "initial_accumulator_value": ("initial_accumulator_value", _NON_NEGATIVE),
      "hessian_compression_times": ("hessian_compression_times",
                                    _Number(kind="int32", low=1)),
      "warmup_steps": ("warmup_steps", _STEPS),
      "weight_decay_factor": ("weight_decay_factor", _NON_NEGATIVE),
  }

  def __init__(self,
               learning_rate: Optional[float] = None,
               initial_accumulator_value: Optional[float] = None,
               hessian_compression_times: Optional[int] = 1,
               warmup_steps: Optional[int] = 0,
               weight_decay_factor: Optional[float] = 0.0):
    self._store(locals())


class AdadeltaOptimizer(_ProtoWrapper, Optimizer):
  """Adadelta (`OptimizerConfig.adadelta`).

  Args:
    learning_rate: Learning rate, >= 0.
    weight_decay_factor: >= 0.
    averaging_ratio: Decay of the running averages, in [0, 1).
    epsilon: >= 0.
    warmup_steps: int64 >= 0.

  Raises:
    TypeError, ValueError: On an invalid argument (see the module docstring).

  Example:

    AdadeltaOptimizer(learning_rate=1.0, averaging_ratio=0.95)
  """

  _ONEOF = "adadelta"
  _FIELDS = {
      "learning_rate": ("learning_rate", _NON_NEGATIVE),
      "weight_decay_factor": ("weight_decay_factor", _NON_NEGATIVE),
      "averaging_ratio": ("averaging_ratio", _UNIT_INTERVAL),
      "epsilon": ("epsilon", _NON_NEGATIVE),
      "warmup_steps": ("warmup_steps", _STEPS),
  }

  def __init__(self,
               learning_rate: Optional[float] = None,
               weight_decay_factor: Optional[float] = 0.0,
               averaging_ratio: Optional[float] = 0.9,
               epsilon: Optional[float] = 0.01,
               warmup_steps: Optional[int] = 0):
    self._store(locals())


class AdamOptimizer(_ProtoWrapper, Optimizer):
  """Adam (`OptimizerConfig.adam`).

  Args:
    learning_rate: Learning rate, >= 0.
    beta1: First-moment decay, in [0, 1).
    beta2: Second-moment decay, in [0, 1).
    use_beta1_warmup: bool.
    weight_decay_factor: >= 0.
    use_nesterov: bool.
    epsilon: >= 0.
    warmup_steps: int64 >= 0.

  Raises:
    TypeError, ValueError: On an invalid argument (see the module docstring).

  Example:

    AdamOptimizer(learning_rate=0.001, beta1=0.9, beta2=0.999)
  """

  _ONEOF = "adam"
  _FIELDS = {
      "learning_rate": ("learning_rate", _NON_NEGATIVE),
      "beta1": ("beta1", _UNIT_INTERVAL),
      "beta2": ("beta2", _UNIT_INTERVAL),
      "use_beta1_warmup": ("use_beta1_warmup", _BOOL),
      "weight_decay_factor": ("weight_decay_factor", _NON_NEGATIVE),
      "use_nesterov": ("use_nesterov", _BOOL),
      "epsilon": ("epsilon", _NON_NEGATIVE),
      "warmup_steps": ("warmup_steps", _STEPS),
  }

  def __init__(self,
               learning_rate: Optional[float] = None,
               beta1: Optional[float] = 0.9,
               beta2: Optional[float] = 0.99,
               use_beta1_warmup: Optional[bool] = False,
               weight_decay_factor: Optional[float] = 0.0,
               use_nesterov: Optional[bool] = False,
               epsilon: Optional[float] = 0.01,
               warmup_steps: Optional[int] = 0):
    self._store(locals())


class AmsgradOptimizer(_ProtoWrapper, Optimizer):
  """AMSGrad (`OptimizerConfig.amsgrad`).

  Args:
    learning_rate: Learning rate, >= 0.
    beta1: First-moment decay, in [0, 1).
    beta2: Second-moment decay, in [0, 1).
    weight_decay_factor: >= 0.
    use_nesterov: bool.
    epsilon: >= 0.
    warmup_steps: int64 >= 0.

  Raises:
    TypeError, ValueError: On an invalid argument (see the module docstring).

  Example:

    AmsgradOptimizer(learning_rate=0.001)
  """

  _ONEOF = "amsgrad"
  _FIELDS = {
      "learning_rate": ("learning_rate", _NON_NEGATIVE),
      "beta1": ("beta1", _UNIT_INTERVAL),
      "beta2": ("beta2", _UNIT_INTERVAL),
      "weight_decay_factor": ("weight_decay_factor", _NON_NEGATIVE),
      "use_nesterov": ("use_nesterov", _BOOL),
      "epsilon": ("epsilon", _NON_NEGATIVE),
      "warmup_steps": ("warmup_steps", _STEPS),
  }

  def __init__(self,
               learning_rate: Optional[float] = None,
               beta1: Optional[float] = 0.9,
               beta2: Optional[float] = 0.99,
               weight_decay_factor: Optional[float] = 0.0,
               use_nesterov: Optional[bool] = False,
               epsilon: Optional[float] = 0.01,
               warmup_steps: Optional[int] = 0):
    self._store(locals())


class BatchSoftmaxOptimizer(_ProtoWrapper, Optimizer):
  """Batch-softmax optimizer (`OptimizerConfig.batch_softmax`).

  Args:
    learning_rate: Learning rate, >= 0.

  Raises:
    TypeError, ValueError: On an invalid argument (see the module docstring).

  Example:

    BatchSoftmaxOptimizer(learning_rate=0.1)
  """

  _ONEOF = "batch_softmax"
  _FIELDS = {"learning_rate": ("learning_rate", _NON_NEGATIVE)}

  def __init__(self, learning_rate: Optional[float] = None):
    self._store(locals())


class MomentumOptimizer(_ProtoWrapper, Optimizer):
  """Momentum SGD (`OptimizerConfig.momentum`).

  Args:
    learning_rate: Learning rate, >= 0.
    weight_decay_factor: >= 0.
    use_nesterov: bool.
    momentum: in [0, 1).
    warmup_steps: int64 >= 0.

  Raises:
    TypeError, ValueError: On an invalid argument (see the module docstring).

  Example:

    MomentumOptimizer(learning_rate=0.01, momentum=0.9, use_nesterov=True)
  """

  _ONEOF = "momentum"
  _FIELDS = {
      "learning_rate": ("learning_rate", _NON_NEGATIVE),
      "weight_decay_factor": ("weight_decay_factor", _NON_NEGATIVE),
      "use_nesterov": ("use_nesterov", _BOOL),
      "momentum": ("momentum", _UNIT_INTERVAL),
      "warmup_steps": ("warmup_steps", _STEPS),
  }

  def __init__(self,
               learning_rate: Optional[float] = None,
               weight_decay_factor: Optional[float] = 0.0,
               use_nesterov: Optional[bool] = False,
               momentum: Optional[float] = 0.9,
               warmup_steps: Optional[int] = 0):
    self._store(locals())


class MovingAverageOptimizer(_ProtoWrapper, Optimizer):
  """Moving average of the values (`OptimizerConfig.moving_average`).

  Args:
    momentum: Weight of the old value, in [0, 1).

  Raises:
    TypeError, ValueError: On an invalid argument (see the module docstring).

  Example:

    MovingAverageOptimizer(momentum=0.99)
  """

  _ONEOF = "moving_average"
  _FIELDS = {"momentum": ("momentum", _UNIT_INTERVAL)}

  def __init__(self, momentum: Optional[float] = 0.9):
    self._store(locals())


class RmspropOptimizer(_ProtoWrapper, Optimizer):
  """RMSProp (`OptimizerConfig.rmsprop`).

  Args:
    learning_rate: Learning rate, >= 0.
    weight_decay_factor: >= 0.
    momentum: Decay of the squared-gradient average, in [0, 1).

  Raises:
    TypeError, ValueError: On an invalid argument (see the module docstring).

  Example:

    RmspropOptimizer(learning_rate=0.01, momentum=0.9)
  """

  _ONEOF = "rmsprop"
  _FIELDS = {
      "learning_rate": ("learning_rate", _NON_NEGATIVE),
      "weight_decay_factor": ("weight_decay_factor", _NON_NEGATIVE),
      "momentum": ("momentum", _UNIT_INTERVAL),
  }

  def __init__(self,
               learning_rate: Optional[float] = None,
               weight_decay_factor: Optional[float] = 0.0,
               momentum: Optional[float] = 0.9):
    self._store(locals())


class RmspropV2Optimizer(_ProtoWrapper, Optimizer):
  """RMSProp, second variant (`OptimizerConfig.rmspropv2`).

  Args:
    learning_rate: Learning rate, >= 0.
    weight_decay_factor: >= 0.
    momentum: Decay of the squared-gradient average, in [0, 1).

  Raises:
    TypeError, ValueError: On an invalid argument (see the module docstring).

  Example:

    RmspropV2Optimizer(learning_rate=0.01)
  """

  _ONEOF = "rmspropv2"
  _FIELDS = RmspropOptimizer._FIELDS

  def __init__(self,
               learning_rate: Optional[float] = None,
               weight_decay_factor: Optional[float] = 0.0,
               momentum: Optional[float] = 0.9):
    self._store(locals())


class FTRLWithGroupSparsityOptimizer(_ProtoWrapper, Optimizer):
  """FTRL with group sparsity (`OptimizerConfig.group_ftrl`).

  Args:
    learning_rate: Learning rate, >= 0.
    initial_accumulator_value: >= 0.
    beta: >= 0.
    warmup_steps: int64 >= 0.
    l1_regularization: >= 0; stored as `l1_regularization_strength`.
    l2_regularization: >= 0; stored as `l2_regularization_strength`.

  Raises:
    TypeError, ValueError: On an invalid argument (see the module docstring).

  Example:

    FTRLWithGroupSparsityOptimizer(learning_rate=0.01, l1_regularization=1.0)
  """

  _ONEOF = "group_ftrl"
  _FIELDS = {
      "learning_rate": ("learning_rate", _NON_NEGATIVE),
      "initial_accumulator_value": ("initial_accumulator_value", _NON_NEGATIVE),
      "beta": ("beta", _NON_NEGATIVE),
      "warmup_steps": ("warmup_steps", _STEPS),
      "l1_regularization": ("l1_regularization_strength", _NON_NEGATIVE),
      "l2_regularization": ("l2_regularization_strength", _NON_NEGATIVE),
  }

  def __init__(self,
               learning_rate: Optional[float] = None,
               initial_accumulator_value: Optional[float] = None,
               beta: Optional[float] = None,
               warmup_steps: Optional[int] = 0,
               l1_regularization: Optional[float] = None,
               l2_regularization: Optional[float] = None):
    self._store(locals())


class AdaGradWithGroupLassoOptimizer(_ProtoWrapper, Optimizer):
  """Adagrad with group lasso (`OptimizerConfig.group_adagrad`).

  Args:
    learning_rate: Learning rate, >= 0.
    beta: >= 0.
    initial_accumulator_value: >= 0.
    l2_regularization: >= 0; stored as `l2_regularization_strength`.
    weight_decay_factor: >= 0.
    warmup_steps: int64 >= 0.

  Raises:
    TypeError, ValueError: On an invalid argument (see the module docstring).

  Example:

    AdaGradWithGroupLassoOptimizer(learning_rate=0.01, l2_regularization=0.1)
  """

  _ONEOF = "group_adagrad"
  _FIELDS = {
      "learning_rate": ("learning_rate", _NON_NEGATIVE),
      "beta": ("beta", _NON_NEGATIVE),
      "initial_accumulator_value": ("initial_accumulator_value", _NON_NEGATIVE),
      "l2_regularization": ("l2_regularization_strength", _NON_NEGATIVE),
      "weight_decay_factor": ("weight_decay_factor", _NON_NEGATIVE),
      "warmup_steps": ("warmup_steps", _STEPS),
  }

  def __init__(self,
               learning_rate: Optional[float] = None,
               beta: Optional[float] = None,
               initial_accumulator_value: Optional[float] = None,
               l2_regularization: Optional[float] = None,
               weight_decay_factor: Optional[float] = 0.0,
               warmup_steps: Optional[int] = 0):
    self._store(locals())


class DynamicWdAdagradOptimizer(_ProtoWrapper, Optimizer):
  """Adagrad with dynamic weight decay (`OptimizerConfig.dynamic_wd_adagrad`).

  Args:
    learning_rate: Learning rate, >= 0.
    initial_accumulator_value: >= 0.
    hessian_compression_times: int32 >= 1.
    warmup_steps: int64 >= 0.
    weight_decay_factor: >= 0.
    decouple_weight_decay: bool.
    enable_dynamic_wd: bool.
    flip_direction: bool.
    dynamic_wd_temperature: Any finite float32 value.

  Raises:
    TypeError, ValueError: On an invalid argument (see the module docstring).

  Example:

    DynamicWdAdagradOptimizer(learning_rate=0.01, weight_decay_factor=1e-4)
  """

  _ONEOF = "dynamic_wd_adagrad"
  _FIELDS = {
      "learning_rate": ("learning_rate", _NON_NEGATIVE),
      "initial_accumulator_value": ("initial_accumulator_value", _NON_NEGATIVE),
      "hessian_compression_times": ("hessian_compression_times",
                                    _Number(kind="int32", low=1)),
      "warmup_steps": ("warmup_steps", _STEPS),
      "weight_decay_factor": ("weight_decay_factor", _NON_NEGATIVE),
      "decouple_weight_decay": ("decouple_weight_decay", _BOOL),
      "enable_dynamic_wd": ("enable_dynamic_wd", _BOOL),
      "flip_direction": ("flip_direction", _BOOL),
      "dynamic_wd_temperature": ("dynamic_wd_temperature", _ANY_FLOAT),
  }

  def __init__(self,
               learning_rate: Optional[float] = None,
               initial_accumulator_value: Optional[float] = None,
               hessian_compression_times: Optional[int] = 1,
               warmup_steps: Optional[int] = 0,
               weight_decay_factor: Optional[float] = 0.0,
               decouple_weight_decay: Optional[bool] = True,
               enable_dynamic_wd: Optional[bool] = True,
               flip_direction: Optional[bool] = True,
               dynamic_wd_temperature: Optional[float] = 1.0):
    self._store(locals())


class FtrlOptimizer(_ProtoWrapper, Optimizer):
  """FTRL-proximal (`OptimizerConfig.ftrl`).

  Args:
    learning_rate: Learning rate, >= 0.
    initial_accumulator_value: >= 0.
    beta: >= 0.
    warmup_steps: int64 >= 0.
    l1_regularization: >= 0; stored as `l1_regularization_strength`.
    l2_regularization: >= 0; stored as `l2_regularization_strength`.

  Raises:
    TypeError, ValueError: On an invalid argument (see the module docstring).

  Example:

    FtrlOptimizer(learning_rate=0.05, l1_regularization=1.0, beta=1.0)
  """

  _ONEOF = "ftrl"
  _FIELDS = FTRLWithGroupSparsityOptimizer._FIELDS

  def __init__(self,
               learning_rate: Optional[float] = None,
               initial_accumulator_value: Optional[float] = None,
               beta: Optional[float] = None,
               warmup_steps: Optional[int] = 0,
               l1_regularization: Optional[float] = None,
               l2_regularization: Optional[float] = None):
    self._store(locals())


class DcOptimizer(_ProtoWrapper, Optimizer):
  """Delay-compensated optimizer (`OptimizerConfig.dc`); not in monolith.

  Args:
    lambda_: Delay-compensation strength, >= 0; stored as `lambda_`.

  Raises:
    TypeError, ValueError: On an invalid argument (see the module docstring).

  Example:

    DcOptimizer(lambda_=0.04)
  """

  _ONEOF = "dc"
  _FIELDS = {"lambda_": ("lambda_", _NON_NEGATIVE)}

  def __init__(self, lambda_: Optional[float] = None):
    self._store(locals())


class Initializer(abc.ABC):
  """Abstract initializer config of a hash-table segment.

  Example:

    Initializer.from_proto(ZerosInitializer().as_proto())  # ZerosInitializer()
  """

  _CONFIG_CLASS = embedding_hash_table_pb2.InitializerConfig

  @abc.abstractmethod
  def as_proto(self) -> embedding_hash_table_pb2.InitializerConfig:
    """Returns the `InitializerConfig` message of this initializer."""

  @classmethod
  def from_proto(
      cls, config: embedding_hash_table_pb2.InitializerConfig) -> "Initializer":
    """Rebuilds the initializer wrapper of an `InitializerConfig`.

    `constants` gives a `ConstantsInitializer`, unless called on
    `BatchSoftmaxInitializer`, which shares that member.

    Args:
      config: The message, e.g. from `as_proto()` or a parsed pbtxt.

    Returns:
      A wrapper `w` with `w.as_proto() == config`.

    Raises:
      TypeError: If `config` is not an `InitializerConfig`.
      ValueError: If no initializer is selected, a field holds an invalid
        value, or the result is not an instance of `cls`.
    """
    wrapper = _wrapper_from_config(cls, config,
                                   embedding_hash_table_pb2.InitializerConfig,
                                   _INITIALIZERS)
    return _check_from_proto_result(cls, wrapper, config.WhichOneof("type"))


class ZerosInitializer(_ProtoWrapper, Initializer):
  """Initializes embeddings with zeros (`InitializerConfig.zeros`).

  Example:

    ZerosInitializer().as_proto()  # zeros {}
  """

  _ONEOF = "zeros"

  def __init__(self):
    self._store(locals())


class OnesInitializer(_ProtoWrapper, Initializer):
  """Initializes embeddings with ones (`InitializerConfig.ones`).

  Not in monolith's Python; covers the proto's `ones` member.

  Example:

    OnesInitializer().as_proto()  # ones {}
  """

  _ONEOF = "ones"

  def __init__(self):
    self._store(locals())


class ConstantsInitializer(_ProtoWrapper, Initializer):
  """Initializes embeddings with a constant (`InitializerConfig.constants`).

  Args:
    constant: The value, any finite float32 value; None leaves it unset.

  Raises:
    TypeError, ValueError: On an invalid argument (see the module docstring).

  Example:

    ConstantsInitializer(0.5).as_proto()  # constants { constant: 0.5 }
  """

  _ONEOF = "constants"
  _FIELDS = {"constant": ("constant", _ANY_FLOAT)}

  def __init__(self, constant: Optional[float]):
    self._store(locals())


class RandomUniformInitializer(_ProtoWrapper, Initializer):
  """Uniform random initialization (`InitializerConfig.random_uniform`).

  Args:
    minval: Lower bound; None leaves the proto default (-0.05).
    maxval: Upper bound; None leaves the proto default (0.05).

  Raises:
    TypeError, ValueError: On an invalid argument, or if `minval > maxval`
      (an unset bound counts with its proto default).

  Example:

    RandomUniformInitializer(-0.01, 0.01)
  """

  _ONEOF = "random_uniform"
  _FIELDS = {
      "minval": ("minval", _ANY_FLOAT),
      "maxval": ("maxval", _ANY_FLOAT),
  }

  def __init__(self,
               minval: Optional[float] = None,
               maxval: Optional[float] = None):
    self._store(locals())

  def _check_together(self, args: Mapping[str, Any]) -> None:
    defaults = embedding_hash_table_pb2.RandomUniformInitializerConfig()
    shown, stored = {}, {}
    for arg in ("minval", "maxval"):
      if args[arg] is None:
        stored[arg] = getattr(defaults, arg)
        shown[arg] = str(np.float32(stored[arg])) + " (proto default)"
      else:
        shown[arg] = repr(args[arg])
        # Compare the values as stored in the float32 fields.
        stored[arg] = float(np.float32(args[arg]))
    if stored["minval"] > stored["maxval"]:
      raise ValueError(
          "{}: minval must be <= maxval, got minval={}, maxval={}".format(
              type(self).__name__, shown["minval"], shown["maxval"]))


class BatchSoftmaxInitializer(_ProtoWrapper, Initializer):
  """Initializer of batch-softmax tables (`InitializerConfig.constants`).

  Args:
    init_step_interval: Required, >= 1; stored as `constant`.

  Raises:
    TypeError: If `init_step_interval` is not a number (or None).
    ValueError: If `init_step_interval < 1`.

  Example:

    BatchSoftmaxInitializer(10).as_proto()  # constants { constant: 10 }
  """

  _ONEOF = "constants"
  _FIELDS = {
      "init_step_interval": ("constant", _Number(low=1, required=True)),
  }

  def __init__(self, init_step_interval: float):
    self._store(locals())


class Compressor(abc.ABC):
  """Abstract float compressor config of a hash-table segment.

  Example:

    Compressor.from_proto(Fp16Compressor().as_proto())  # Fp16Compressor()
  """

  _CONFIG_CLASS = embedding_hash_table_pb2.FloatCompressorConfig

  @abc.abstractmethod
  def as_proto(self) -> embedding_hash_table_pb2.FloatCompressorConfig:
    """Returns the `FloatCompressorConfig` message of this compressor."""

  @classmethod
  def from_proto(
      cls,
      config: embedding_hash_table_pb2.FloatCompressorConfig) -> "Compressor":
    """Rebuilds the compressor wrapper of a `FloatCompressorConfig`.

    Args:
      config: The message, e.g. from `as_proto()` or a parsed pbtxt.

    Returns:
      A wrapper `w` with `w.as_proto() == config`.

    Raises:
      TypeError: If `config` is not a `FloatCompressorConfig`.
      ValueError: If no compressor is selected, a field holds an invalid
        value, or the result is not an instance of `cls`.
    """
    wrapper = _wrapper_from_config(
        cls, config, embedding_hash_table_pb2.FloatCompressorConfig,
        _COMPRESSORS)
    return _check_from_proto_result(cls, wrapper, config.WhichOneof("type"))


class OneBitCompressor(_ProtoWrapper, Compressor):
  """One bit per value with a learned scale (`FloatCompressorConfig.one_bit`).

  Args:
    step_size: int64 >= 1.
    amplitude: >= 0.

  Raises:
    TypeError, ValueError: On an invalid argument (see the module docstring).

  Example:

    OneBitCompressor(step_size=100, amplitude=0.1)
  """

  _ONEOF = "one_bit"
  _FIELDS = {
      "step_size": ("step_size", _Number(kind="int64", low=1)),
      "amplitude": ("amplitude", _NON_NEGATIVE),
  }

  def __init__(self,
               step_size: Optional[int] = 200,
               amplitude: Optional[float] = 0.05):
    self._store(locals())


class FixedR8Compressor(_ProtoWrapper, Compressor):
  """8-bit fixed point over [-r, r] (`FloatCompressorConfig.fixed_r8`).

  Args:
    fixed_range: The range `r`, > 0; stored as `r`.

  Raises:
    TypeError, ValueError: On an invalid argument (see the module docstring).

  Example:

    FixedR8Compressor(fixed_range=2.0).as_proto()  # fixed_r8 { r: 2 }
  """

  _ONEOF = "fixed_r8"
  _FIELDS = {"fixed_range": ("r", _POSITIVE)}

  def __init__(self, fixed_range: Optional[float] = 1.0):
    self._store(locals())


class Fp16Compressor(_ProtoWrapper, Compressor):
  """IEEE half precision (`FloatCompressorConfig.fp16`).

  Example:

    Fp16Compressor().as_proto()  # fp16 {}
  """

  _ONEOF = "fp16"

  def __init__(self):
    self._store(locals())


class Fp32Compressor(_ProtoWrapper, Compressor):
  """Plain 32-bit floats (`FloatCompressorConfig.fp32`).

  Example:

    Fp32Compressor().as_proto()  # fp32 {}
  """

  _ONEOF = "fp32"

  def __init__(self):
    self._store(locals())


# The wrapper of each member of the configs' `oneof type`.
_OPTIMIZERS: Dict[str, Type[Optimizer]] = {
    "adagrad": AdagradOptimizer,
    "sgd": SgdOptimizer,
    "ftrl": FtrlOptimizer,
    "dynamic_wd_adagrad": DynamicWdAdagradOptimizer,
    "adadelta": AdadeltaOptimizer,
    "adam": AdamOptimizer,
    "amsgrad": AmsgradOptimizer,
    "momentum": MomentumOptimizer,
    "moving_average": MovingAverageOptimizer,
    "rmsprop": RmspropOptimizer,
    "rmspropv2": RmspropV2Optimizer,
    "dc": DcOptimizer,
    "group_ftrl": FTRLWithGroupSparsityOptimizer,
    "batch_softmax": BatchSoftmaxOptimizer,
    "group_adagrad": AdaGradWithGroupLassoOptimizer,
}
_INITIALIZERS: Dict[str, Type[Initializer]] = {
    "zeros": ZerosInitializer,
    "random_uniform": RandomUniformInitializer,
    "ones": OnesInitializer,
    "constants": ConstantsInitializer,
}
_COMPRESSORS: Dict[str, Type[Compressor]] = {
    "fp32": Fp32Compressor,
    "fp16": Fp16Compressor,
    "fixed_r8": FixedR8Compressor,
    "one_bit": OneBitCompressor,
}


def _with_article(name: str) -> str:
  """Returns `name` after "a" or "an", e.g. "an AdamOptimizer"."""
  return "{} {}".format(
      "an" if name[:1].upper() in ("A", "E", "I", "O", "U") else "a", name)


def _as_proto_of(owner: str, wanted: str, value: Any,
                 config_class: Type[message.Message]) -> message.Message:
  """Returns `value.as_proto()`, which must be a `config_class` message.

  Like monolith, this accepts any object with an `as_proto()` method (e.g. an
  in-house wrapper class that does not derive from the abstract base).

  Args:
    owner: Name of the class or function, used in the message.
    wanted: What the argument must be, e.g. "optimizer must be an Optimizer",
      used in the message.
    value: A wrapper, or any object with an `as_proto()` method.
    config_class: The message class `as_proto()` must return.

  Raises:
    TypeError: If `value` has no `as_proto()`, or it returns something else
      than a `config_class` message.
  """
  error = "{}: {}, got {} {!r}".format(owner, wanted,
                                       type(value).__name__, value)
  as_proto = getattr(value, "as_proto", None)
  if not callable(as_proto):
    raise TypeError(error)
  config = as_proto()
  if not isinstance(config, config_class):
    returned = "None" if config is None else _with_article(
        type(config).__name__)
    raise TypeError("{}, whose as_proto() returned {}, not {} message".format(
        error, returned, _with_article(config_class.__name__)))
  return config


def _segment_part(name: str, value: Any, wrapper_class: type,
                  config_class: Type[message.Message]) -> message.Message:
  """Returns `value` as a `config_class` message, or raises TypeError.

  Like monolith, any object with an `as_proto()` method is accepted (a
  wrapper class need not derive from `wrapper_class`), as long as it returns
  a `config_class` message.
  """
  if isinstance(value, config_class):
    return value
  return _as_proto_of(
      "CombineAsSegment", "{} must be {} or {} message".format(
          name, _with_article(wrapper_class.__name__),
          _with_article(config_class.__name__)), value, config_class)


def CombineAsSegment(  # pylint: disable=invalid-name
    dim_size: int,
    initializer: Union[Initializer, embedding_hash_table_pb2.InitializerConfig],
    optimizer: Union[Optimizer, embedding_hash_table_pb2.OptimizerConfig],
    compressor: Union[Compressor,
                      embedding_hash_table_pb2.FloatCompressorConfig]
) -> embedding_hash_table_pb2.EntryConfig.Segment:
  """Combines the configs of one embedding segment.

  As in monolith, any object whose `as_proto()` returns the right message
  (e.g. an in-house wrapper class) can stand in for an initializer, optimizer
  or compressor wrapper.

  Args:
    dim_size: Number of embedding dimensions of the segment, int32 >= 1.
    initializer: An `Initializer` or an `InitializerConfig`.
    optimizer: An `Optimizer` or an `OptimizerConfig`.
    compressor: A `Compressor` or a `FloatCompressorConfig`.

  Returns:
    An `EntryConfig.Segment` with `dim_size` and the three configs.

  Raises:
    TypeError: If an argument has the wrong type, or its `as_proto()`
      returns the wrong message type.
    ValueError: If `dim_size` is out of range.

  Example:

    CombineAsSegment(8, ZerosInitializer(), SgdOptimizer(0.1), Fp32Compressor())
  """
  _Number(kind="int32", low=1, required=True)("CombineAsSegment", "dim_size",
                                              dim_size)
  segment = embedding_hash_table_pb2.EntryConfig.Segment()
  segment.dim_size = dim_size
  segment.init_config.CopyFrom(
      _segment_part("initializer", initializer, Initializer,
                    embedding_hash_table_pb2.InitializerConfig))
  segment.opt_config.CopyFrom(
      _segment_part("optimizer", optimizer, Optimizer,
                    embedding_hash_table_pb2.OptimizerConfig))
  segment.comp_config.CopyFrom(
      _segment_part("compressor", compressor, Compressor,
                    embedding_hash_table_pb2.FloatCompressorConfig))
  return segment


class HashTableConfig(abc.ABC):
  """Abstract hash-table type of an `EmbeddingHashTableConfig`.

  Example:

    table = embedding_hash_table_pb2.EmbeddingHashTableConfig()
    CuckooHashTableConfig().mutate_table(table)  # Selects `cuckoo`.
  """

  @abc.abstractmethod
  def mutate_table(
      self,
      table_config: embedding_hash_table_pb2.EmbeddingHashTableConfig) -> None:
    """Writes this table type's settings into `table_config`."""


class CuckooHashTableConfig(HashTableConfig):
  """A cuckoo hash table, optionally evicting stale features.

  Args:
    initial_capacity: Initial number of entries, uint64 (>= 0).
    feature_evict_every_n_hours: If > 0, evict features not updated for that
      many hours; int32 >= 0.

  Raises:
    TypeError, ValueError: On an invalid argument (see the module docstring).

  Example:

    CuckooHashTableConfig(initial_capacity=1 << 20,
                          feature_evict_every_n_hours=24)
  """

  def __init__(self,
               initial_capacity: int = 1,
               feature_evict_every_n_hours: int = 0):
    owner = type(self).__name__
    _Number(kind="uint64", required=True)(owner, "initial_capacity",
                                          initial_capacity)
    _Number(kind="int32", low=0,
            required=True)(owner, "feature_evict_every_n_hours",
                           feature_evict_every_n_hours)
    self._initial_capacity = initial_capacity
    self._feature_evict_every_n_hours = feature_evict_every_n_hours

  @property
  def initial_capacity(self) -> int:
    """Initial number of entries."""
    return self._initial_capacity

  @property
  def feature_evict_every_n_hours(self) -> int:
    """Eviction period in hours; 0 disables eviction."""
    return self._feature_evict_every_n_hours

  def mutate_table(
      self,
      table_config: embedding_hash_table_pb2.EmbeddingHashTableConfig) -> None:
    """Sets the capacity, selects `cuckoo` and, if enabled, the eviction.

    Args:
      table_config: The message to modify in place.
    """
    table_config.initial_capacity = self._initial_capacity
    table_config.cuckoo.SetInParent()
    if self._feature_evict_every_n_hours > 0:
      table_config.enable_feature_eviction = True
      table_config.feature_evict_every_n_hours = (
          self._feature_evict_every_n_hours)

  def __repr__(self) -> str:
    return "{}(initial_capacity={!r}, feature_evict_every_n_hours={!r})".format(
        type(self).__name__, self._initial_capacity,
        self._feature_evict_every_n_hours)

  def __eq__(self, other: Any) -> bool:
    if not isinstance(other, CuckooHashTableConfig):
      return NotImplemented
    return (type(self) is type(other) and
            self._initial_capacity == other._initial_capacity and
            self._feature_evict_every_n_hours
            == other._feature_evict_every_n_hours)

  def __hash__(self) -> int:
    return hash(
        (type(self), self._initial_capacity, self._feature_evict_every_n_hours))


def build_embedding_hash_table_config(
    segments: Sequence[embedding_hash_table_pb2.EntryConfig.Segment],
    table_config: Optional[HashTableConfig] = None
) -> embedding_hash_table_pb2.EmbeddingHashTableConfig:
  """Builds a whole `EmbeddingHashTableConfig` from segments and a table type.

  Args:
    segments: The entry's segments, e.g. from `CombineAsSegment`, in order.
    table_config: The table type; defaults to `CuckooHashTableConfig()`.

  Returns:
    The config with `entry_config.segments` and the table type's settings.

  Raises:
    TypeError: If a segment is not an `EntryConfig.Segment` or `table_config`
      is not a `HashTableConfig`.
    ValueError: If `segments` is empty.

  Example:

    build_embedding_hash_table_config(
        [CombineAsSegment(8, ZerosInitializer(), SgdOptimizer(),
                          Fp32Compressor())],
        CuckooHashTableConfig(initial_capacity=1024))
  """
  segment_class = embedding_hash_table_pb2.EntryConfig.Segment
  if isinstance(segments, (str, bytes, message.Message)):
    raise TypeError("build_embedding_hash_table_config: segments must be a "
                    "sequence of EntryConfig.Segment, got {} {!r}".format(
                        type(segments).__name__, segments))
  segments = list(segments)
  if not segments:
    raise ValueError("build_embedding_hash_table_config: segments is empty; "
                     "give at least one EntryConfig.Segment")
  for index, segment in enumerate(segments):
    if not isinstance(segment, segment_class):
      raise TypeError("build_embedding_hash_table_config: segments[{}] must "
                      "be an EntryConfig.Segment, got {} {!r}".format(
                          index,
                          type(segment).__name__, segment))
  if table_config is None:
    table_config = CuckooHashTableConfig()
  if not isinstance(table_config, HashTableConfig):
    raise TypeError("build_embedding_hash_table_config: table_config must be "
                    "a HashTableConfig, got {} {!r}".format(
                        type(table_config).__name__, table_config))
  config = embedding_hash_table_pb2.EmbeddingHashTableConfig()
  config.entry_config.segments.extend(segments)
  table_config.mutate_table(config)
  return config


def config_to_pbtxt(config: message.Message) -> str:
  """Returns `config` (any of these messages) in protobuf text format.

  Args:
    config: The message, e.g. an `EmbeddingHashTableConfig`.

  Returns:
    The text format, readable by `config_from_pbtxt` and by monolith.

  Raises:
    TypeError: If `config` is not a protobuf message.

  Example:

    print(config_to_pbtxt(SgdOptimizer(0.5).as_proto()))  # sgd {...}
  """
  if not isinstance(config, message.Message):
    raise TypeError("config_to_pbtxt: config must be a protobuf message, got "
                    "{} {!r}".format(type(config).__name__, config))
  return text_format.MessageToString(config)


def config_from_pbtxt(
    text: str,
    message_class: Type[message.Message] = (
        embedding_hash_table_pb2.EmbeddingHashTableConfig)
) -> message.Message:
  """Parses a config written in protobuf text format.

  Args:
    text: The text format, e.g. from `config_to_pbtxt`.
    message_class: The message type; defaults to `EmbeddingHashTableConfig`.

  Returns:
    A new `message_class` message.

  Raises:
    google.protobuf.text_format.ParseError: If `text` does not parse.

  Example:

    config_from_pbtxt("initial_capacity: 8 cuckoo {}")
  """
  return text_format.Parse(text, message_class())


_LearningRate = Union[float, tf.Tensor, Callable[[], tf.Tensor]]


def _is_learning_rate(value: Any) -> bool:
  """Whether `value` is a number, a tensor or a callable (not a bool)."""
  if isinstance(value, (bool, np.bool_)):
    return False
  return (callable(value) or tf.is_tensor(value) or
          isinstance(value, (numbers.Real, np.ndarray)))


class HashTableConfigInstance:
  """A table config plus its segments' learning rates.

  Two instances describe the same table iff their `str()` are equal.

  Attributes:
    extra_restore_names: A plain list attribute, as in monolith, whose code
      appends to it when a slot is renamed
      (`config.extra_restore_names.append(old_name)`).

  Args:
    table_config: The `EmbeddingHashTableConfig`.
    learning_rate_fns: A list (or tuple, stored as a list) with one learning
      rate per segment: a number (or tensor), or a no-argument callable such
      as `learning_rate_functions.PolynomialDecay`. A list is kept as is (not
      copied), like monolith.
    extra_restore_names: Extra names to restore the table from, a list or
      tuple of str; copied into the `extra_restore_names` attribute.

  Raises:
    TypeError: If `table_config` is not an `EmbeddingHashTableConfig`,
      `learning_rate_fns` is not a list or tuple, one of its items is neither
      a number, a tensor nor a callable, or `extra_restore_names` is not a
      list or tuple of str.

  Example:

    instance = HashTableConfigInstance(table, [0.01, PolynomialDecay(0.1, 10)])
    rates = instance.call_learning_rate_fns()  # float32 tensor of shape [2].
  """

  def __init__(self,
               table_config: embedding_hash_table_pb2.EmbeddingHashTableConfig,
               learning_rate_fns: List[_LearningRate],
               extra_restore_names: Optional[List[str]] = None):
    owner = type(self).__name__
    if not isinstance(table_config,
                      embedding_hash_table_pb2.EmbeddingHashTableConfig):
      raise TypeError("{}: table_config must be an EmbeddingHashTableConfig "
                      "message, got {} {!r}".format(owner,
                                                    type(table_config).__name__,
                                                    table_config))
    if isinstance(learning_rate_fns, tuple):
      learning_rate_fns = list(learning_rate_fns)
    if not isinstance(learning_rate_fns, list):
      raise TypeError("{}: learning_rate_fns must be a list (or tuple) with "
                      "one learning rate per segment, got {} {!r}".format(
                          owner,
                          type(learning_rate_fns).__name__, learning_rate_fns))
    for index, fn in enumerate(learning_rate_fns):
      if not _is_learning_rate(fn):
        raise TypeError("{}: learning_rate_fns[{}] must be a number, a tensor "
                        "or a no-argument callable, got {} {!r}".format(
                            owner, index,
                            type(fn).__name__, fn))
    if extra_restore_names is None:
      extra_restore_names = []
    if not isinstance(extra_restore_names, (list, tuple)) or not all(
        isinstance(name, str) for name in extra_restore_names):
      raise TypeError("{}: extra_restore_names must be a list of str, got {} "
                      "{!r}".format(owner,
                                    type(extra_restore_names).__name__,
                                    extra_restore_names))
    self._table_config = table_config
    self._learning_rate_fns = learning_rate_fns
    self._learning_rate_tensor = None
    self.extra_restore_names = list(extra_restore_names)

  def __str__(self) -> str:
    return "TableConfigPB: %s, LearningRateFns: [%s]" % (
        self._table_config.SerializeToString(), ", ".join(
            str(fn) for fn in self._learning_rate_fns))

  @property
  def table_config(self) -> embedding_hash_table_pb2.EmbeddingHashTableConfig:
    """The `EmbeddingHashTableConfig`."""
    return self._table_config

  @property
  def learning_rate_fns(self) -> List[_LearningRate]:
    """The learning rates, one per segment."""
    return self._learning_rate_fns

  @property
  def learning_rate_tensor(self) -> Optional[tf.Tensor]:
    """The tensor given to `set_learning_rate_tensor`, or None."""
    return self._learning_rate_tensor

  def set_learning_rate_tensor(self, learning_rate_tensor: tf.Tensor) -> None:
    """Stores the learning-rate tensor, e.g. from `call_learning_rate_fns`.

    Args:
      learning_rate_tensor: The tensor to store.
    """
    self._learning_rate_tensor = learning_rate_tensor

  def _check_learning_rate_fns(self) -> None:
    if not self._learning_rate_fns:
      raise ValueError(
          "HashTableConfigInstance: learning_rate_fns is empty; give one "
          "learning rate (a number or a no-argument callable) per segment")

  def call_learning_rate_fns(self) -> tf.Tensor:
    """Evaluates the learning rates as one float32 vector.

    Under `tf.name_scope("learning_rate")`, callables are called, and their
    results and the other values are cast to float32 (monolith does not cast
    what a callable returns, so a float64 result fails there). Works in graph
    mode, eagerly and inside `tf.function`.

    Returns:
      `tf.stack` of the learning rates, a float32 vector.

    Raises:
      ValueError: If `learning_rate_fns` is empty.
    """
    self._check_learning_rate_fns()
    with tf.name_scope("learning_rate"):
      learning_rates = [
          tf.cast(fn() if callable(fn) else fn, dtype=tf.float32)
          for fn in self._learning_rate_fns
      ]
      return tf.stack(learning_rates)

  def call_learning_rate_fns_fewer_ops(self) -> List[Any]:
    """Like `call_learning_rate_fns`, but returns a list and does not cast.

    Returns:
      The results of the callables and the other values, in order.

    Raises:
      ValueError: If `learning_rate_fns` is empty.
    """
    self._check_learning_rate_fns()
    with tf.name_scope("learning_rate"):
      return [fn() if callable(fn) else fn for fn in self._learning_rate_fns]
