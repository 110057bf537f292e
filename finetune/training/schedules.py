"""Learning-rate schedules by name: ``make_schedule("cosine", 1e-3, steps_per_epoch=100, epochs=10)``.

Every schedule is a function of the optimizer's step counter (``iterations``),
which ``model.save`` stores, so a resumed run continues on the same trajectory.
Where Keras has the same schedule it is used (``exponential`` is
``ExponentialDecay``, ``cosine`` is ``CosineDecay``); the others are registered
Keras serializables (package ``finetune``): import this module (or
:mod:`finetune.training.optim`) before ``keras.saving.load_model``.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import ops
from keras.optimizers.schedules import CosineDecay, ExponentialDecay, LearningRateSchedule

from ..choices import SCHEDULES
from ..errors import ConfigError
from ..util import suggest

__all__ = ["SCHEDULES", "make_schedule", "ConstantLR", "PowerLR", "PiecewiseLR", "OneCycleLR"]


def _unknown_name(kind: str, name: str, known: Sequence[str]) -> ConfigError:
    hint = suggest(name, known)
    return ConfigError(f"Unknown {kind} {name!r}.{hint} Known: {', '.join(known)}.")


def _step(step: Any) -> Any:
    return ops.cast(step, "float32")


# Keras has no constant schedule (an optimizer takes a float, but make_schedule
# always returns a callable of the step).
@keras.saving.register_keras_serializable(package="finetune")
class ConstantLR(LearningRateSchedule):
    """``lr`` at every step."""

    def __init__(self, learning_rate: float):
        self.learning_rate = float(learning_rate)

    def __call__(self, step):
        return ops.cast(self.learning_rate, "float32") + 0.0 * _step(step)

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate}


# Keras's InverseTimeDecay is lr0 / (1 + step / s), without the power ``c``.
@keras.saving.register_keras_serializable(package="finetune")
class PowerLR(LearningRateSchedule):
    """Power scheduling: ``lr0 / (1 + step / s) ** c`` (``s`` in steps)."""

    def __init__(self, learning_rate: float, s: float, c: float = 1.0):
        self.learning_rate, self.s, self.c = float(learning_rate), float(s), float(c)

    def __call__(self, step):
        return self.learning_rate / ops.power(1.0 + _step(step) / self.s, self.c)

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "s": self.s, "c": self.c}


# Keras's PiecewiseConstantDecay switches *after* a boundary step (step > b);
# this one switches *at* it (step >= b), with boundaries in (possibly fractional) epochs.
@keras.saving.register_keras_serializable(package="finetune")
class PiecewiseLR(LearningRateSchedule):
    """``values[i]`` where ``i`` is the number of ``boundaries`` (in epochs) reached.

    ``epoch = step / steps_per_epoch``; at exactly a boundary the next value applies.
    """

    def __init__(self, boundaries: Sequence[float], values: Sequence[float], steps_per_epoch: int):
        if len(values) != len(boundaries) + 1:
            raise ConfigError(f"piecewise needs len(values) == len(boundaries) + 1, "
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


# Keras has no 1cycle schedule.
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


def _exponential(learning_rate: float, s: float, steps_per_epoch: int) -> ExponentialDecay:
    """``lr0 * 0.1 ** (step / (s * steps_per_epoch))``: a tenth every ``s`` epochs, continuously."""
    return ExponentialDecay(float(learning_rate), decay_steps=float(s) * int(steps_per_epoch),
                            decay_rate=0.1)


def _warmup_cosine(learning_rate: float, total_steps: int, warmup_steps: int = 0,
                   alpha: float = 0.0) -> CosineDecay:
    """Linear warm-up from 0 to ``lr0`` over ``warmup_steps``, then cosine decay to
    ``alpha * lr0`` at ``total_steps`` (held afterwards)."""
    learning_rate, warmup_steps = float(learning_rate), int(warmup_steps)
    decay_steps = max(int(total_steps) - warmup_steps, 1)
    if warmup_steps == 0:
        return CosineDecay(learning_rate, decay_steps, alpha=float(alpha))
    return CosineDecay(0.0, decay_steps, alpha=float(alpha),
                       warmup_target=learning_rate, warmup_steps=warmup_steps)


# Files saved by earlier versions name the hand-written classes these Keras
# schedules replaced; they load as the Keras schedules (same values).
@keras.saving.register_keras_serializable(package="finetune", name="ExponentialLR")
class _SavedExponentialLR(ExponentialDecay):
    @classmethod
    def from_config(cls, config):
        return _exponential(**config)


@keras.saving.register_keras_serializable(package="finetune", name="WarmupCosineLR")
class _SavedWarmupCosineLR(CosineDecay):
    @classmethod
    def from_config(cls, config):
        return _warmup_cosine(**config)


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
      ``s`` in epochs [``epochs``: lr0/10 at the end]. A Keras ``ExponentialDecay``.
    - ``piecewise``: ``boundaries`` in epochs (required), ``values``
      [``lr0 * factors[i]``], ``factors`` [``0.1 ** i``].
    - ``plateau``: ``factor`` [0.5], ``patience`` [5], ``monitor`` ["val_loss"], ...
    - ``1cycle``: Smith's linear 1cycle to max lr ``lr0``; ``phase`` [0.45],
      ``start_div`` [10], ``final_div`` [1000]. See :class:`OneCycleLR`.
    - ``cosine``: linear warm-up from 0 over ``warmup_epochs`` [0] then cosine decay
      to ``alpha * lr0`` [0] at the end of training. A Keras ``CosineDecay``.

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
            return _exponential(learning_rate, s=params.pop("s", epochs),
                                steps_per_epoch=steps_per_epoch, **params)
        if key == "piecewise":
            boundaries = params.pop("boundaries")
            factors = params.pop("factors", [0.1**i for i in range(len(boundaries) + 1)])
            values = params.pop("values", [learning_rate * f for f in factors])
            return PiecewiseLR(boundaries, values, steps_per_epoch=steps_per_epoch, **params)
        if key == "plateau":
            kwargs = {"monitor": "val_loss", "factor": 0.5, "patience": 5, **params}
            from .callbacks import ResumablePlateau

            return ResumablePlateau(**kwargs)
        if key == "1cycle":
            return OneCycleLR(learning_rate, total_steps=total_steps, **params)
        if key == "cosine":
            warmup = round(params.pop("warmup_epochs", 0) * steps_per_epoch)
            return _warmup_cosine(learning_rate, total_steps=total_steps,
                                  warmup_steps=warmup, **params)
    except TypeError as err:  # an unexpected keyword
        raise ConfigError(f"Bad parameters for schedule {name!r}: {err}") from None
    except KeyError as err:
        raise ConfigError(f"Schedule {name!r} needs parameter {err}.") from None
    raise _unknown_name("schedule", name, SCHEDULES)
