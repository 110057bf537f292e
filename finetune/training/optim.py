"""Optimizers, learning-rate schedules and per-group learning rates, by name.

Three building blocks, each one call::

    opt = make_optimizer("adamw", 1e-3, weight_decay=1e-4)
    sched = make_schedule("cosine", 1e-3, steps_per_epoch=100, epochs=10, warmup_epochs=1)
    opt = make_optimizer("adam", sched)
    opt = discriminative_optimizer("adam", 1e-3, layer_groups(model, 3))

Every schedule is a function of the optimizer's step counter (``iterations``),
which ``model.save`` stores, so a resumed run continues on the same trajectory.
The schedules and the discriminative optimizers are registered Keras
serializables (package ``finetune``): import :mod:`finetune.optim` before
``keras.saving.load_model``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Sequence

import keras
import numpy as np
from keras import ops
from keras.optimizers.schedules import LearningRateSchedule

from ..choices import OPTIMIZERS, SCHEDULES
from ..util import suggest

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


def _unknown_name(kind: str, name: str, known: Sequence[str]) -> ValueError:
    hint = suggest(name, known)
    return ValueError(f"Unknown {kind} {name!r}.{hint} Known: {', '.join(known)}.")


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
        raise ValueError(f"Unknown hyperparameter(s) {', '.join(map(repr, unknown))} "
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
# Schedules: functions of the global step, serializable.
# --------------------------------------------------------------------------

def _step(step: Any) -> Any:
    return ops.cast(step, "float32")


@keras.saving.register_keras_serializable(package="finetune")
class ConstantLR(LearningRateSchedule):
    """``lr`` at every step."""

    def __init__(self, learning_rate: float):
        self.learning_rate = float(learning_rate)

    def __call__(self, step):
        return ops.cast(self.learning_rate, "float32") + 0.0 * _step(step)

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate}


@keras.saving.register_keras_serializable(package="finetune")
class PowerLR(LearningRateSchedule):
    """Power scheduling: ``lr0 / (1 + step / s) ** c`` (``s`` in steps)."""

    def __init__(self, learning_rate: float, s: float, c: float = 1.0):
        self.learning_rate, self.s, self.c = float(learning_rate), float(s), float(c)

    def __call__(self, step):
        return self.learning_rate / ops.power(1.0 + _step(step) / self.s, self.c)

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "s": self.s, "c": self.c}


@keras.saving.register_keras_serializable(package="finetune")
class ExponentialLR(LearningRateSchedule):
    """``lr0 * 0.1 ** (epoch / s)`` with ``epoch = step / steps_per_epoch`` (continuous)."""

    def __init__(self, learning_rate: float, s: float, steps_per_epoch: int):
        self.learning_rate, self.s = float(learning_rate), float(s)
        self.steps_per_epoch = int(steps_per_epoch)

    def __call__(self, step):
        epoch = _step(step) / self.steps_per_epoch
        return self.learning_rate * ops.power(0.1, epoch / self.s)

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "s": self.s,
                "steps_per_epoch": self.steps_per_epoch}


@keras.saving.register_keras_serializable(package="finetune")
class PiecewiseLR(LearningRateSchedule):
    """``values[i]`` where ``i`` is the number of ``boundaries`` (in epochs) reached.

    ``epoch = step / steps_per_epoch``; at exactly a boundary the next value applies.
    """

    def __init__(self, boundaries: Sequence[float], values: Sequence[float], steps_per_epoch: int):
        if len(values) != len(boundaries) + 1:
            raise ValueError(f"piecewise needs len(values) == len(boundaries) + 1, "
                             f"got {len(values)} values and {len(boundaries)} boundaries.")
        self.boundaries = [float(b) for b in boundaries]
        self.values = [float(v) for v in values]
        self.steps_per_epoch = int(steps_per_epoch)

    def __call__(self, step):
        # Compare in steps, exactly: a boundary of b epochs is step b * steps_per_epoch.
        s = _step(step)
        lr = ops.cast(self.values[0], "float32") + 0.0 * s
        for boundary, value in zip(self.boundaries, self.values[1:]):
            lr = ops.where(s >= boundary * self.steps_per_epoch, value, lr)
        return lr

    def get_config(self) -> dict[str, Any]:
        return {"boundaries": self.boundaries, "values": self.values,
                "steps_per_epoch": self.steps_per_epoch}


@keras.saving.register_keras_serializable(package="finetune")
class OneCycleLR(LearningRateSchedule):
    """Smith's 1cycle, linear variant (as in Géron's *Hands-On ML*).

    Over ``total_steps``: linear rise from ``max_lr / start_div`` to ``max_lr``
    during the first ``phase`` fraction of steps, linear fall back to
    ``max_lr / start_div`` during the next ``phase`` fraction, then linear
    anneal to ``max_lr / final_div`` at ``total_steps`` (held afterwards).
    """

    def __init__(self, max_lr: float, total_steps: int, phase: float = 0.45,
                 start_div: float = 10.0, final_div: float = 1000.0):
        self.max_lr, self.total_steps, self.phase = float(max_lr), int(total_steps), float(phase)
        self.start_div, self.final_div = float(start_div), float(final_div)

    def __call__(self, step):
        s = _step(step)
        up = self.phase * self.total_steps
        start, peak, end = self.max_lr / self.start_div, self.max_lr, self.max_lr / self.final_div
        last = max(float(self.total_steps), 2 * up + 1e-9)
        rising = start + (peak - start) * s / up
        falling = peak - (peak - start) * (s - up) / up
        annealing = start - (start - end) * ops.minimum((s - 2 * up) / (last - 2 * up), 1.0)
        return ops.where(s < up, rising, ops.where(s < 2 * up, falling, annealing))

    def get_config(self) -> dict[str, Any]:
        return {"max_lr": self.max_lr, "total_steps": self.total_steps, "phase": self.phase,
                "start_div": self.start_div, "final_div": self.final_div}


@keras.saving.register_keras_serializable(package="finetune")
class WarmupCosineLR(LearningRateSchedule):
    """Linear warm-up from 0 to ``lr0`` over ``warmup_steps``, then cosine decay.

    ``lr = lr0 * step / warmup_steps`` while warming up, then
    ``lr0 * (alpha + (1 - alpha) * (1 + cos(pi * p)) / 2)`` with ``p`` the
    fraction of the remaining steps done (clipped to 1 after ``total_steps``).
    """

    def __init__(self, learning_rate: float, total_steps: int, warmup_steps: int = 0,
                 alpha: float = 0.0):
        self.learning_rate, self.total_steps = float(learning_rate), int(total_steps)
        self.warmup_steps, self.alpha = int(warmup_steps), float(alpha)

    def __call__(self, step):
        s = _step(step)
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        progress = ops.clip((s - self.warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = self.alpha + (1 - self.alpha) * 0.5 * (1 + ops.cos(math.pi * progress))
        decayed = self.learning_rate * cosine
        if self.warmup_steps == 0:
            return decayed
        warm = self.learning_rate * s / self.warmup_steps
        return ops.where(s < self.warmup_steps, warm, decayed)

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "alpha": self.alpha}


def make_schedule(
    name: str,
    learning_rate: float,
    *,
    steps_per_epoch: int,
    epochs: int,
    **params: Any,
) -> LearningRateSchedule | keras.callbacks.ReduceLROnPlateau:
    """Build a learning-rate schedule from its short name.

    Returns a step-based ``LearningRateSchedule`` to pass as an optimizer's
    ``learning_rate``, except for ``plateau``, which returns a
    ``ReduceLROnPlateau`` callback (give the optimizer the float
    ``learning_rate`` and pass the callback to ``fit``).

    Names and ``params`` (defaults in brackets):

    - ``constant``: ``lr0``.
    - ``power``: ``lr0 / (1 + step / s) ** c``; ``s`` in steps [one epoch], ``c`` [1].
    - ``exponential``: ``lr0 * 0.1 ** (epoch / s)``, ``epoch = step / steps_per_epoch``;
      ``s`` in epochs [``epochs``: lr0/10 at the end].
    - ``piecewise``: ``boundaries`` in epochs (required), ``values``
      [``lr0 * 0.1 ** i``].
    - ``plateau``: ``factor`` [0.5], ``patience`` [5], ``monitor`` ["val_loss"], ...
    - ``1cycle``: Smith's linear 1cycle to max lr ``lr0``; ``phase`` [0.45],
      ``start_div`` [10], ``final_div`` [1000]. See :class:`OneCycleLR`.
    - ``cosine``: linear warm-up over ``warmup_epochs`` [0] then cosine decay
      to ``alpha * lr0`` [0] at the end of training.

    Example:

    >>> sched = make_schedule("exponential", 0.1, steps_per_epoch=10, epochs=5, s=2)
    >>> round(float(sched(20)), 4)  # epoch 2 = one s
    0.01
    """
    total_steps = int(steps_per_epoch) * int(epochs)
    key = name.lower()
    try:
        if key == "constant":
            return ConstantLR(learning_rate, **params)
        if key == "power":
            return PowerLR(learning_rate, s=params.pop("s", steps_per_epoch), **params)
        if key == "exponential":
            return ExponentialLR(learning_rate, s=params.pop("s", epochs),
                                 steps_per_epoch=steps_per_epoch, **params)
        if key == "piecewise":
            boundaries = params.pop("boundaries")
            values = params.pop("values", [learning_rate * 0.1**i for i in range(len(boundaries) + 1)])
            return PiecewiseLR(boundaries, values, steps_per_epoch=steps_per_epoch, **params)
        if key == "plateau":
            kwargs = {"monitor": "val_loss", "factor": 0.5, "patience": 5, **params}
            from .callbacks import ResumablePlateau

            return ResumablePlateau(**kwargs)
        if key == "1cycle":
            return OneCycleLR(learning_rate, total_steps=total_steps, **params)
        if key == "cosine":
            warmup = round(params.pop("warmup_epochs", 0) * steps_per_epoch)
            return WarmupCosineLR(learning_rate, total_steps=total_steps,
                                  warmup_steps=warmup, **params)
    except TypeError as err:  # an unexpected keyword
        raise ValueError(f"Bad parameters for schedule {name!r}: {err}") from None
    except KeyError as err:
        raise ValueError(f"Schedule {name!r} needs parameter {err}.") from None
    raise _unknown_name("schedule", name, SCHEDULES)


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
        self._multiplier_by_key = {self._var_key(v): self.multiplier(v) for v in variables}
        super().build(variables)

    def update_step(self, gradient, variable, learning_rate):
        # Under TF, `variable` is the backing tf.Variable, so look it up by key.
        m = self._multiplier_by_key.get(self._var_key(variable), 1.0)
        if m != 1.0:
            learning_rate = learning_rate * m
        return super().update_step(gradient, variable, learning_rate)

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


def _discriminative_class(cls: type) -> type:
    name = f"Discriminative{cls.__name__}"
    klass = type(name, (_PerVariableLR, cls), {
        "__doc__": f"{cls.__name__} with per-variable learning-rate multipliers "
                   "(see :func:`discriminative_optimizer`).",
        "__module__": __name__,
    })
    return keras.saving.register_keras_serializable(package="finetune", name=name)(klass)


_DISCRIMINATIVE = {cls: _discriminative_class(cls)
                   for cls in {spec[0] for spec in _OPTIMIZER_SPECS.values()}}
for _klass in _DISCRIMINATIVE.values():
    globals()[_klass.__name__] = _klass


def group_multipliers(n_groups: int, spread: float = 100.0) -> list[float]:
    """Geometric learning-rate multipliers from ``1 / spread`` to 1 (fastai's ``slice``).

    Example:

    >>> group_multipliers(3)
    [0.01, 0.1, 1.0]
    """
    if n_groups < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}.")
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
    and :class:`finetune.trainer.Trainer`, with any schedule and any name of
    :data:`OPTIMIZERS`; it is saved with the model (multipliers by variable path).

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(2)])
    >>> opt = discriminative_optimizer("adam", 1e-3, layer_groups(model, 2), low=1e-5)
    >>> sorted(opt.lr_multipliers.values())
    [0.01, 0.01, 1.0, 1.0]
    """
    if low is not None:
        if isinstance(learning_rate, LearningRateSchedule):
            raise ValueError("`low` needs a float learning rate; use `spread` with a schedule.")
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
    children = getattr(layer, "layers", None)
    if children is None:
        return [layer] if layer.trainable_weights else []
    return [leaf for child in children for leaf in _leaf_layers(child)]


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
