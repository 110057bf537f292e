"""Optimizers and per-group learning rates, by name; schedules come from :mod:`.schedules`.

Three building blocks, each one call::

    opt = make_optimizer("adamw", 1e-3, weight_decay=1e-4)
    sched = make_schedule("cosine", 1e-3, steps_per_epoch=100, epochs=10, warmup_epochs=1)
    opt = make_optimizer("adam", sched)
    opt = discriminative_optimizer("adam", 1e-3, layer_groups(model, 3))

The discriminative optimizers (and the schedules, imported here) are registered
Keras serializables (package ``finetune``): import :mod:`finetune.training.optim`
before ``keras.saving.load_model``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Sequence

import keras
import numpy as np
from keras.optimizers.schedules import LearningRateSchedule

from .._compat import variable_key
from ..choices import OPTIMIZERS, SCHEDULES
from ..errors import ConfigError
from ..models.graph import walk_layers
from .schedules import _unknown_name, make_schedule

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "make_optimizer",
    "make_schedule",
    "discriminative_optimizer",
    "layer_groups",
    "group_multipliers",
]

# name -> (optimizer class, defaults that differ from Keras's own)
_OPTIMIZER_SPECS: dict[str, tuple[type[keras.optimizers.Optimizer], dict[str, Any]]] = {
    "sgd": (keras.optimizers.SGD, {"momentum": 0.0}),
    "momentum": (keras.optimizers.SGD, {"momentum": 0.9}),
    "nesterov": (keras.optimizers.SGD, {"momentum": 0.9, "nesterov": True}),
    "adagrad": (keras.optimizers.Adagrad, {}),
    "rmsprop": (keras.optimizers.RMSprop, {"rho": 0.9}),
    "adam": (keras.optimizers.Adam, {}),
    "adamw": (keras.optimizers.AdamW, {}),
    "nadam": (keras.optimizers.Nadam, {}),
}

assert tuple(_OPTIMIZER_SPECS) == OPTIMIZERS, "finetune.choices.OPTIMIZERS lists every optimizer"


def _lookup(name: str) -> tuple[type[keras.optimizers.Optimizer], dict[str, Any]]:
    key = name.lower()
    if key not in _OPTIMIZER_SPECS:
        raise _unknown_name("optimizer", name, OPTIMIZERS)
    return _OPTIMIZER_SPECS[key]


def _optimizer_kwargs(name: str, overrides: dict[str, Any]) -> tuple[type, dict[str, Any]]:
    cls, defaults = _lookup(name)
    valid = sorted(p for p in inspect.signature(cls.__init__).parameters
                   if p not in ("self", "learning_rate", "kwargs"))
    unknown = [k for k in overrides if k not in valid]
    if unknown:
        raise ConfigError(f"Unknown hyperparameter(s) {', '.join(map(repr, unknown))} "
                         f"for optimizer {name!r}. Valid: {', '.join(valid)}.")
    return cls, {**defaults, **overrides}


def make_optimizer(
    name: str, learning_rate: float | LearningRateSchedule, **overrides: Any
) -> keras.optimizers.Optimizer:
    """Build a Keras optimizer from its short name.

    Names: ``sgd``, ``momentum`` (SGD, momentum 0.9), ``nesterov`` (momentum
    0.9, Nesterov), ``adagrad``, ``rmsprop`` (rho 0.9), ``adam``, ``adamw``,
    ``nadam``. Any constructor argument of the Keras class can be overridden.

    Example:

    >>> opt = make_optimizer("momentum", 0.01, momentum=0.8, clipnorm=1.0)
    >>> round(opt.momentum, 2), opt.clipnorm
    (0.8, 1.0)

    Raises:
        ValueError: for an unknown name (the closest one is suggested) or an
            unknown hyperparameter (the valid ones are listed).
    """
    cls, kwargs = _optimizer_kwargs(name, overrides)
    return cls(learning_rate=learning_rate, **kwargs)


# --------------------------------------------------------------------------
# Discriminative (per-group) learning rates.
# --------------------------------------------------------------------------

def _lookup_by_path(multipliers: dict[str, float], path: str) -> float:
    if path in multipliers:
        return multipliers[path]
    # A reloaded nested model may name "backbone/conv/kernel" just "conv/kernel".
    matches = {m for p, m in multipliers.items()
               if p.endswith("/" + path) or path.endswith("/" + p)}
    return matches.pop() if len(matches) == 1 else 1.0


class _PerVariableLR:
    """Mixin: scale the learning rate of each variable by a multiplier.

    The multiplier scales the *learning rate* handed to ``update_step``, so the
    step is ``m * lr * direction`` for every optimizer, Adam included (scaling
    gradients instead would be undone by Adam's normalisation). Decoupled weight
    decay (AdamW, ``weight_decay=``) is scaled the same way, as in fastai.
    Multipliers are keyed by ``variable.path`` so they survive ``model.save``
    (a path also matches the same path under or without a parent model's prefix).
    """

    def __init__(self, *args: Any, lr_multipliers: dict[str, float] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lr_multipliers = dict(lr_multipliers or {})
        self._multiplier_by_key: dict[Any, float] = {}

    def multiplier(self, variable: keras.Variable) -> float:
        """The learning-rate multiplier of ``variable`` (1.0 if it is in no group)."""
        return _lookup_by_path(self.lr_multipliers, variable.path)

    def build(self, variables):
        self._multiplier_by_key = {variable_key(self, v): self.multiplier(v) for v in variables}
        super().build(variables)

    def update_step(self, gradient, variable, learning_rate):
        # Under TF, `variable` is the backing tf.Variable, so look it up by key.
        m = self._multiplier_by_key.get(variable_key(self, variable), 1.0)
        if m != 1.0:
            learning_rate = learning_rate * m
        return super().update_step(gradient, variable, learning_rate)

    # Overrides Keras's (private) Optimizer hook for decoupled weight decay, to scale it per group.
    def _apply_weight_decay(self, variables):
        if self.weight_decay is None:
            return
        by_multiplier: dict[float, list] = {}
        for v in variables:
            by_multiplier.setdefault(self.multiplier(v), []).append(v)
        base = self.weight_decay
        try:  # reuse the backend's (distribution-aware) decay, one group at a time
            for m, group in by_multiplier.items():
                self.weight_decay = base * m
                super()._apply_weight_decay(group)
        finally:
            self.weight_decay = base

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "lr_multipliers": dict(self.lr_multipliers)}


@keras.saving.register_keras_serializable(package="finetune")
class DiscriminativeSGD(_PerVariableLR, keras.optimizers.SGD):
    """SGD with per-variable learning-rate multipliers (see :func:`discriminative_optimizer`)."""


@keras.saving.register_keras_serializable(package="finetune")
class DiscriminativeAdagrad(_PerVariableLR, keras.optimizers.Adagrad):
    """Adagrad with per-variable learning-rate multipliers (see :func:`discriminative_optimizer`)."""


@keras.saving.register_keras_serializable(package="finetune")
class DiscriminativeRMSprop(_PerVariableLR, keras.optimizers.RMSprop):
    """RMSprop with per-variable learning-rate multipliers (see :func:`discriminative_optimizer`)."""


@keras.saving.register_keras_serializable(package="finetune")
class DiscriminativeAdam(_PerVariableLR, keras.optimizers.Adam):
    """Adam with per-variable learning-rate multipliers (see :func:`discriminative_optimizer`)."""


@keras.saving.register_keras_serializable(package="finetune")
class DiscriminativeAdamW(_PerVariableLR, keras.optimizers.AdamW):
    """AdamW with per-variable learning-rate multipliers (see :func:`discriminative_optimizer`)."""


@keras.saving.register_keras_serializable(package="finetune")
class DiscriminativeNadam(_PerVariableLR, keras.optimizers.Nadam):
    """Nadam with per-variable learning-rate multipliers (see :func:`discriminative_optimizer`)."""


# Keras optimizer class -> its discriminative subclass (one per class in _OPTIMIZER_SPECS).
_DISCRIMINATIVE: dict[type[keras.optimizers.Optimizer], type[keras.optimizers.Optimizer]] = {
    keras.optimizers.SGD: DiscriminativeSGD,
    keras.optimizers.Adagrad: DiscriminativeAdagrad,
    keras.optimizers.RMSprop: DiscriminativeRMSprop,
    keras.optimizers.Adam: DiscriminativeAdam,
    keras.optimizers.AdamW: DiscriminativeAdamW,
    keras.optimizers.Nadam: DiscriminativeNadam,
}

assert {spec[0] for spec in _OPTIMIZER_SPECS.values()} <= set(_DISCRIMINATIVE), \
    "every optimizer class of _OPTIMIZER_SPECS has a discriminative subclass"


def group_multipliers(n_groups: int, spread: float = 100.0) -> list[float]:
    """Geometric learning-rate multipliers from ``1 / spread`` to 1 (fastai's ``slice``).

    Example:

    >>> group_multipliers(3)
    [0.01, 0.1, 1.0]
    """
    if n_groups < 1:
        raise ConfigError(f"n_groups must be >= 1, got {n_groups}.")
    if n_groups == 1:
        return [1.0]
    exps = np.linspace(-math.log10(spread), 0.0, n_groups)
    return [float(f"{10**e:.12g}") for e in exps]


def _group_variables(group: Sequence[Any]) -> list[keras.Variable]:
    variables = []
    for item in group:
        if isinstance(item, keras.layers.Layer):
            variables.extend(item.trainable_weights)
        else:
            variables.append(item)
    return variables


def discriminative_optimizer(
    name: str,
    learning_rate: float | LearningRateSchedule,
    groups: Sequence[Sequence[keras.Variable | keras.layers.Layer]],
    *,
    low: float | None = None,
    spread: float = 100.0,
    **overrides: Any,
) -> keras.optimizers.Optimizer:
    """An optimizer giving each layer group its own learning rate (fastai's ``slice(lo, hi)``).

    ``groups`` is ordered from the input side to the head. Group ``i`` of ``n``
    learns at ``learning_rate * m_i`` with ``m`` spread geometrically from
    ``1 / spread`` (first group) to 1 (last group, the head). ``low`` (a float
    learning rate only) sets the first group's rate directly: ``spread = lr / low``.
    Variables in no group learn at ``learning_rate``. Works with ``model.fit``
    and :class:`finetune.training.loop.Trainer`, with any schedule and any name of
    :data:`OPTIMIZERS`; it is saved with the model (multipliers by variable path).

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(2)])
    >>> opt = discriminative_optimizer("adam", 1e-3, layer_groups(model, 2), low=1e-5)
    >>> sorted(opt.lr_multipliers.values())
    [0.01, 0.01, 1.0, 1.0]
    """
    if low is not None:
        if isinstance(learning_rate, LearningRateSchedule):
            raise ConfigError("`low` needs a float learning rate; use `spread` with a schedule.")
        spread = float(learning_rate) / float(low)
    cls, kwargs = _optimizer_kwargs(name, overrides)
    multipliers: dict[str, float] = {}
    for m, group in zip(group_multipliers(len(groups), spread), groups):
        for v in _group_variables(group):
            if multipliers.get(v.path, m) != m:
                raise ValueError(f"Variable path {v.path!r} is in two groups with different rates.")
            multipliers[v.path] = m
    return _DISCRIMINATIVE[cls](learning_rate=learning_rate, lr_multipliers=multipliers, **kwargs)


def _leaf_layers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The layers holding trainable weights under ``layer`` (itself if it is one), in order."""
    return [leaf for leaf in (layer, *walk_layers(layer))
            if getattr(leaf, "layers", None) is None and leaf.trainable_weights]


def _split(items: list, n: int) -> list[list]:
    bounds = np.linspace(0, len(items), n + 1).round().astype(int)
    return [items[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def layer_groups(model: keras.Model, n_groups: int) -> list[list[keras.Variable]]:
    """Split a model's trainable variables into ``n_groups`` ordered groups, head last.

    If the model nests sub-models (a backbone), the head is every trainable
    layer outside them and the backbone's layers are cut into ``n_groups - 1``
    contiguous groups of about as many layers. Otherwise all layers holding
    trainable weights are cut into ``n_groups`` contiguous groups. Empty groups
    are dropped.

    Example:

    >>> model = keras.Sequential([keras.Input((4,))] + [keras.layers.Dense(4) for _ in range(4)])
    >>> [len(g) for g in layer_groups(model, 2)]  # kernel + bias of 2 layers each
    [4, 4]
    """
    top = list(model.layers)
    nested = [layer for layer in top if hasattr(layer, "layers")]
    if nested and n_groups > 1:
        body = [leaf for layer in nested for leaf in _leaf_layers(layer)]
        head = [layer for layer in top if layer not in nested and layer.trainable_weights]
        chunks = _split(body, n_groups - 1) + [head]
    else:
        chunks = _split(_leaf_layers(model), n_groups)
    groups = [_group_variables(chunk) for chunk in chunks]
    return [g for g in groups if g]
