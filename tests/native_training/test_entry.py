"""Tests of monolith.native_training.entry."""

import inspect
import re
import warnings

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from monolith.native_training import entry
from monolith.native_training import learning_rate_functions
from monolith.native_training.runtime.hash_table import embedding_hash_table_pb2

_pb = embedding_hash_table_pb2
_OPT = _pb.OptimizerConfig
_INIT = _pb.InitializerConfig
_COMP = _pb.FloatCompressorConfig
_REQUIRED = inspect.Parameter.empty


def _monolith_convert_to_proto(obj, proto):
  """Reference emission, written from the porting notes' description."""
  proto.SetInParent()
  for k, v in obj.__dict__.items():
    if v is not None:
      setattr(proto, k, v)


# (name, factory, config class, oneof member, the fields expected to be set).
# Every constructor: once with its defaults, once with every argument set
# (float values are exact in float32).
_CASES = (
    ("sgd_default", entry.SgdOptimizer, _OPT, "sgd", {}),
    ("sgd_all", lambda: entry.SgdOptimizer(0.5), _OPT, "sgd", {
        "learning_rate": 0.5
    }),
    ("adagrad_default", entry.AdagradOptimizer, _OPT, "adagrad", {
        "hessian_compression_times": 1,
        "warmup_steps": 0,
        "weight_decay_factor": 0.0
    }),
    ("adagrad_all", lambda: entry.AdagradOptimizer(0.5, 0.25, 3, 7, 0.125),
     _OPT, "adagrad", {
         "learning_rate": 0.5,
         "initial_accumulator_value": 0.25,
         "hessian_compression_times": 3,
         "warmup_steps": 7,
         "weight_decay_factor": 0.125
     }),
    ("adadelta_default", entry.AdadeltaOptimizer, _OPT, "adadelta", {
        "weight_decay_factor": 0.0,
        "averaging_ratio": 0.9,
        "epsilon": 0.01,
        "warmup_steps": 0
    }),
    ("adadelta_all", lambda: entry.AdadeltaOptimizer(0.5, 0.25, 0.75, 0.125, 9),
     _OPT, "adadelta", {
         "learning_rate": 0.5,
         "weight_decay_factor": 0.25,
         "averaging_ratio": 0.75,
         "epsilon": 0.125,
         "warmup_steps": 9
     }),
    ("adam_default", entry.AdamOptimizer, _OPT, "adam", {
        "beta1": 0.9,
        "beta2": 0.99,
        "use_beta1_warmup": False,
        "weight_decay_factor": 0.0,
        "use_nesterov": False,
        "epsilon": 0.01,
        "warmup_steps": 0
    }),
    ("adam_all", lambda: entry.AdamOptimizer(0.5, 0.25, 0.75, True, 0.125, True,
                                             0.0625, 11), _OPT, "adam", {
                                                 "learning_rate": 0.5,
                                                 "beta1": 0.25,
                                                 "beta2": 0.75,
                                                 "use_beta1_warmup": True,
                                                 "weight_decay_factor": 0.125,
                                                 "use_nesterov": True,
                                                 "epsilon": 0.0625,
                                                 "warmup_steps": 11
                                             }),
    ("amsgrad_default", entry.AmsgradOptimizer, _OPT, "amsgrad", {
        "beta1": 0.9,
        "beta2": 0.99,
        "weight_decay_factor": 0.0,
        "use_nesterov": False,
        "epsilon": 0.01,
        "warmup_steps": 0
    }),
    ("amsgrad_all",
     lambda: entry.AmsgradOptimizer(0.5, 0.25, 0.75, 0.125, True, 0.0625, 11),
     _OPT, "amsgrad", {
         "learning_rate": 0.5,
         "beta1": 0.25,
         "beta2": 0.75,
         "weight_decay_factor": 0.125,
         "use_nesterov": True,
         "epsilon": 0.0625,
         "warmup_steps": 11
     }),
    ("batch_softmax_opt_default", entry.BatchSoftmaxOptimizer, _OPT,
     "batch_softmax", {}),
    ("batch_softmax_opt_all", lambda: entry.BatchSoftmaxOptimizer(0.5), _OPT,
     "batch_softmax", {
         "learning_rate": 0.5
     }),
    ("momentum_default", entry.MomentumOptimizer, _OPT, "momentum", {
        "weight_decay_factor": 0.0,
        "use_nesterov": False,
        "momentum": 0.9,
        "warmup_steps": 0
    }),
    ("momentum_all", lambda: entry.MomentumOptimizer(0.5, 0.125, True, 0.75, 4),
     _OPT, "momentum", {
         "learning_rate": 0.5,
         "weight_decay_factor": 0.125,
         "use_nesterov": True,
         "momentum": 0.75,
         "warmup_steps": 4
     }),
    ("moving_average_default", entry.MovingAverageOptimizer, _OPT,
     "moving_average", {
         "momentum": 0.9
     }),
    ("moving_average_all", lambda: entry.MovingAverageOptimizer(0.5), _OPT,
     "moving_average", {
         "momentum": 0.5
     }),
    ("rmsprop_default", entry.RmspropOptimizer, _OPT, "rmsprop", {
        "weight_decay_factor": 0.0,
        "momentum": 0.9
    }),
    ("rmsprop_all", lambda: entry.RmspropOptimizer(0.5, 0.125, 0.75), _OPT,
     "rmsprop", {
         "learning_rate": 0.5,
         "weight_decay_factor": 0.125,
         "momentum": 0.75
     }),
    ("rmspropv2_default", entry.RmspropV2Optimizer, _OPT, "rmspropv2", {
        "weight_decay_factor": 0.0,
        "momentum": 0.9
    }),
    ("rmspropv2_all", lambda: entry.RmspropV2Optimizer(0.5, 0.125, 0.75), _OPT,
     "rmspropv2", {
         "learning_rate": 0.5,
         "weight_decay_factor": 0.125,
         "momentum": 0.75
     }),
    ("group_ftrl_default", entry.FTRLWithGroupSparsityOptimizer, _OPT,
     "group_ftrl", {
         "warmup_steps": 0
     }),
    ("group_ftrl_all",
     lambda: entry.FTRLWithGroupSparsityOptimizer(0.5, 0.25, 1.5, 3, 2.0, 4.0),
     _OPT, "group_ftrl", {
         "learning_rate": 0.5,
         "initial_accumulator_value": 0.25,
         "beta": 1.5,
         "warmup_steps": 3,
         "l1_regularization_strength": 2.0,
         "l2_regularization_strength": 4.0
     }),
    ("group_adagrad_default", entry.AdaGradWithGroupLassoOptimizer, _OPT,
     "group_adagrad", {
         "weight_decay_factor": 0.0,
         "warmup_steps": 0
     }),
    ("group_adagrad_all", lambda: entry.AdaGradWithGroupLassoOptimizer(
        0.5, 1.5, 0.25, 4.0, 0.125, 3), _OPT, "group_adagrad", {
            "learning_rate": 0.5,
            "beta": 1.5,
            "initial_accumulator_value": 0.25,
            "l2_regularization_strength": 4.0,
            "weight_decay_factor": 0.125,
            "warmup_steps": 3
        }),
    ("dynamic_wd_adagrad_default", entry.DynamicWdAdagradOptimizer, _OPT,
     "dynamic_wd_adagrad", {
         "hessian_compression_times": 1,
         "warmup_steps": 0,
         "weight_decay_factor": 0.0,
         "decouple_weight_decay": True,
         "enable_dynamic_wd": True,
         "flip_direction": True,
         "dynamic_wd_temperature": 1.0
     }),
    ("dynamic_wd_adagrad_all", lambda: entry.DynamicWdAdagradOptimizer(
        0.5, 0.25, 2, 6, 0.125, False, False, False, 0.75), _OPT,
     "dynamic_wd_adagrad", {
         "learning_rate": 0.5,
         "initial_accumulator_value": 0.25,
         "hessian_compression_times": 2,
         "warmup_steps": 6,
         "weight_decay_factor": 0.125,
         "decouple_weight_decay": False,
         "enable_dynamic_wd": False,
         "flip_direction": False,
         "dynamic_wd_temperature": 0.75
     }),
    ("ftrl_default", entry.FtrlOptimizer, _OPT, "ftrl", {
        "warmup_steps": 0
    }),
    ("ftrl_all", lambda: entry.FtrlOptimizer(0.5, 0.25, 1.5, 3, 2.0, 4.0), _OPT,
     "ftrl", {
         "learning_rate": 0.5,
         "initial_accumulator_value": 0.25,
         "beta": 1.5,
         "warmup_steps": 3,
         "l1_regularization_strength": 2.0,
         "l2_regularization_strength": 4.0
     }),
    ("dc_default", entry.DcOptimizer, _OPT, "dc", {}),
    ("dc_all", lambda: entry.DcOptimizer(lambda_=0.5), _OPT, "dc", {
        "lambda_": 0.5
    }),
    ("zeros", entry.ZerosInitializer, _INIT, "zeros", {}),
    ("ones", entry.OnesInitializer, _INIT, "ones", {}),
    ("constants_unset", lambda: entry.ConstantsInitializer(None), _INIT,
     "constants", {}),
    ("constants_all", lambda: entry.ConstantsInitializer(-0.5), _INIT,
     "constants", {
         "constant": -0.5
     }),
    ("random_uniform_default", entry.RandomUniformInitializer, _INIT,
     "random_uniform", {}),
    ("random_uniform_all", lambda: entry.RandomUniformInitializer(-0.25, 0.5),
     _INIT, "random_uniform", {
         "minval": -0.25,
         "maxval": 0.5
     }),
    ("batch_softmax_init_all", lambda: entry.BatchSoftmaxInitializer(4), _INIT,
     "constants", {
         "constant": 4.0
     }),
    ("one_bit_default", entry.OneBitCompressor, _COMP, "one_bit", {
        "step_size": 200,
        "amplitude": 0.05
    }),
    ("one_bit_all", lambda: entry.OneBitCompressor(7, 0.5), _COMP, "one_bit", {
        "step_size": 7,
        "amplitude": 0.5
    }),
    ("fixed_r8_default", entry.FixedR8Compressor, _COMP, "fixed_r8", {
        "r": 1.0
    }),
    ("fixed_r8_all", lambda: entry.FixedR8Compressor(0.25), _COMP, "fixed_r8", {
        "r": 0.25
    }),
    ("fp16", entry.Fp16Compressor, _COMP, "fp16", {}),
    ("fp32", entry.Fp32Compressor, _COMP, "fp32", {}),
)

_WRAPPER_CASES = tuple((name, factory) for name, factory, _, _, _ in _CASES)

# Serialized bytes computed by hand from the wire format: a field's tag is
# (field_number << 3) | wire_type, with wire type 0 = varint (int, bool),
# 2 = length-delimited (sub-message: tag, byte length, content) and
# 5 = 32-bit little endian (float). Fields are written in field-number order.
# Floats: 0.5 = 0x3f000000, 1.0 = 0x3f800000, -1.0 = 0xbf800000,
# 2.0 = 0x40000000, 0.9 = 0x3f666666, 0.99 = 0x3f7d70a4, 0.01 = 0x3c23d70a,
# 0.05 = 0x3d4ccccd. Varints: 200 = c8 01, 300 = ac 02, 1000 = e8 07.
_GOLDEN_HEX = (
    # OptimizerConfig.sgd (2, LEN) = 0x12, empty.
    ("sgd_default", entry.SgdOptimizer, "1200"),
    # sgd {learning_rate (2, I32) = 0x15: 0.5}.
    ("sgd_lr", lambda: entry.SgdOptimizer(0.5), "12 05 15 0000003f"),
    # adagrad (1) = 0x0a, 9 bytes: hessian_compression_times (4, VARINT)
    # = 0x20: 1; weight_decay_factor (5, I32) = 0x2d: 0.0; warmup_steps
    # (6, VARINT) = 0x30: 0.
    ("adagrad_default", entry.AdagradOptimizer, "0a 09 20 01 2d 00000000 30 00"
    ),
    # adam (7) = 0x3a, 26 bytes: beta1 (3) 0x1d, beta2 (4) 0x25,
    # use_beta1_warmup (5) 0x28, weight_decay_factor (6) 0x35,
    # use_nesterov (7) 0x38, epsilon (8) 0x45, warmup_steps (9) 0x48.
    ("adam_default", entry.AdamOptimizer, "3a 1a 1d 6666663f 25 a4707d3f 28 00 "
     "35 00000000 38 00 45 0ad7233c 48 00"),
    # ftrl (3) = 0x1a, 12 bytes: learning_rate 0x15: 1.0;
    # l1_regularization_strength (5) 0x2d: 2.0; warmup_steps (7) 0x38: 0.
    ("ftrl_l1", lambda: entry.FtrlOptimizer(1.0, l1_regularization=2.0),
     "1a 0c 15 0000803f 2d 00000040 38 00"),
    # dynamic_wd_adagrad (5) = 0x2a, 20 bytes: 0x20 1, 0x2d 0.0, 0x30 0,
    # decouple_weight_decay (7) 0x38 1, enable_dynamic_wd (8) 0x40 1,
    # dynamic_wd_temperature (9, I32) 0x4d 1.0, flip_direction (10) 0x50 1.
    ("dynamic_wd_default", entry.DynamicWdAdagradOptimizer,
     "2a 14 20 01 2d 00000000 30 00 38 01 40 01 4d 0000803f 50 01"),
    # moving_average (10) = 0x52: momentum (2, I32) 0x15: 0.9.
    ("moving_average_default", entry.MovingAverageOptimizer, "52 05 15 6666663f"
    ),
    # momentum (9) = 0x4a, 15 bytes: weight_decay_factor (3) 0x1d,
    # use_nesterov (4) 0x20, momentum (5) 0x2d, warmup_steps (6) 0x30: 300.
    ("momentum_warmup", lambda: entry.MomentumOptimizer(warmup_steps=300),
     "4a 0f 1d 00000000 20 00 2d 6666663f 30 ac02"),
    # dc (13) = (13 << 3) | 2 = 0x6a: lambda_ (2) 0x15: 0.5.
    ("dc", lambda: entry.DcOptimizer(0.5), "6a 05 15 0000003f"),
    # sgd {} then stochastic_rounding_float16 (4, VARINT) = 0x20: 1.
    ("stochastic_rounding",
     lambda: entry.StochasticRoundingFloat16OptimizerWrapper(entry.SgdOptimizer(
     )), "12 00 20 01"),
    # InitializerConfig.zeros (1) = 0x0a; ones (3) = 0x1a.
    ("zeros", entry.ZerosInitializer, "0a 00"),
    ("ones", entry.OnesInitializer, "1a 00"),
    # random_uniform (2) = 0x12: minval (2) 0x15: -1.0, maxval (3) 0x1d: 1.0.
    ("random_uniform", lambda: entry.RandomUniformInitializer(-1, 1),
     "12 0a 15 000080bf 1d 0000803f"),
    # constants (15) = (15 << 3) | 2 = 0x7a: constant (2) 0x15: 2.0.
    ("batch_softmax_init", lambda: entry.BatchSoftmaxInitializer(2),
     "7a 05 15 00000040"),
    # FloatCompressorConfig.fp16 (2) = 0x12.
    ("fp16", entry.Fp16Compressor, "12 00"),
    # fixed_r8 (3) = 0x1a: r (2) 0x15: 1.0.
    ("fixed_r8_default", entry.FixedR8Compressor, "1a 05 15 0000803f"),
    # one_bit (4) = 0x22: step_size (2, VARINT) 0x10: 200; amplitude
    # (5, I32) 0x2d: 0.05.
    ("one_bit_default", entry.OneBitCompressor, "22 08 10 c801 2d cdcc4c3d"),
    # EntryConfig.Segment: init_config (1) 0x0a {zeros 0a 00}, opt_config (2)
    # 0x12 {sgd 12 00}, comp_config (3) 0x1a {fp32 (1) 0a 00}, dim_size
    # (7, VARINT) 0x38: 4.
    ("segment", lambda: entry.CombineAsSegment(4, entry.ZerosInitializer(
    ), entry.SgdOptimizer(), entry.Fp32Compressor()),
     "0a 02 0a00 12 02 1200 1a 02 0a00 38 04"),
)

# monolith's constructor signatures: (name, default) in positional order.
_SEED_SIGNATURES = {
    "StochasticRoundingFloat16OptimizerWrapper": [("optimizer", _REQUIRED)],
    "SgdOptimizer": [("learning_rate", None)],
    "AdagradOptimizer": [("learning_rate", None),
                         ("initial_accumulator_value", None),
                         ("hessian_compression_times", 1), ("warmup_steps", 0),
                         ("weight_decay_factor", 0.0)],
    "AdadeltaOptimizer": [("learning_rate", None), ("weight_decay_factor", 0.0),
                          ("averaging_ratio", 0.9), ("epsilon", 0.01),
                          ("warmup_steps", 0)],
    "AdamOptimizer": [("learning_rate", None), ("beta1", 0.9), ("beta2", 0.99),
                      ("use_beta1_warmup", False), ("weight_decay_factor", 0.0),
                      ("use_nesterov", False), ("epsilon", 0.01),
                      ("warmup_steps", 0)],
    "AmsgradOptimizer": [("learning_rate", None), ("beta1", 0.9),
                         ("beta2", 0.99), ("weight_decay_factor", 0.0),
                         ("use_nesterov", False), ("epsilon", 0.01),
                         ("warmup_steps", 0)],
    "BatchSoftmaxOptimizer": [("learning_rate", None)],
    "MomentumOptimizer": [("learning_rate", None), ("weight_decay_factor", 0.0),
                          ("use_nesterov", False), ("momentum", 0.9),
                          ("warmup_steps", 0)],
    "MovingAverageOptimizer": [("momentum", 0.9)],
    "RmspropOptimizer": [("learning_rate", None), ("weight_decay_factor", 0.0),
                         ("momentum", 0.9)],
    "RmspropV2Optimizer": [("learning_rate", None),
                           ("weight_decay_factor", 0.0), ("momentum", 0.9)],
    "FTRLWithGroupSparsityOptimizer": [("learning_rate", None),
                                       ("initial_accumulator_value", None),
                                       ("beta", None), ("warmup_steps", 0),
                                       ("l1_regularization", None),
                                       ("l2_regularization", None)],
    "AdaGradWithGroupLassoOptimizer": [("learning_rate", None), ("beta", None),
                                       ("initial_accumulator_value", None),
                                       ("l2_regularization", None),
                                       ("weight_decay_factor", 0.0),
                                       ("warmup_steps", 0)],
    "DynamicWdAdagradOptimizer": [("learning_rate", None),
                                  ("initial_accumulator_value", None),
                                  ("hessian_compression_times", 1),
                                  ("warmup_steps", 0),
                                  ("weight_decay_factor", 0.0),
                                  ("decouple_weight_decay", True),
                                  ("enable_dynamic_wd", True),
                                  ("flip_direction", True),
                                  ("dynamic_wd_temperature", 1.0)],
    "FtrlOptimizer": [("learning_rate", None),
                      ("initial_accumulator_value", None), ("beta", None),
                      ("warmup_steps", 0), ("l1_regularization", None),
                      ("l2_regularization", None)],
    "ZerosInitializer": [],
    "ConstantsInitializer": [("constant", _REQUIRED)],
    "RandomUniformInitializer": [("minval", None), ("maxval", None)],
    "BatchSoftmaxInitializer": [("init_step_interval", _REQUIRED)],
    "OneBitCompressor": [("step_size", 200), ("amplitude", 0.05)],
    "FixedR8Compressor": [("fixed_range", 1.0)],
    "Fp16Compressor": [],
    "Fp32Compressor": [],
    "CombineAsSegment": [("dim_size", _REQUIRED), ("initializer", _REQUIRED),
                         ("optimizer", _REQUIRED), ("compressor", _REQUIRED)],
    "CuckooHashTableConfig": [("initial_capacity", 1),
                              ("feature_evict_every_n_hours", 0)],
    "HashTableConfigInstance": [("table_config", _REQUIRED),
                                ("learning_rate_fns", _REQUIRED),
                                ("extra_restore_names", None)],
}

_ABSTRACT = ("Optimizer", "Initializer", "Compressor", "HashTableConfig")

_LR_OPTIMIZERS = ("SgdOptimizer", "AdagradOptimizer", "AdadeltaOptimizer",
                  "AdamOptimizer", "AmsgradOptimizer", "BatchSoftmaxOptimizer",
                  "MomentumOptimizer", "RmspropOptimizer", "RmspropV2Optimizer",
                  "FTRLWithGroupSparsityOptimizer",
                  "AdaGradWithGroupLassoOptimizer", "DynamicWdAdagradOptimizer",
                  "FtrlOptimizer")


def _error_case(name, factory, error, message):
  return (name, factory, error, message)


def _cls(name):
  return getattr(entry, name)


def _bad_arg(name, cls_name, arg, value, error, message):
  return _error_case(name, lambda: _cls(cls_name)(**{
      arg: value
  }), error, message)


_SEG_ARGS = (entry.ZerosInitializer(), entry.SgdOptimizer(),
             entry.Fp32Compressor())

# (name, call, error, exact message).
_VALIDATION_CASES = tuple(
    _bad_arg("negative_learning_rate_" +
             name, name, "learning_rate", -1.0, ValueError, name +
             ": learning_rate must be >= 0, got -1.0")
    for name in _LR_OPTIMIZERS
) + tuple(
    _bad_arg(
        "string_learning_rate_" +
        name, name, "learning_rate", "fast", TypeError, name +
        ": learning_rate must be a number (int or "
        "float), got str 'fast'") for name in _LR_OPTIMIZERS
) + tuple(
    _bad_arg("negative_initial_accumulator_value_" +
             name, name, "initial_accumulator_value", -0.5, ValueError, name +
             ": initial_accumulator_value must be >= 0, got -0.5")
    for name in ("AdagradOptimizer", "FTRLWithGroupSparsityOptimizer",
                 "AdaGradWithGroupLassoOptimizer", "DynamicWdAdagradOptimizer",
                 "FtrlOptimizer")
) + tuple(
    _bad_arg("negative_weight_decay_factor_" +
             name, name, "weight_decay_factor", -0.5, ValueError, name +
             ": weight_decay_factor must be >= 0, got -0.5")
    for name in ("AdagradOptimizer", "AdadeltaOptimizer", "AdamOptimizer",
                 "AmsgradOptimizer", "MomentumOptimizer", "RmspropOptimizer",
                 "RmspropV2Optimizer", "AdaGradWithGroupLassoOptimizer",
                 "DynamicWdAdagradOptimizer")
) + tuple(
    _bad_arg("negative_warmup_steps_" + name, name, "warmup_steps", -1,
             ValueError,
             name +
             ": warmup_steps must be >= 0, got -1") for name
    in ("AdagradOptimizer", "AdadeltaOptimizer", "AdamOptimizer",
        "AmsgradOptimizer",
        "MomentumOptimizer",
        "FTRLWithGroupSparsityOptimizer", "AdaGradWithGroupLassoOptimizer",
        "DynamicWdAdagradOptimizer", "FtrlOptimizer")
) + tuple(
    _bad_arg("negative_epsilon_" + name, name, "epsilon", -0.01, ValueError,
             name + ": epsilon must be >= 0, got -0.01")
    for name in ("AdadeltaOptimizer", "AdamOptimizer", "AmsgradOptimizer")
) + tuple(
    _bad_arg("momentum_one_" + name, name, "momentum", 1.0, ValueError, name +
             ": momentum must be in [0, 1), got 1.0")
    for name in ("MomentumOptimizer", "MovingAverageOptimizer",
                 "RmspropOptimizer", "RmspropV2Optimizer")
) + tuple(
    _bad_arg("negative_beta_" + name, name, "beta", -1.0, ValueError, name +
             ": beta must be >= 0, got -1.0")
    for name in ("FTRLWithGroupSparsityOptimizer",
                 "AdaGradWithGroupLassoOptimizer", "FtrlOptimizer")
) + tuple(
    _bad_arg("negative_l1_" + name, name, "l1_regularization", -2.0, ValueError,
             name + ": l1_regularization must be >= 0, got -2.0")
    for name in ("FTRLWithGroupSparsityOptimizer", "FtrlOptimizer")) + tuple(
        _bad_arg("negative_l2_" +
                 name, name, "l2_regularization", -2.0, ValueError, name +
                 ": l2_regularization must be >= 0, got -2.0")
        for name in ("FTRLWithGroupSparsityOptimizer",
                     "AdaGradWithGroupLassoOptimizer", "FtrlOptimizer")
    ) + (
        _bad_arg(
            "adam_beta1_high", "AdamOptimizer", "beta1", 1.5, ValueError,
            "AdamOptimizer: beta1 must be in [0, 1), got 1.5"),
        _bad_arg(
            "adam_beta1_rounds_to_one", "AdamOptimizer", "beta1", 0.99999999,
            ValueError, "AdamOptimizer: beta1 must be in [0, 1), got "
            "0.99999999 (1.0 as float32)"),
        _bad_arg("adam_beta2_negative", "AdamOptimizer", "beta2", -0.1,
                 ValueError,
                 "AdamOptimizer: beta2 must be in [0, 1), got -0.1"),
        _bad_arg("amsgrad_beta1_one", "AmsgradOptimizer", "beta1", 1,
                 ValueError,
                 "AmsgradOptimizer: beta1 must be in [0, 1), got 1"),
        _bad_arg("amsgrad_beta2_high", "AmsgradOptimizer", "beta2", 2.0,
                 ValueError,
                 "AmsgradOptimizer: beta2 must be in [0, 1), got 2.0"),
        _bad_arg(
            "moving_average_negative", "MovingAverageOptimizer", "momentum",
            -0.5, ValueError,
            "MovingAverageOptimizer: momentum must be in [0, 1), got -0.5"),
        _bad_arg(
            "adadelta_averaging_ratio", "AdadeltaOptimizer", "averaging_ratio",
            1.2, ValueError,
            "AdadeltaOptimizer: averaging_ratio must be in [0, 1), got 1.2"),
        _bad_arg(
            "bool_learning_rate", "SgdOptimizer", "learning_rate", True,
            TypeError, "SgdOptimizer: learning_rate must be a number (int or "
            "float), got bool True"),
        _bad_arg(
            "numpy_bool_learning_rate", "SgdOptimizer", "learning_rate",
            np.bool_(False), TypeError,
            "SgdOptimizer: learning_rate must be a number (int or float), got "
            "{} {!r}".format(type(np.bool_(False)).__name__, np.bool_(False))),
        _bad_arg(
            "list_learning_rate", "AdamOptimizer", "learning_rate", [0.1],
            TypeError, "AdamOptimizer: learning_rate must be a number (int or "
            "float), got list [0.1]"),
        _bad_arg(
            "nan_learning_rate", "SgdOptimizer", "learning_rate", float("nan"),
            ValueError, "SgdOptimizer: learning_rate must be a finite float32 "
            "value (|x| <= 3.4028234663852886e+38), got nan"),
        _bad_arg(
            "inf_learning_rate", "SgdOptimizer", "learning_rate", float("inf"),
            ValueError, "SgdOptimizer: learning_rate must be a finite float32 "
            "value (|x| <= 3.4028234663852886e+38), got inf"),
        _bad_arg(
            "beyond_float32_learning_rate", "SgdOptimizer", "learning_rate",
            1e39, ValueError, "SgdOptimizer: learning_rate must be a finite "
            "float32 value (|x| <= 3.4028234663852886e+38), got 1e+39"),
        _bad_arg(
            "beyond_float32_negative_constant", "ConstantsInitializer",
            "constant", -1e39, ValueError, "ConstantsInitializer: constant "
            "must be a finite float32 value (|x| <= 3.4028234663852886e+38), "
            "got -1e+39"),
        _bad_arg(
            "huge_int_learning_rate", "SgdOptimizer", "learning_rate", 10**400,
            ValueError, "SgdOptimizer: learning_rate must be a "
            "finite float32 value (|x| <= 3.4028234663852886e+38), got " +
            str(10**400)),
        _bad_arg(
            "float_warmup_steps", "AdamOptimizer", "warmup_steps", 2.0,
            TypeError, "AdamOptimizer: warmup_steps must be an integer, got "
            "float 2.0"),
        _bad_arg(
            "int64_overflow_warmup_steps", "AdamOptimizer", "warmup_steps", 2**
            63, ValueError, "AdamOptimizer: warmup_steps must fit in int64 "
            "[-9223372036854775808, 9223372036854775807], got "
            "9223372036854775808"),
        _bad_arg(
            "zero_hessian_compression_times", "AdagradOptimizer",
            "hessian_compression_times", 0, ValueError,
            "AdagradOptimizer: hessian_compression_times must be >= 1, got 0"),
        _bad_arg(
            "int32_overflow_hessian_compression_times",
            "DynamicWdAdagradOptimizer", "hessian_compression_times", 2**31,
            ValueError, "DynamicWdAdagradOptimizer: hessian_compression_times "
            "must fit in int32 [-2147483648, 2147483647], got 2147483648"),
        _bad_arg("string_use_nesterov", "AdamOptimizer", "use_nesterov", "yes",
                 TypeError,
                 "AdamOptimizer: use_nesterov must be a bool, got str 'yes'"),
        _bad_arg("int_use_nesterov", "MomentumOptimizer", "use_nesterov", 1,
                 TypeError,
                 "MomentumOptimizer: use_nesterov must be a bool, got int 1"),
        _bad_arg(
            "none_like_flip_direction", "DynamicWdAdagradOptimizer",
            "flip_direction", "False", TypeError, "DynamicWdAdagradOptimizer: "
            "flip_direction must be a bool, got str 'False'"),
        _bad_arg(
            "nan_temperature", "DynamicWdAdagradOptimizer",
            "dynamic_wd_temperature", float("nan"), ValueError,
            "DynamicWdAdagradOptimizer: dynamic_wd_temperature must be a "
            "finite float32 value (|x| <= 3.4028234663852886e+38), got nan"),
        _bad_arg("negative_dc_lambda", "DcOptimizer", "lambda_", -0.5,
                 ValueError, "DcOptimizer: lambda_ must be >= 0, got -0.5"),
        _bad_arg(
            "string_constant", "ConstantsInitializer", "constant", "1",
            TypeError, "ConstantsInitializer: constant must be a number (int "
            "or float), got str '1'"),
        _error_case(
            "minval_above_maxval",
            lambda: entry.RandomUniformInitializer(1.0, -1.0), ValueError,
            "RandomUniformInitializer: minval must be <= maxval, got "
            "minval=1.0, maxval=-1.0"),
        _error_case(
            "minval_above_default_maxval",
            lambda: entry.RandomUniformInitializer(minval=0.1), ValueError,
            "RandomUniformInitializer: minval must be <= maxval, got "
            "minval=0.1, maxval=0.05 (proto default)"),
        _error_case(
            "maxval_below_default_minval",
            lambda: entry.RandomUniformInitializer(maxval=-0.1), ValueError,
            "RandomUniformInitializer: minval must be <= "
            "maxval, got minval=-0.05 (proto default), maxval=-0.1"),
        _bad_arg(
            "bool_minval", "RandomUniformInitializer", "minval", False,
            TypeError, "RandomUniformInitializer: minval must be a number "
            "(int or float), got bool False"),
        _bad_arg(
            "batch_softmax_zero", "BatchSoftmaxInitializer",
            "init_step_interval", 0, ValueError,
            "BatchSoftmaxInitializer: init_step_interval must be >= 1, got 0"),
        _bad_arg(
            "batch_softmax_half", "BatchSoftmaxInitializer",
            "init_step_interval", 0.5, ValueError, "BatchSoftmaxInitializer: "
            "init_step_interval must be >= 1, got 0.5"),
        _bad_arg(
            "batch_softmax_none", "BatchSoftmaxInitializer",
            "init_step_interval", None, TypeError, "BatchSoftmaxInitializer: "
            "init_step_interval must be a number (int or float), got None"),
        _bad_arg("one_bit_zero_step", "OneBitCompressor", "step_size", 0,
                 ValueError, "OneBitCompressor: step_size must be >= 1, got 0"),
        _bad_arg("one_bit_negative_step", "OneBitCompressor", "step_size", -5,
                 ValueError,
                 "OneBitCompressor: step_size must be >= 1, got -5"),
        _bad_arg(
            "one_bit_float_step", "OneBitCompressor", "step_size", 2.5,
            TypeError, "OneBitCompressor: step_size must be an integer, got "
            "float 2.5"),
        _bad_arg("one_bit_negative_amplitude", "OneBitCompressor", "amplitude",
                 -0.1, ValueError,
                 "OneBitCompressor: amplitude must be >= 0, got -0.1"),
        _bad_arg("fixed_r8_zero", "FixedR8Compressor", "fixed_range", 0,
                 ValueError,
                 "FixedR8Compressor: fixed_range must be > 0, got 0"),
        _bad_arg("fixed_r8_negative", "FixedR8Compressor", "fixed_range", -1.0,
                 ValueError,
                 "FixedR8Compressor: fixed_range must be > 0, got -1.0"),
        _bad_arg(
            "fixed_r8_underflows_to_zero", "FixedR8Compressor", "fixed_range",
            1e-50, ValueError, "FixedR8Compressor: fixed_range "
            "must be > 0, got 1e-50 (0.0 as float32)"),
        _error_case("segment_zero_dim",
                    lambda: entry.CombineAsSegment(0, *_SEG_ARGS), ValueError,
                    "CombineAsSegment: dim_size must be >= 1, got 0"),
        _error_case("segment_negative_dim",
                    lambda: entry.CombineAsSegment(-3, *_SEG_ARGS), ValueError,
                    "CombineAsSegment: dim_size must be >= 1, got -3"),
        _error_case(
            "segment_float_dim",
            lambda: entry.CombineAsSegment(4.0, *_SEG_ARGS), TypeError,
            "CombineAsSegment: dim_size must be an integer, got float 4.0"),
        _error_case(
            "segment_string_dim",
            lambda: entry.CombineAsSegment("8", *_SEG_ARGS), TypeError,
            "CombineAsSegment: dim_size must be an integer, got str '8'"),
        _error_case("segment_none_dim",
                    lambda: entry.CombineAsSegment(None, *_SEG_ARGS), TypeError,
                    "CombineAsSegment: dim_size must be an integer, got None"),
        _error_case(
            "segment_string_initializer", lambda: entry.CombineAsSegment(
                4, "zeros", entry.SgdOptimizer(), entry.Fp32Compressor()),
            TypeError,
            "CombineAsSegment: initializer must be an Initializer or "
            "an InitializerConfig message, got str 'zeros'"),
        _error_case(
            "segment_optimizer_as_compressor",
            lambda: entry.CombineAsSegment(4, entry.ZerosInitializer(
            ), entry.SgdOptimizer(), entry.SgdOptimizer(0.5)), TypeError,
            "CombineAsSegment: compressor must be a Compressor or a "
            "FloatCompressorConfig message, got SgdOptimizer "
            "SgdOptimizer(learning_rate=0.5)"),
        _error_case(
            "segment_compressor_as_optimizer",
            lambda: entry.CombineAsSegment(4, entry.ZerosInitializer(
            ), entry.Fp16Compressor(), entry.Fp32Compressor()), TypeError,
            "CombineAsSegment: optimizer must be an Optimizer or an "
            "OptimizerConfig message, got Fp16Compressor Fp16Compressor()"),
        _error_case(
            "segment_raw_optimizer_as_initializer",
            lambda: entry.CombineAsSegment(4,
                                           entry.SgdOptimizer().as_proto(),
                                           entry.SgdOptimizer(),
                                           entry.Fp32Compressor()), TypeError,
            "CombineAsSegment: initializer must be an Initializer or an "
            "InitializerConfig message, got OptimizerConfig sgd {\n}\n"),
        _error_case(
            "cuckoo_negative_capacity", lambda: entry.CuckooHashTableConfig(-1),
            ValueError,
            "CuckooHashTableConfig: initial_capacity must fit in uint64 "
            "[0, 18446744073709551615], got -1"),
        _error_case(
            "cuckoo_string_capacity",
            lambda: entry.CuckooHashTableConfig("big"), TypeError,
            "CuckooHashTableConfig: initial_capacity must be an integer, "
            "got str 'big'"),
        _error_case(
            "cuckoo_negative_hours", lambda: entry.CuckooHashTableConfig(1, -1),
            ValueError,
            "CuckooHashTableConfig: feature_evict_every_n_hours must be "
            ">= 0, got -1"),
        _error_case(
            "cuckoo_float_hours", lambda: entry.CuckooHashTableConfig(1, 1.5),
            TypeError,
            "CuckooHashTableConfig: feature_evict_every_n_hours must be an "
            "integer, got float 1.5"),
        _error_case(
            "stochastic_rounding_string",
            lambda: entry.StochasticRoundingFloat16OptimizerWrapper("adam"),
            TypeError,
            "StochasticRoundingFloat16OptimizerWrapper: optimizer must "
            "be an Optimizer, got str 'adam'"),
        _error_case(
            "stochastic_rounding_initializer",
            lambda: entry.StochasticRoundingFloat16OptimizerWrapper(
                entry.ZerosInitializer()), TypeError,
            "StochasticRoundingFloat16OptimizerWrapper: optimizer must be an "
            "Optimizer, got ZerosInitializer ZerosInitializer()"),
        _error_case(
            "build_no_segments",
            lambda: entry.build_embedding_hash_table_config([]), ValueError,
            "build_embedding_hash_table_config: segments is empty; give at least "
            "one EntryConfig.Segment"),
        _error_case(
            "build_wrong_segment",
            lambda: entry.build_embedding_hash_table_config(
                [entry.SgdOptimizer()]), TypeError,
            "build_embedding_hash_table_config: segments[0] must be an "
            "EntryConfig.Segment, got SgdOptimizer SgdOptimizer(learning_rate="
            "None)"),
        _error_case(
            "build_single_segment_not_in_list",
            lambda: entry.build_embedding_hash_table_config(
                _pb.EntryConfig.Segment()), TypeError,
            "build_embedding_hash_table_config: segments must be a sequence of "
            "EntryConfig.Segment, got Segment "),
        _error_case(
            "build_wrong_table_config",
            lambda: entry.build_embedding_hash_table_config(
                [entry.CombineAsSegment(1, *_SEG_ARGS)], "cuckoo"), TypeError,
            "build_embedding_hash_table_config: table_config must be a "
            "HashTableConfig, got str 'cuckoo'"),
        _error_case(
            "config_to_pbtxt_not_a_message", lambda: entry.config_to_pbtxt("x"),
            TypeError,
            "config_to_pbtxt: config must be a protobuf message, got "
            "str 'x'"),
    )


def _ops_of(fn):
  """Returns the op names a graph-mode call of `fn` creates."""
  with tf.Graph().as_default() as graph:
    fn()
    return [op.name for op in graph.get_operations()]


class SignatureTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      (name, name, params) for name, params in _SEED_SIGNATURES.items())
  def test_matches_seed(self, name, params):
    parameters = inspect.signature(_cls(name)).parameters.values()
    self.assertEqual([(p.name, p.default) for p in parameters], params)
    for p in parameters:
      self.assertEqual(p.kind, inspect.Parameter.POSITIONAL_OR_KEYWORD)
      self.assertIsNot(p.annotation, inspect.Parameter.empty, p.name)

  @parameterized.named_parameters(
      (name, name)
      for name in _SEED_SIGNATURES
      if isinstance(_cls(name), type) and hasattr(_cls(name), "_FIELDS"))
  def test_field_table_lists_the_constructor_arguments(self, name):
    cls = _cls(name)
    # pylint: disable=protected-access
    self.assertEqual(list(inspect.signature(cls).parameters), list(cls._FIELDS))

  @parameterized.named_parameters((name, name) for name in _ABSTRACT)
  def test_base_classes_are_abstract(self, name):
    with self.assertRaisesRegex(TypeError, "abstract"):
      _cls(name)()

  def test_every_seed_class_exists(self):
    for name in list(_SEED_SIGNATURES) + list(_ABSTRACT):
      self.assertTrue(callable(getattr(entry, name)), name)


class AsProtoTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(*_CASES)
  def test_sets_exactly_the_expected_fields(self, factory, config_class, oneof,
                                            expected):
    config = factory().as_proto()
    self.assertIsInstance(config, config_class)
    self.assertEqual(config.WhichOneof("type"), oneof)
    self.assertEqual([field.name for field, _ in config.ListFields()], [oneof])
    member = getattr(config, oneof)
    for field in member.DESCRIPTOR.fields:
      self.assertEqual(member.HasField(field.name), field.name in expected,
                       "{}.{} presence".format(oneof, field.name))
    for name, value in expected.items():
      got = getattr(member, name)
      self.assertEqual(type(got), type(value), name)
      if isinstance(value, float):  # The field holds the float32 value.
        value = float(np.float32(value))
      self.assertEqual(got, value, name)

  @parameterized.named_parameters(*_CASES)
  def test_bytes_equal_the_message_built_field_by_field(self, factory,
                                                        config_class, oneof,
                                                        expected):
    want = config_class()
    getattr(want, oneof).SetInParent()
    for name, value in expected.items():
      setattr(getattr(want, oneof), name, value)
    self.assertEqual(factory().as_proto().SerializeToString(),
                     want.SerializeToString())

  @parameterized.named_parameters(*_CASES)
  def test_monolith_emission_of_the_attributes_gives_the_same_bytes(
      self, factory, config_class, oneof, expected):
    wrapper = factory()
    want = config_class()
    _monolith_convert_to_proto(wrapper, getattr(want, oneof))
    self.assertEqual(wrapper.as_proto().SerializeToString(),
                     want.SerializeToString())
    # Attributes are named after the proto fields, so user code reads them.
    for name, value in expected.items():
      self.assertEqual(getattr(wrapper, name), value)

  @parameterized.named_parameters(*_GOLDEN_HEX)
  def test_golden_bytes(self, factory, hex_bytes):
    made = factory()
    if not isinstance(made, _pb.EntryConfig.Segment):
      made = made.as_proto()
    self.assertEqual(made.SerializeToString().hex(), hex_bytes.replace(" ", ""))

  def test_golden_bytes_of_a_whole_table(self):
    table = entry.build_embedding_hash_table_config(
        [entry.CombineAsSegment(4, *_SEG_ARGS)],
        entry.CuckooHashTableConfig(1000, 24))
    # entry_config (1) 0x0a {segments (1) 0x0a {segment, 14 bytes}},
    # initial_capacity (2, VARINT) 0x10: 1000, cuckoo (5) 0x2a {},
    # enable_feature_eviction (7) 0x38: 1, feature_evict_every_n_hours (8)
    # 0x40: 24.
    self.assertEqual(
        table.SerializeToString().hex(), "0a10"
        "0a0e"
        "0a020a00120212001a020a003804"
        "10e807"
        "2a00"
        "3801"
        "4018")

  def test_numpy_scalars_give_the_same_bytes(self):
    with_numpy = entry.AdamOptimizer(np.float32(0.5),
                                     beta1=np.float64(0.25),
                                     use_nesterov=np.bool_(True),
                                     warmup_steps=np.int64(3))
    plain = entry.AdamOptimizer(0.5,
                                beta1=0.25,
                                use_nesterov=True,
                                warmup_steps=3)
    self.assertEqual(with_numpy.as_proto().SerializeToString(),
                     plain.as_proto().SerializeToString())
    self.assertEqual(
        entry.OneBitCompressor(np.int32(7)).as_proto().SerializeToString(),
        entry.OneBitCompressor(7).as_proto().SerializeToString())

  def test_boundary_values_are_accepted(self):
    entry.AdamOptimizer(learning_rate=0, beta1=0, beta2=0.999999, epsilon=0)
    entry.RandomUniformInitializer(0.5, 0.5)
    entry.SgdOptimizer(3.4028234663852886e+38)
    entry.CuckooHashTableConfig(2**64 - 1, 2**31 - 1)
    entry.BatchSoftmaxInitializer(1)

  def test_renamed_arguments_are_stored_under_the_proto_names(self):
    ftrl = entry.FtrlOptimizer(l1_regularization=1.0, l2_regularization=2.0)
    self.assertEqual(ftrl.l1_regularization_strength, 1.0)
    self.assertEqual(ftrl.l2_regularization_strength, 2.0)
    self.assertEqual(entry.FixedR8Compressor(2.0).r, 2.0)
    self.assertEqual(entry.BatchSoftmaxInitializer(3).constant, 3)
    self.assertEqual(
        set(vars(ftrl)), {
            "learning_rate", "initial_accumulator_value", "beta",
            "warmup_steps", "l1_regularization_strength",
            "l2_regularization_strength"
        })

  def test_attribute_changes_are_emitted_like_monolith(self):
    opt = entry.SgdOptimizer(0.5)
    opt.learning_rate = 0.25
    opt.dim_size = 8
    self.assertEqual(opt.as_proto().sgd.learning_rate, 0.25)
    self.assertEqual(opt.as_proto().sgd.dim_size, 8)

  def test_stochastic_rounding_wraps_the_inner_proto(self):
    inner = entry.AdamOptimizer(0.5)
    wrapped = entry.StochasticRoundingFloat16OptimizerWrapper(inner)
    want = inner.as_proto()
    want.stochastic_rounding_float16 = True
    self.assertEqual(wrapped.as_proto().SerializeToString(),
                     want.SerializeToString())
    self.assertIs(wrapped.optimizer, inner)
    self.assertFalse(inner.as_proto().HasField("stochastic_rounding_float16"))


class CombineAsSegmentTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(("wrappers", False), ("raw_messages", True))
  def test_segment(self, raw):
    init = entry.RandomUniformInitializer(-0.5, 0.5)
    opt = entry.AdagradOptimizer(0.25)
    comp = entry.Fp16Compressor()
    parts = [w.as_proto() for w in (init, opt, comp)
            ] if raw else [init, opt, comp]
    segment = entry.CombineAsSegment(np.int64(16), *parts)
    self.assertIsInstance(segment, _pb.EntryConfig.Segment)
    self.assertEqual(segment.dim_size, 16)
    self.assertEqual(segment.init_config, init.as_proto())
    self.assertEqual(segment.opt_config, opt.as_proto())
    self.assertEqual(segment.comp_config, comp.as_proto())
    self.assertEqual([f.name for f, _ in segment.ListFields()],
                     ["init_config", "opt_config", "comp_config", "dim_size"])

  def test_duck_typed_wrappers(self):
    # monolith only calls as_proto(): in-house wrapper classes that do not
    # derive from Initializer / Optimizer / Compressor work there.
    init = entry.RandomUniformInitializer(-0.5, 0.5)
    opt = entry.AdagradOptimizer(0.25)
    comp = entry.Fp16Compressor()
    segment = entry.CombineAsSegment(8, _Duck(init.as_proto()),
                                     _Duck(opt.as_proto()),
                                     _Duck(comp.as_proto()))
    self.assertEqual(
        segment.SerializeToString(),
        entry.CombineAsSegment(8, init, opt, comp).SerializeToString())

  @parameterized.named_parameters(
      ("initializer", 1, lambda: entry.SgdOptimizer().as_proto(),
       "initializer must be an Initializer or an InitializerConfig message",
       "an OptimizerConfig, not an InitializerConfig"),
      ("optimizer", 2, lambda: entry.ZerosInitializer().as_proto(),
       "optimizer must be an Optimizer or an OptimizerConfig message",
       "an InitializerConfig, not an OptimizerConfig"),
      ("compressor", 3, lambda: entry.SgdOptimizer().as_proto(),
       "compressor must be a Compressor or a FloatCompressorConfig message",
       "an OptimizerConfig, not a FloatCompressorConfig"),
      ("none", 2, lambda: None,
       "optimizer must be an Optimizer or an OptimizerConfig message",
       "None, not an OptimizerConfig"),
      # A wrapper of the wrong kind, e.g. an optimizer as the compressor.
      ("wrong_wrapper", 3, None,
       "compressor must be a Compressor or a FloatCompressorConfig message",
       "an OptimizerConfig, not a FloatCompressorConfig"),
  )
  def test_as_proto_of_the_wrong_message_type(self, position, config, wanted,
                                              returned):
    part = entry.SgdOptimizer(0.5) if config is None else _Duck(config())
    args = [8] + list(_SEG_ARGS)
    args[position] = part
    with self.assertRaisesRegex(
        TypeError,
        "^" + re.escape("CombineAsSegment: {}, got {} {!r}, whose "
                        "as_proto() returned {} message".format(
                            wanted,
                            type(part).__name__, part, returned)) + "$"):
      entry.CombineAsSegment(*args)

  def test_other_values_keep_their_message(self):
    with self.assertRaisesRegex(
        TypeError, "^" +
        re.escape("CombineAsSegment: optimizer must be an Optimizer or an "
                  "OptimizerConfig message, got int 3") + "$"):
      entry.CombineAsSegment(8, entry.ZerosInitializer(), 3,
                             entry.Fp16Compressor())


class _Duck:
  """An in-house wrapper: not derived from the bases, has as_proto()."""

  def __init__(self, config):
    self.config = config

  def as_proto(self):
    return self.config

  def __repr__(self):
    return "_Duck()"


class StochasticRoundingDuckTypingTest(tf.test.TestCase):

  def test_wraps_a_duck_typed_optimizer(self):
    inner = entry.AdamOptimizer(0.5).as_proto()
    wrapped = entry.StochasticRoundingFloat16OptimizerWrapper(_Duck(inner))
    want = entry.StochasticRoundingFloat16OptimizerWrapper(
        entry.AdamOptimizer(0.5)).as_proto()
    self.assertEqual(wrapped.as_proto().SerializeToString(),
                     want.SerializeToString())
    # The duck's own message is not modified.
    self.assertFalse(inner.HasField("stochastic_rounding_float16"))
    segment = entry.CombineAsSegment(4, entry.ZerosInitializer(), wrapped,
                                     entry.Fp16Compressor())
    self.assertTrue(segment.opt_config.stochastic_rounding_float16)

  def test_duck_typed_optimizer_of_the_wrong_message_type(self):
    duck = _Duck(entry.Fp16Compressor().as_proto())
    with self.assertRaisesRegex(
        TypeError, "^" + re.escape(
            "StochasticRoundingFloat16OptimizerWrapper: optimizer must be an "
            "Optimizer, got _Duck _Duck(), whose as_proto() returned a "
            "FloatCompressorConfig, not an OptimizerConfig message") + "$"):
      entry.StochasticRoundingFloat16OptimizerWrapper(duck)


class NumpyScalarTest(tf.test.TestCase):

  def test_numpy_bools_are_emitted_as_python_bools(self):
    # protobuf 4 (TensorFlow 2.15) reads a numpy.bool_ through __index__,
    # which NumPy deprecates; the wrappers must hand it a Python bool.
    set_values = {}

    class _Recorder:

      def SetInParent(self):  # pylint: disable=invalid-name
        pass

      def __setattr__(self, name, value):
        set_values[name] = value

    opt = entry.AdamOptimizer(use_beta1_warmup=np.bool_(True),
                              use_nesterov=np.bool_(False),
                              warmup_steps=np.int64(3),
                              learning_rate=np.float32(0.5))
    entry._convert_to_proto(opt, _Recorder())  # pylint: disable=protected-access
    for name in ("use_beta1_warmup", "use_nesterov"):
      self.assertIs(type(set_values[name]), bool, name)
    self.assertIs(type(set_values["warmup_steps"]), int)
    self.assertIs(type(set_values["learning_rate"]), float)

  def test_numpy_scalars_give_no_warnings_and_the_same_bytes(self):
    with warnings.catch_warnings():
      warnings.simplefilter("error")
      numpy_args = entry.DynamicWdAdagradOptimizer(
          np.float64(0.5),
          hessian_compression_times=np.int32(2),
          decouple_weight_decay=np.bool_(False),
          enable_dynamic_wd=np.bool_(True)).as_proto()
      with self.assertRaisesRegex(TypeError, "learning_rate must be a number"):
        entry.SgdOptimizer(np.bool_(True))
    python_args = entry.DynamicWdAdagradOptimizer(
        0.5,
        hessian_compression_times=2,
        decouple_weight_decay=False,
        enable_dynamic_wd=True).as_proto()
    self.assertEqual(numpy_args.SerializeToString(),
                     python_args.SerializeToString())


class HashTableConfigTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(("no_eviction", 5, 0, False),
                                  ("eviction", 5, 48, True))
  def test_cuckoo_mutate_table(self, capacity, hours, evicts):
    table = _pb.EmbeddingHashTableConfig()
    entry.CuckooHashTableConfig(capacity, hours).mutate_table(table)
    self.assertEqual(table.initial_capacity, capacity)
    self.assertTrue(table.HasField("initial_capacity"))
    self.assertEqual(table.WhichOneof("type"), "cuckoo")
    self.assertEqual(table.HasField("enable_feature_eviction"), evicts)
    self.assertEqual(table.HasField("feature_evict_every_n_hours"), evicts)
    self.assertFalse(table.HasField("entry_config"))
    if evicts:
      self.assertTrue(table.enable_feature_eviction)
      self.assertEqual(table.feature_evict_every_n_hours, hours)

  def test_cuckoo_default_bytes(self):
    table = _pb.EmbeddingHashTableConfig()
    entry.CuckooHashTableConfig().mutate_table(table)
    # initial_capacity (2, VARINT) 0x10: 1; cuckoo (5, LEN) 0x2a: empty.
    self.assertEqual(table.SerializeToString().hex(), "10012a00")

  def test_cuckoo_repr_eq_and_properties(self):
    config = entry.CuckooHashTableConfig(8, 2)
    self.assertEqual(
        repr(config),
        "CuckooHashTableConfig(initial_capacity=8, feature_evict_every_n_hours"
        "=2)")
    self.assertEqual(config, entry.CuckooHashTableConfig(8, 2))
    self.assertNotEqual(config, entry.CuckooHashTableConfig(8, 3))
    self.assertEqual(hash(config), hash(entry.CuckooHashTableConfig(8, 2)))
    self.assertEqual(
        (config.initial_capacity, config.feature_evict_every_n_hours), (8, 2))

  def test_build_embedding_hash_table_config(self):
    segments = [
        entry.CombineAsSegment(4, *_SEG_ARGS),
        entry.CombineAsSegment(2, entry.OnesInitializer(), entry.DcOptimizer(),
                               entry.Fp16Compressor())
    ]
    table = entry.build_embedding_hash_table_config(
        segments, entry.CuckooHashTableConfig(64, 1))
    want = _pb.EmbeddingHashTableConfig()
    want.entry_config.segments.extend(segments)
    want.initial_capacity = 64
    want.cuckoo.SetInParent()
    want.enable_feature_eviction = True
    want.feature_evict_every_n_hours = 1
    self.assertEqual(table.SerializeToString(), want.SerializeToString())
    default = entry.build_embedding_hash_table_config(tuple(segments))
    self.assertEqual(default.WhichOneof("type"), "cuckoo")
    self.assertEqual(default.initial_capacity, 1)
    self.assertFalse(default.HasField("enable_feature_eviction"))

  def test_pbtxt_round_trip(self):
    table = entry.build_embedding_hash_table_config([
        entry.CombineAsSegment(
            8, entry.RandomUniformInitializer(-0.1, 0.1),
            entry.StochasticRoundingFloat16OptimizerWrapper(
                entry.AdamOptimizer(0.001)), entry.OneBitCompressor())
    ], entry.CuckooHashTableConfig(1 << 20, 24))
    text = entry.config_to_pbtxt(table)
    self.assertIn("learning_rate: 0.001", text)
    self.assertIn("stochastic_rounding_float16: true", text)
    self.assertEqual(
        entry.config_from_pbtxt(text).SerializeToString(),
        table.SerializeToString())
    optimizer = entry.config_from_pbtxt("sgd { learning_rate: 0.5 }",
                                        _pb.OptimizerConfig)
    self.assertEqual(optimizer, entry.SgdOptimizer(0.5).as_proto())

  def test_pbtxt_parse_error(self):
    with self.assertRaisesRegex(Exception, "no field named \"bogus\""):
      entry.config_from_pbtxt("bogus: 1")


class CompletenessTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(("optimizer", _OPT, entry.Optimizer),
                                  ("initializer", _INIT, entry.Initializer),
                                  ("compressor", _COMP, entry.Compressor))
  def test_every_oneof_member_has_a_wrapper(self, config_class, base):
    members = config_class.DESCRIPTOR.oneofs_by_name["type"].fields
    self.assertNotEmpty(members)
    for field in members:
      config = config_class()
      getattr(config, field.name).SetInParent()
      wrapper = base.from_proto(config)
      self.assertIsInstance(wrapper, base, field.name)
      self.assertEqual(wrapper.as_proto().WhichOneof("type"), field.name)
      self.assertEqual(wrapper.as_proto(), config)


class FromProtoReprEqTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(*_WRAPPER_CASES)
  def test_round_trip(self, factory):
    wrapper = factory()
    config = wrapper.as_proto()
    for base in (entry.Optimizer, entry.Initializer, entry.Compressor):
      if isinstance(wrapper, base):
        rebuilt = base.from_proto(config)
    self.assertEqual(rebuilt.as_proto().SerializeToString(),
                     config.SerializeToString())
    same_class = type(wrapper).from_proto(config)
    self.assertIs(type(same_class), type(wrapper))
    self.assertEqual(same_class, wrapper)
    parsed = type(config).FromString(config.SerializeToString())
    self.assertEqual(type(wrapper).from_proto(parsed), wrapper)

  @parameterized.named_parameters(*_WRAPPER_CASES)
  def test_repr_evaluates_to_an_equal_wrapper(self, factory):
    wrapper = factory()
    text = repr(wrapper)
    self.assertStartsWith(text, type(wrapper).__name__ + "(")
    self.assertEqual(eval(text, vars(entry)), wrapper)  # pylint: disable=eval-used
    self.assertEqual(hash(eval(text, vars(entry))), hash(wrapper))  # pylint: disable=eval-used

  def test_repr_examples(self):
    self.assertEqual(
        repr(entry.FtrlOptimizer(0.5, l1_regularization=1.0)),
        "FtrlOptimizer(learning_rate=0.5, initial_accumulator_value=None, "
        "beta=None, warmup_steps=0, l1_regularization=1.0, "
        "l2_regularization=None)")
    self.assertEqual(repr(entry.FixedR8Compressor()),
                     "FixedR8Compressor(fixed_range=1.0)")
    self.assertEqual(
        repr(
            entry.StochasticRoundingFloat16OptimizerWrapper(
                entry.SgdOptimizer(0.5))),
        "StochasticRoundingFloat16OptimizerWrapper(SgdOptimizer("
        "learning_rate=0.5))")

  def test_optimizer_docstring_example(self):
    opt = entry.Optimizer.from_proto(
        entry.AdamOptimizer(learning_rate=0.01).as_proto())
    example = "AdamOptimizer(learning_rate=0.01, beta1=0.9, beta2=0.99, "
    self.assertStartsWith(repr(opt), example)
    self.assertIn("opt  # " + example, entry.Optimizer.__doc__)

  def test_from_proto_reads_float32_values_as_short_decimals(self):
    rebuilt = entry.Optimizer.from_proto(entry.AdamOptimizer(0.1).as_proto())
    self.assertEqual(rebuilt.learning_rate, 0.1)
    self.assertEqual(rebuilt.beta2, 0.99)

  def test_stochastic_rounding_round_trip(self):
    wrapped = entry.StochasticRoundingFloat16OptimizerWrapper(
        entry.FtrlOptimizer(0.5, l2_regularization=0.25))
    rebuilt = entry.Optimizer.from_proto(wrapped.as_proto())
    self.assertIsInstance(rebuilt,
                          entry.StochasticRoundingFloat16OptimizerWrapper)
    self.assertEqual(rebuilt, wrapped)
    self.assertEqual(rebuilt.as_proto(), wrapped.as_proto())
    self.assertEqual(
        entry.StochasticRoundingFloat16OptimizerWrapper.from_proto(
            wrapped.as_proto()), wrapped)

  def test_from_proto_keeps_fields_without_an_argument(self):
    config = entry.AdamOptimizer().as_proto()
    config.adam.dim_size = 3
    rebuilt = entry.Optimizer.from_proto(config)
    self.assertEqual(rebuilt.as_proto().SerializeToString(),
                     config.SerializeToString())
    self.assertIn("dim_size=3", repr(rebuilt))

  def test_batch_softmax_initializer_shares_constants(self):
    config = entry.BatchSoftmaxInitializer(5).as_proto()
    self.assertEqual(entry.Initializer.from_proto(config),
                     entry.ConstantsInitializer(5.0))
    self.assertEqual(entry.BatchSoftmaxInitializer.from_proto(config),
                     entry.BatchSoftmaxInitializer(5))

  def test_equality(self):
    self.assertEqual(entry.SgdOptimizer(0.1), entry.SgdOptimizer(0.1))
    self.assertEqual(entry.SgdOptimizer(0.1),
                     entry.SgdOptimizer(np.float32(0.1)))
    self.assertNotEqual(entry.SgdOptimizer(0.1), entry.SgdOptimizer(0.2))
    self.assertNotEqual(entry.SgdOptimizer(), entry.BatchSoftmaxOptimizer())
    self.assertNotEqual(entry.ConstantsInitializer(2.0),
                        entry.BatchSoftmaxInitializer(2.0))
    self.assertNotEqual(entry.SgdOptimizer(), "SgdOptimizer()")
    self.assertNotEqual(
        entry.SgdOptimizer(),
        entry.StochasticRoundingFloat16OptimizerWrapper(entry.SgdOptimizer()))
    # Unset and explicitly set defaults differ on the wire, so they differ.
    self.assertNotEqual(entry.AdamOptimizer(),
                        entry.AdamOptimizer(warmup_steps=None))
    self.assertLen({entry.Fp16Compressor(), entry.Fp16Compressor()}, 1)

  @parameterized.named_parameters(
      ("not_a_message", lambda: entry.Optimizer.from_proto("sgd {}"), TypeError,
       "Optimizer.from_proto: expected an OptimizerConfig message, "
       "got str 'sgd {}'"),
      ("wrong_message",
       lambda: entry.Compressor.from_proto(entry.SgdOptimizer().as_proto()),
       TypeError,
       "Compressor.from_proto: expected a FloatCompressorConfig message, got "
       "OptimizerConfig sgd {\n}\n"),
      ("nothing_selected",
       lambda: entry.Initializer.from_proto(_pb.InitializerConfig()),
       ValueError, "Initializer.from_proto: no member of oneof 'type' is set "
       "in InitializerConfig"),
      ("other_class",
       lambda: entry.AdamOptimizer.from_proto(entry.SgdOptimizer().as_proto()),
       ValueError,
       "AdamOptimizer.from_proto: the config selects 'sgd', which is a "
       "SgdOptimizer, not an AdamOptimizer"),
      ("rounding_without_flag",
       lambda: entry.StochasticRoundingFloat16OptimizerWrapper.from_proto(
           entry.SgdOptimizer().as_proto()), ValueError,
       "StochasticRoundingFloat16OptimizerWrapper.from_proto: the config "
       "selects 'sgd', which is a SgdOptimizer, not a "
       "StochasticRoundingFloat16OptimizerWrapper"),
      ("rounding_explicitly_false", lambda: entry.Optimizer.from_proto(
          _pb.OptimizerConfig(sgd={}, stochastic_rounding_float16=False)),
       ValueError, "Optimizer.from_proto: stochastic_rounding_float16 is "
       "explicitly false, which no wrapper emits"),
      ("invalid_value", lambda: entry.Optimizer.from_proto(
          _pb.OptimizerConfig(adam={"beta1": 1.5})), ValueError,
       "AdamOptimizer: beta1 must be in [0, 1), got 1.5"),
  )
  def test_from_proto_errors(self, call, error, message):
    with self.assertRaisesRegex(error, "^" + re.escape(message) + "$"):
      call()


class ValidationTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(*_VALIDATION_CASES)
  def test_rejects(self, call, error, message):
    with self.assertRaisesRegex(error, "^" + re.escape(message)):
      call()


def _learning_rate_instance():
  table = entry.build_embedding_hash_table_config(
      [entry.CombineAsSegment(4, *_SEG_ARGS)] * 2)
  decay = learning_rate_functions.PolynomialDecay(0.1,
                                                  10,
                                                  end_learning_rate=0.01)
  return entry.HashTableConfigInstance(table, [decay, 0.5])


def _decay_at(step):
  return (0.1 - 0.01) * (1 - min(step, 10) / 10) + 0.01


class HashTableConfigInstanceTest(tf.test.TestCase, parameterized.TestCase):

  def test_str_is_bytes_and_fn_strings(self):
    table = entry.build_embedding_hash_table_config(
        [entry.CombineAsSegment(4, *_SEG_ARGS)],
        entry.CuckooHashTableConfig(1000, 24))
    decay = learning_rate_functions.PolynomialDecay(0.1, 10)
    instance = entry.HashTableConfigInstance(table, [0.1, decay])
    self.assertEqual(
        str(instance),
        "TableConfigPB: b'\\n\\x10\\n\\x0e\\n\\x02\\n\\x00\\x12\\x02\\x12"
        "\\x00\\x1a\\x02\\n\\x008\\x04\\x10\\xe8\\x07*\\x008\\x01@\\x18', "
        "LearningRateFns: [0.1, LearningRateFunction(\"PolynomialDecay\","
        "Params:cycle=False,decay_steps=10,end_learning_rate=0.0001,"
        "initial_learning_rate=0.1,name=None,power=1.0)]")
    self.assertEqual(
        str(instance), "TableConfigPB: %s, LearningRateFns: [%s]" %
        (table.SerializeToString(), ", ".join(str(f) for f in [0.1, decay])))
    self.assertEqual(
        str(instance),
        str(
            entry.HashTableConfigInstance(
                table,
                [0.1, learning_rate_functions.PolynomialDecay(0.1, 10)])))

  def test_accessors(self):
    table = _pb.EmbeddingHashTableConfig()
    names = ["a", "b"]
    fns = [0.1]
    instance = entry.HashTableConfigInstance(table, fns, names)
    self.assertIs(instance.table_config, table)
    self.assertIs(instance.learning_rate_fns, fns)
    names.append("c")
    self.assertEqual(instance.extra_restore_names, ["a", "b"])
    self.assertEqual(
        entry.HashTableConfigInstance(table, fns).extra_restore_names, [])
    self.assertIsNone(instance.learning_rate_tensor)
    tensor = tf.constant([0.1])
    instance.set_learning_rate_tensor(tensor)
    self.assertIs(instance.learning_rate_tensor, tensor)

  def test_extra_restore_names_is_a_plain_mutable_attribute(self):
    # monolith's own code does `config.extra_restore_names.append(old_name)`.
    names = ["a"]
    instance = entry.HashTableConfigInstance(_pb.EmbeddingHashTableConfig(),
                                             [0.1], names)
    instance.extra_restore_names.append("b")
    self.assertEqual(instance.extra_restore_names, ["a", "b"])
    self.assertEqual(names, ["a"])  # The constructor copied the list.
    instance.extra_restore_names = ["c"]
    self.assertEqual(instance.extra_restore_names, ["c"])
    default = entry.HashTableConfigInstance(_pb.EmbeddingHashTableConfig(),
                                            [0.1])
    default.extra_restore_names.append("d")
    self.assertEqual(default.extra_restore_names, ["d"])
    self.assertEqual(
        entry.HashTableConfigInstance(_pb.EmbeddingHashTableConfig(),
                                      [0.1]).extra_restore_names, [])
    self.assertEqual(
        entry.HashTableConfigInstance(_pb.EmbeddingHashTableConfig(), [0.1],
                                      ("e",)).extra_restore_names, ["e"])

  def test_tuple_of_learning_rates_is_stored_as_a_list(self):
    decay = learning_rate_functions.PolynomialDecay(0.1, 10)
    instance = entry.HashTableConfigInstance(_pb.EmbeddingHashTableConfig(),
                                             (0.5, decay))
    self.assertEqual(instance.learning_rate_fns, [0.5, decay])
    self.assertEqual(
        str(instance),
        str(
            entry.HashTableConfigInstance(_pb.EmbeddingHashTableConfig(),
                                          [0.5, decay])))

  @parameterized.named_parameters(
      ("none_table", None, [0.1], None,
       "table_config must be an EmbeddingHashTableConfig message, got "
       "NoneType None"),
      ("segment_as_table", _pb.EntryConfig.Segment(), [0.1], None,
       "table_config must be an EmbeddingHashTableConfig message, got "
       "Segment "),
      ("rate_not_in_a_list", _pb.EmbeddingHashTableConfig(), 0.1, None,
       "learning_rate_fns must be a list (or tuple) with one learning rate "
       "per segment, got float 0.1"),
      ("string_rates", _pb.EmbeddingHashTableConfig(), "0.1", None,
       "learning_rate_fns must be a list (or tuple) with one learning rate "
       "per segment, got str '0.1'"),
      ("none_rates", _pb.EmbeddingHashTableConfig(), None, None,
       "learning_rate_fns must be a list (or tuple) with one learning rate "
       "per segment, got NoneType None"),
      ("none_rate", _pb.EmbeddingHashTableConfig(), [0.1, None], None,
       "learning_rate_fns[1] must be a number, a tensor or a no-argument "
       "callable, got NoneType None"),
      ("string_rate", _pb.EmbeddingHashTableConfig(), ["0.1"], None,
       "learning_rate_fns[0] must be a number, a tensor or a no-argument "
       "callable, got str '0.1'"),
      ("bool_rate", _pb.EmbeddingHashTableConfig(), [True], None,
       "learning_rate_fns[0] must be a number, a tensor or a no-argument "
       "callable, got bool True"),
      ("string_restore_names", _pb.EmbeddingHashTableConfig(), [0.1], "old",
       "extra_restore_names must be a list of str, got str 'old'"),
      ("int_restore_name", _pb.EmbeddingHashTableConfig(), [0.1], ["a", 1],
       "extra_restore_names must be a list of str, got list ['a', 1]"),
  )
  def test_rejects_bad_arguments_at_construction(self, table, fns, names,
                                                 message):
    with self.assertRaisesRegex(
        TypeError, "^" + re.escape("HashTableConfigInstance: " + message)):
      entry.HashTableConfigInstance(table, fns, names)

  @parameterized.named_parameters(("graph", "graph"), ("eager", "eager"),
                                  ("tf_function", "function"))
  def test_callable_results_are_cast_to_float32(self, mode):
    # monolith stacks what callables return as is: a float64 result mixed
    # with the float32 constants fails in Pack.
    instance = entry.HashTableConfigInstance(_pb.EmbeddingHashTableConfig(), [
        lambda: tf.constant(0.5, tf.float64), 0.25, lambda: np.float64(0.125),
        lambda: tf.constant(2, tf.int32)
    ])
    if mode == "graph":
      with tf.Graph().as_default():
        rates = instance.call_learning_rate_fns()
        self.assertEqual(rates.dtype, tf.float32)
        with tf.compat.v1.Session() as sess:
          values = sess.run(rates)
    else:
      call = instance.call_learning_rate_fns
      rates = tf.function(call)() if mode == "function" else call()
      self.assertEqual(rates.dtype, tf.float32)
      values = rates.numpy()
    self.assertAllClose(values, [0.5, 0.25, 0.125, 2.0])

  @parameterized.named_parameters(
      ("created_before_tracing", True),
      ("created_after_tracing", False),
  )
  def test_tf_function_with_or_without_a_global_step(self, step_first):
    self.assertIsNone(tf.compat.v1.train.get_global_step())
    instance = _learning_rate_instance()
    if step_first:
      tf.compat.v1.train.get_or_create_global_step().assign(3)
    compute = tf.function(instance.call_learning_rate_fns)
    self.assertAllClose(compute(), [_decay_at(3 if step_first else 0), 0.5])
    # The step the function created (or captured) is the global step.
    step = tf.compat.v1.train.get_or_create_global_step()
    step.assign(7)
    self.assertAllClose(compute(), [_decay_at(7), 0.5])
    self.assertAllClose(instance.call_learning_rate_fns(), [_decay_at(7), 0.5])
    step.assign(0)

  @parameterized.named_parameters(
      ("stacked", "call_learning_rate_fns"),
      ("fewer_ops", "call_learning_rate_fns_fewer_ops"))
  def test_empty_learning_rate_fns_raise(self, method):
    instance = entry.HashTableConfigInstance(_pb.EmbeddingHashTableConfig(), [])
    with self.assertRaisesRegex(
        ValueError, "^HashTableConfigInstance: learning_rate_fns is empty"):
      getattr(instance, method)()

  def test_graph_mode(self):
    with tf.Graph().as_default():
      instance = _learning_rate_instance()
      rates = instance.call_learning_rate_fns()
      self.assertEqual(rates.dtype, tf.float32)
      self.assertEqual(rates.shape.as_list(), [2])
      self.assertStartsWith(rates.op.name, "learning_rate")
      step = tf.compat.v1.train.get_global_step()
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        self.assertAllClose(sess.run(rates), [0.1, 0.5])
        sess.run(step.assign(4))
        self.assertAllClose(sess.run(rates), [_decay_at(4), 0.5])

  def test_graph_mode_ops_are_in_the_name_scope(self):
    instance = entry.HashTableConfigInstance(_pb.EmbeddingHashTableConfig(),
                                             [0.5, 0.25])
    for name in _ops_of(instance.call_learning_rate_fns):
      self.assertStartsWith(name, "learning_rate/")

  def test_eager_mode_follows_the_global_step(self):
    instance = _learning_rate_instance()
    step = tf.compat.v1.train.get_or_create_global_step()
    step.assign(0)
    self.assertAllClose(instance.call_learning_rate_fns(), [0.1, 0.5])
    step.assign(5)
    self.assertAllClose(instance.call_learning_rate_fns(), [_decay_at(5), 0.5])
    step.assign(0)

  def test_tf_function(self):
    instance = _learning_rate_instance()
    step = tf.compat.v1.train.get_or_create_global_step()
    compute = tf.function(instance.call_learning_rate_fns)
    step.assign(3)
    self.assertAllClose(compute(), [_decay_at(3), 0.5])
    step.assign(7)
    self.assertAllClose(compute(), [_decay_at(7), 0.5])
    step.assign(0)

  @parameterized.named_parameters(("graph", True), ("eager", False))
  def test_fewer_ops_returns_the_plain_list(self, graph_mode):
    decay = learning_rate_functions.PolynomialDecay(0.1, 10)
    instance = entry.HashTableConfigInstance(_pb.EmbeddingHashTableConfig(),
                                             [0.5, decay, 2])

    def check():
      rates = instance.call_learning_rate_fns_fewer_ops()
      self.assertIsInstance(rates, list)
      self.assertLen(rates, 3)
      self.assertIs(rates[0], 0.5)
      self.assertIs(rates[2], 2)
      self.assertIsInstance(rates[1], tf.Tensor)

    if graph_mode:
      with tf.Graph().as_default():
        check()
    else:
      check()

  @parameterized.named_parameters(("graph", True), ("eager", False))
  def test_constants_and_tensors_are_cast(self, graph_mode):
    instance = entry.HashTableConfigInstance(
        _pb.EmbeddingHashTableConfig(), [1, np.float64(0.5), lambda: 0.25])
    if graph_mode:
      with tf.Graph().as_default():
        rates = instance.call_learning_rate_fns()
        with tf.compat.v1.Session() as sess:
          values = sess.run(rates)
    else:
      values = instance.call_learning_rate_fns()
    self.assertAllClose(values, [1.0, 0.5, 0.25])


if __name__ == "__main__":
  tf.test.main()
