"""The full, resolved training configuration, with validation and YAML round-trips.

``finetune train`` writes ``config.yaml`` into the run folder; passing it back
with ``--config`` reproduces the run. Every key is checked: an unknown key, a
wrong type or an out-of-range value raises :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .choices import (
    BUILTIN_BACKBONES, DETECTOR_BACKBONES, DETECTOR_PREFIX, OFFLINE_TEXT_CHECKPOINTS, SCHEDULE_PARAMETERS, TEXT_PRESET_PREFIXES, AUGMENT_PRESETS, BN_STATS, CACHE_DTYPES, CLASS_WEIGHTS, DECISIONS, DEFAULT_RESIZE, LOOPS, OPTIMIZERS, POOLINGS, PRECISIONS, SCHEDULES, STRATEGIES,
    RESIZE_POLICIES, TUNE_INPUTS,
)
from .errors import ConfigError, UnknownBackboneError
from .util import suggest


@dataclass
class HeadConfig:
    """What goes on top of the backbone (built by :func:`finetune.models.build_classifier`).

    A pure value, so it lives here beside :class:`TrainConfig` rather than with
    the Keras code; ``finetune.models.HeadConfig`` is the same class.

    Attributes:
        pooling: ``"avg"`` (global average pooling, seeds 000/001) or ``"flatten"`` (seed 002).
        hidden: Sizes of hidden Dense layers, e.g. ``[256]``.
        activation: Activation of the hidden layers.
        dropout: Dropout rate before each Dense layer (0 disables it).
        l1, l2: Kernel regularization factors of every head Dense layer.
        max_norm: Max-norm constraint on every head kernel, or ``None``.
    """

    pooling: str = "avg"
    hidden: list[int] = field(default_factory=list)
    activation: str = "relu"
    dropout: float = 0.2
    l1: float = 0.0
    l2: float = 0.0
    max_norm: float | None = None


@dataclass
class TrainConfig:
    """Everything that defines a training run (see ``finetune train --help``)."""

    data: str = ""
    images: str | None = None
    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"
    from_model: str | None = None
    drop_top: int = 1
    image_size: int | None = None
    sequence_length: int | None = None
    resize: str = DEFAULT_RESIZE
    batch_size: int = 32
    val_split: float = 0.1
    test_split: float = 0.1
    seed: int = 0
    split_seed: int | None = None
    augment: str = "light"
    pooling: str = "avg"
    feature_taps: int = 0
    hidden: list[int] = field(default_factory=list)
    activation: str = "relu"
    dropout: float = 0.2
    label_smoothing: float = 0.0
    mixup: float = 0.0
    l1: float = 0.0
    l2: float = 0.0
    max_norm: float | None = None
    optimizer: str = "adam"
    lr: float = 1e-3
    head_epochs: int = 100
    tune_lr: float | None = None
    tune_epochs: int = 10
    unfreeze_from: str | None = None
    unfreeze_blocks: int | None = None
    unfreeze_fraction: float | None = None
    patience: int = 10
    tune_patience: int | None = None
    schedule: str = "cosine"
    schedule_boundaries: list[float] | None = None
    schedule_values: list[float] | None = None
    warmup_epochs: float = 1.0
    discriminative: bool = False
    clipnorm: float | None = None
    loop: str = "fit"
    strategy: str = "none"
    precision: str = "float32"
    jit: bool = False
    tensorboard: bool = False
    mlflow: str | None = None
    class_weight: str | None = None
    decision: str = "accuracy"
    ordinal: bool = False
    bag_blend: bool | None = None
    cache_features: bool = True
    cache_variants: int | None = None
    tune_inputs: str = "auto"
    cache_dtype: str = "float32"
    bn_stats: str = "imagenet"
    time_budget: float | None = None
    output: str = "runs"
    name: str | None = None

    @property
    def resolved_tune_inputs(self) -> str:
        """``auto``: cached activations when they lose nothing (no augmentation, or augmented copies cached)."""
        if self.tune_inputs != "auto":
            return self.tune_inputs
        return "activations" if self.augment == "none" or (self.cache_variants or 0) > 0 else "images"

    @property
    def resolved_split_seed(self) -> int:
        """The seed that draws the val/test split: ``split_seed``, else ``seed``."""
        return self.seed if self.split_seed is None else self.split_seed

    def split_args(self) -> dict[str, Any]:
        """How this run splits its data: the keyword arguments of ``as_image_folder`` / ``scan_folder``."""
        return {"val_split": self.val_split, "test_split": self.test_split, "seed": self.resolved_split_seed}

    @property
    def resolved_tune_lr(self) -> float:
        return self.tune_lr if self.tune_lr is not None else self.lr / 100

    def head_config(self) -> HeadConfig:
        """The :class:`HeadConfig` these fields describe."""
        return HeadConfig(self.pooling, list(self.hidden), self.activation, self.dropout, self.l1, self.l2, self.max_norm)

    def validate(self) -> "TrainConfig":
        """Check every value; return ``self`` for chaining."""
        _check_range("batch_size", self.batch_size, 1, None)
        _check_range("val_split", self.val_split, 0, 0.9)
        _check_range("test_split", self.test_split, 0, 0.9)
        _check_range("dropout", self.dropout, 0, 0.95)
        _check_range("label_smoothing", self.label_smoothing, 0, 0.5)
        _check_range("mixup", self.mixup, 0, 10)
        if self.mixup and self.loop == "trainer":
            raise ConfigError("mixup: needs loop 'fit' (its draws are seeded by the step across epochs); drop --mixup "
                              "or use --loop fit")
        _check_range("lr", self.lr, 1e-12, 10, inclusive_low=False)
        if self.tune_lr is not None:
            _check_range("tune_lr", self.tune_lr, 1e-12, 10, inclusive_low=False)
        for key in ("head_epochs", "tune_epochs", "patience", "tune_patience", "cache_variants", "feature_taps"):
            if getattr(self, key) is not None:
                _check_range(key, getattr(self, key), 0, None)
        _check_range("seed", self.seed, 0, 2**32 - 1)  # what NumPy and TensorFlow accept
        if self.split_seed is not None:
            _check_range("split_seed", self.split_seed, 0, 2**32 - 1)
        if self.time_budget is not None:
            _check_range("time_budget", self.time_budget, 0, None, inclusive_low=False)
        for key in ("l1", "l2"):
            _check_range(key, getattr(self, key), 0, None)
        if self.image_size is not None:
            _check_range("image_size", self.image_size, 8, 4096)
        if self.sequence_length is not None:
            _check_range("sequence_length", self.sequence_length, 8, 8192)
        if self.max_norm is not None:
            _check_range("max_norm", self.max_norm, 0, None, inclusive_low=False)
        if self.unfreeze_fraction is not None:
            _check_range("unfreeze_fraction", self.unfreeze_fraction, 0, 1, inclusive_low=False)
        if self.unfreeze_blocks is not None:
            _check_range("unfreeze_blocks", self.unfreeze_blocks, 1, None)
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"hidden: layer sizes must be >= 1, got {self.hidden}")
        _check_choice("augment", self.augment, AUGMENT_PRESETS)
        _check_choice("decision", self.decision, DECISIONS)
        _check_choice("pooling", self.pooling, POOLINGS)
        _check_choice("class_weight", self.class_weight, (None, *CLASS_WEIGHTS))
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("loop", self.loop, LOOPS)
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("tune_inputs", self.tune_inputs, TUNE_INPUTS)
        _check_choice("resize", self.resize, RESIZE_POLICIES)
        _check_choice("cache_dtype", self.cache_dtype, CACHE_DTYPES)
        _check_choice("bn_stats", self.bn_stats, BN_STATS)
        _check_range("warmup_epochs", self.warmup_epochs, 0, None)
        if self.clipnorm is not None:
            _check_range("clipnorm", self.clipnorm, 0, None, inclusive_low=False)
        chosen = [k for k in ("unfreeze_from", "unfreeze_blocks", "unfreeze_fraction") if getattr(self, k) is not None]
        if len(chosen) > 1:
            raise ConfigError(f"give only one of {', '.join(chosen)}")
        if not self.from_model:
            _check_backbone(self.backbone)
        self._check_schedule_parameters()
        return self

    def schedule_params(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~finetune.training.optim.make_schedule` this config declares."""
        if self.schedule != "piecewise":
            return {}
        boundaries = list(self.schedule_boundaries or [])
        factors = self.schedule_values or [0.1**i for i in range(len(boundaries) + 1)]
        return {"boundaries": boundaries, "factors": list(factors)}

    def _check_schedule_parameters(self) -> None:
        required, optional = SCHEDULE_PARAMETERS.get(self.schedule, ((), ()))
        for key in required:
            if getattr(self, key) is None:
                raise ConfigError(f"schedule: {self.schedule!r} needs {key} (--{key.replace('_', '-')} "
                                  "3,6: phase epochs where the rate steps down)")
        declared = {k for keys in SCHEDULE_PARAMETERS.values() for pair in keys for k in pair}
        for key in sorted(declared - set(required) - set(optional)):
            if getattr(self, key) is not None:
                raise ConfigError(f"{key}: only the schedules that declare it take it; schedule is {self.schedule!r} "
                                  f"(drop --{key.replace('_', '-')} or use --schedule piecewise)")
        if self.schedule == "piecewise":
            boundaries = self.schedule_boundaries
            if any(b <= 0 for b in boundaries) or list(boundaries) != sorted(set(boundaries)):
                raise ConfigError(f"schedule_boundaries: must be increasing epochs > 0, got {boundaries}")
            if self.schedule_values is not None and len(self.schedule_values) != len(boundaries) + 1:
                raise ConfigError(f"schedule_values: one learning-rate factor per interval, {len(boundaries) + 1} for "
                                  f"{len(boundaries)} boundaries; got {len(self.schedule_values)}")
            if self.schedule_values is not None and any(v <= 0 for v in self.schedule_values):
                raise ConfigError(f"schedule_values: factors of each phase's learning rate must be > 0, got "
                                  f"{self.schedule_values}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build and validate from a mapping, coercing YAML types and naming bad keys."""
        if not isinstance(values, dict):
            raise ConfigError(f"config must be a mapping of keys to values, got {type(values).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"unknown config key {key!r}.{suggest(key, known)}".rstrip("."))
            kwargs[key] = _coerce(key, value, hints[key])
        return cls(**kwargs).validate()

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        try:
            values = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {str(path)!r} does not exist") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from None
        return cls.from_dict(values)


def _check_range(key: str, value: Any, low: float | None, high: float | None, inclusive_low: bool = True) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value!r}")
    too_low = low is not None and (value < low if inclusive_low else value <= low)
    if too_low or (high is not None and value > high):
        bounds = f"{'>=' if inclusive_low else '>'} {low}" + (f" and <= {high}" if high is not None else "")
        raise ConfigError(f"{key}: must be {bounds}, got {value!r}")


def _check_backbone(name: str) -> None:
    """Refuse an unknown backbone without starting TensorFlow: the built-in names, plus any registered already;
    text encoders may also be keras-hub presets or checkpoint folders (checked when loaded)."""
    import os
    import sys

    known = set(BUILTIN_BACKBONES) | set(OFFLINE_TEXT_CHECKPOINTS) | set(DETECTOR_BACKBONES)
    registry = sys.modules.get("finetune.models.backbones.registry")
    if registry is not None:
        known |= {b.name for b in registry.list_backbones()}
    text_like = name.startswith((*TEXT_PRESET_PREFIXES, "hf://", "glove:", DETECTOR_PREFIX)) or os.path.isdir(os.path.expanduser(name))
    if name not in known and not text_like:
        hint = suggest(name, sorted(known)).strip()
        raise UnknownBackboneError(f"backbone: {name!r} is not a known backbone. {hint + ' ' if hint else ''}"
                                   "`finetune backbones` lists them")


def _check_choice(key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(str(c) for c in choices)}; got {value!r}")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the field's type hint (allowing int -> float)."""
    args = typing.get_args(hint)
    optional = type(None) in args
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: must not be empty")
    base = next((a for a in args if a is not type(None)), hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else hint
    if typing.get_origin(base) is list:
        item = typing.get_args(base)[0]
        allowed, phrase = ((int, float), "numbers") if item is float else (int, "integers")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, allowed) and not isinstance(v, bool)
                                                           for v in value):
            raise ConfigError(f"{key}: must be a list of {phrase}, got {value!r}")
        return [item(v) for v in value]
    expected = {bool: (bool, "true or false"), float: ((int, float), "a number"), int: (int, "an integer"),
                str: (str, "a string")}.get(base)
    if expected is not None:
        types_, phrase = expected
        if not isinstance(value, types_) or (base is not bool and isinstance(value, bool)):
            raise ConfigError(f"{key}: must be {phrase}, got {value!r}")
        return float(value) if base is float else value
    return value
