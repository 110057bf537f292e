"""Every closed list of choices, defined once.

This module imports neither Keras nor TensorFlow, so the command line can
build its options and print ``--help`` without them. Validation
(:mod:`finetune.config`), ``click.Choice`` (:mod:`finetune.cli`) and the
modules that act on a choice all read these lists.

Example:
    >>> "cosine" in SCHEDULES
    True
    >>> choices_of(Pooling)
    ('avg', 'max', 'flatten')
"""

from __future__ import annotations

import typing
from typing import Literal

Augment = Literal["none", "light", "flips", "seed"]
Pooling = Literal["avg", "max", "flatten"]
Optimizer = Literal["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "nadam"]
Schedule = Literal["constant", "power", "exponential", "piecewise", "plateau", "1cycle", "cosine"]
Loop = Literal["fit", "trainer"]
Strategy = Literal["auto", "none", "mirrored", "multiworker"]
Precision = Literal["float32", "mixed"]
ClassWeight = Literal["balanced"]
Decision = Literal["accuracy", "balanced"]
Resize = Literal["crop", "pad", "squash"]
TuneInputs = Literal["auto", "activations", "images"]
CacheDtype = Literal["float32", "float16"]
BnStats = Literal["imagenet", "adapt"]
ExportFormat = Literal["savedmodel", "tflite", "onnx"]
Quantization = Literal["float16", "int8"]


def choices_of(kind: typing.Any) -> tuple[str, ...]:
    """The allowed values of a ``Literal`` choice type, in order."""
    return typing.get_args(kind)


AUGMENT_PRESETS = choices_of(Augment)
POOLINGS = choices_of(Pooling)
OPTIMIZERS = choices_of(Optimizer)
SCHEDULES = choices_of(Schedule)
LOOPS = choices_of(Loop)
STRATEGIES = choices_of(Strategy)
PRECISIONS = choices_of(Precision)
CLASS_WEIGHTS = choices_of(ClassWeight)
DECISIONS = choices_of(Decision)
RESIZE_POLICIES = choices_of(Resize)
TUNE_INPUTS = choices_of(TuneInputs)
CACHE_DTYPES = choices_of(CacheDtype)
BN_STATS = choices_of(BnStats)
EXPORT_FORMATS = choices_of(ExportFormat)
QUANTIZATIONS = choices_of(Quantization)
