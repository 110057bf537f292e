"""The callbacks every phase runs, each with ``state_dict()`` / ``load_state_dict()`` where it has state.

The convention is Lightning's: a checkpoint stores ``callback.state_dict()``
for every stateful callback and a resumed run hands it back with
``load_state_dict`` before training continues, so a resumed run makes the
same decisions (early stopping, learning-rate reductions) as an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol, runtime_checkable

import keras
import numpy as np

from ..models.graph import walk_layers


@runtime_checkable
class Stateful(Protocol):
    """A callback whose state survives a restart."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _finite_or_none(value: Any) -> float | None:
    value = float(value) if value is not None else None
    return value if value is not None and math.isfinite(value) else None


class EpochLog(keras.callbacks.Callback):
    """Records one row per epoch: phase, metrics, learning rate and seconds."""

    def __init__(self, phase: str, rows: list[dict[str, Any]]):
        super().__init__()
        self.phase, self.rows = phase, rows
        self._start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, "phase": self.phase}
        row.update({k: float(v) for k, v in (logs or {}).items() if k not in ("learning_rate", "lr")})
        row["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row["seconds"] = round(time.perf_counter() - self._start, 3)
        self.rows.append(row)


class EpochSeeds(keras.callbacks.Callback):
    """Reseeds every random layer (dropout, augmentation) from (seed, epoch) at each epoch start.

    Randomness then depends only on the epoch number, so an interrupted and
    resumed run draws exactly what an uninterrupted one would.
    """

    def __init__(self, seed: int, model: keras.Model):
        super().__init__()
        self.seed, self.generators = seed, seed_generators(model)

    def on_epoch_begin(self, epoch, logs=None):
        for i, generator in enumerate(self.generators):
            state = generator.state
            value = np.asarray([self.seed * 1_000_003 + epoch * 7919 + i, 0])
            state.assign(value.astype(keras.ops.convert_to_numpy(state.value).dtype))


def seed_generators(model: keras.Model) -> list:
    """Every ``keras.random.SeedGenerator`` held by a layer of ``model``, once each."""
    found, seen = [], set()
    for layer in [model, *walk_layers(model)]:
        for value in vars(layer).values():
            if isinstance(value, keras.random.SeedGenerator) and id(value) not in seen:
                seen.add(id(value))
                found.append(value)
    return found


class StopOnNaN(keras.callbacks.TerminateOnNaN):
    """Keras's ``TerminateOnNaN``, remembering where: ``diverged_at = (epoch, batch)``, 1-based."""

    def __init__(self):
        super().__init__()
        self.diverged_at: tuple[int, int] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        super().on_batch_end(batch, logs)
        if self.model.stop_training and self.diverged_at is None:
            self.diverged_at = (self._epoch + 1, batch + 1)


class _Resumable:
    """Mixin: ``load_state_dict`` is applied at the next ``on_train_begin`` (which resets Keras callbacks)."""

    _resumed: dict[str, Any] | None = None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resumed = dict(state)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._resumed:
            for key, value in self._resumed.items():
                if key != "best" or value is not None:  # an infinite best was stored as None
                    setattr(self, key, value)


class ResumableEarlyStopping(_Resumable, keras.callbacks.EarlyStopping):
    """``EarlyStopping`` whose counters and best weights survive a restart."""

    def state_dict(self) -> dict[str, Any]:
        return {"wait": self.wait, "best": _finite_or_none(self.best), "best_epoch": self.best_epoch,
                "best_weights": self.best_weights}


class ResumablePlateau(_Resumable, keras.callbacks.ReduceLROnPlateau):
    """``ReduceLROnPlateau`` whose counters survive a restart (the rate itself is optimizer state)."""

    def state_dict(self) -> dict[str, Any]:
        return {"wait": self.wait, "best": _finite_or_none(self.best), "cooldown_counter": self.cooldown_counter}


class Checkpointer(keras.callbacks.Callback):
    """After every epoch, saves the model, its optimizer, the history and every stateful callback."""

    def __init__(self, store, phase: str, rows: list, stateful: dict[str, Stateful], guard: StopOnNaN):
        super().__init__()
        self.store, self.phase, self.rows, self.stateful, self.guard = store, phase, rows, stateful, guard

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.diverged_at is not None:
            return  # never overwrite the last good checkpoint with a diverged one
        states = {name: callback.state_dict() for name, callback in self.stateful.items()}
        self.store.save(self.model, self.phase, self.rows, states)


class PhaseProgress(keras.callbacks.Callback):
    """One line per phase on a terminal (redrawn in place), or one plain line per epoch in a log.

    Keras prints a progress bar per epoch: a hundred cached head epochs make a
    hundred bars, and in a log file every redraw is kept as escape codes.
    """

    def __init__(self, phase: str, last_epoch: int, monitor: str, stream=None, tty: bool | None = None):
        import sys

        super().__init__()
        self.phase, self.last_epoch, self.monitor = phase, last_epoch, monitor
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.best: tuple[float, int] | None = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is not None and (self.best is None or value < self.best[0]):
            self.best = (float(value), epoch + 1)
        shown = "  ".join(f"{k} {float(v):.4f}" for k, v in logs.items() if k in ("loss", "accuracy", "val_loss",
                                                                                  "val_accuracy"))
        best = f"  best {self.monitor} {self.best[0]:.4f} (epoch {self.best[1]})" if self.best else ""
        if self.tty:
            done = epoch + 1
            width = 24
            filled = int(width * min(done, self.last_epoch) / max(self.last_epoch, 1))
            bar = "=" * filled + ">" * (filled < width) + " " * (width - filled - (filled < width))
            self.stream.write(f"\r{self.phase:<5} [{bar}] epoch {done}/{self.last_epoch}  {shown}{best}\033[K")
        else:
            self.stream.write(f"{self.phase} epoch {epoch + 1}/{self.last_epoch}  {shown}{best}\n")
        self.stream.flush()

    def on_train_end(self, logs=None):
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


class TimeBudget(keras.callbacks.Callback):
    """Stops training when the next epoch, expected to last as long as the last one, would end after ``deadline``.

    ``deadline`` is a :func:`time.monotonic` value. The stop goes through
    ``model.stop_training``, so early stopping still restores the best weights.
    """

    def __init__(self, deadline: float):
        super().__init__()
        self.deadline, self.stopped_after, self.epoch_seconds = deadline, None, 0.0
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        now = time.monotonic()
        self.epoch_seconds = now - self._started
        if now + self.epoch_seconds > self.deadline:
            self.model.stop_training = True
            self.stopped_after = epoch + 1
