"""A phase of a recipe as a small value, and the one function that fits it.

Example:
    >>> head = Phase("head", trains="head", inputs="features", lr=1e-3, epochs=10, patience=3)
    >>> tune = Phase("tune", trains="unfrozen", inputs="images", lr=1e-5, epochs=5, keep="if_better")
    >>> tune.replace(epochs=8).epochs, head.trains
    (8, 'head')
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import keras

from ..models import metrics_for
from .callbacks import (
    Checkpointer, EpochLog, EpochSeeds, PhaseProgress, ResumableEarlyStopping, Stateful, StopOnNaN, TimeBudget,
)


from ..errors import TrainingDiverged  # noqa: E402,F401  (defined with the other errors; importable here too)


@dataclass(frozen=True)
class Phase:
    """One stage of a recipe: what trains, on what inputs, how fast and for how long.

    Attributes:
        name: Names the phase in the history (its ``phase`` column) and in checkpoint files.
        trains: ``"head"`` (the new classifier, base frozen) or ``"unfrozen"``
            (the whole model after the unfreeze policy is applied to the base;
            BatchNormalization stays frozen).
        inputs: ``"features"`` (the frozen base runs once per image and the head
            trains on its cached outputs), ``"activations"`` (the frozen bottom,
            below the unfreeze point, runs once per image and augmented copy and
            the unfrozen top trains on its cached outputs) or ``"images"`` (live, augmented).
        lr: Peak learning rate.
        epochs: Epochs to train (0 skips the phase).
        schedule: Learning-rate schedule within the phase (:data:`finetune.choices.SCHEDULES`).
        warmup_epochs: Linear warm-up of the cosine schedule.
        patience: Early stopping on the monitored loss, best weights restored (0: off).
        discriminative: Base blocks learn at rates spread from ``lr/100`` to ``lr`` (fastai).
        schedule_params: The schedule's declared parameters (``TrainConfig.schedule_params``).
        keep: ``"always"``, or ``"if_better"``: the phase's weights are kept only
            if its best monitored loss beats every earlier epoch's.
    """

    name: str
    trains: Literal["head", "unfrozen"]
    inputs: Literal["features", "activations", "images"]
    lr: float
    epochs: int
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    patience: int = 0
    discriminative: bool = False
    schedule_params: dict = field(default_factory=dict)
    keep: Literal["always", "if_better"] = "always"

    def replace(self, **changes: Any) -> "Phase":
        return dataclasses.replace(self, **changes)


@dataclass
class PhaseData:
    """What a phase trains on: batches for epochs ``[first, last)``, validation batches, steps per epoch."""

    train: Any
    val: Any
    steps: int


@dataclass
class FitContext:
    """What every phase of one run shares."""

    loss: str
    optimizer: str
    seed: int
    monitor: str
    rows: list[dict[str, Any]]
    seeded_model: keras.Model
    strategy: Any = None
    clipnorm: float | None = None
    jit: bool = False
    loop: str = "fit"
    callbacks: Sequence[keras.callbacks.Callback] = field(default_factory=tuple)
    verbose: int = 1
    store: Any = None
    multi_label: bool = False
    soft_labels: bool = False  # mixup: training targets are mixed label rows
    deadline: float | None = None  # time.monotonic() by which the current phase must end (a --time-budget)
    budget_stop: Any = None  # the TimeBudget callback of the last phase fitted, when there was a deadline


def compile_phase(target: keras.Model, phase: Phase, context: FitContext, steps: int,
                  groups: Sequence[Sequence[Any]] | None = None) -> Stateful | None:
    """Compile ``target`` for ``phase``; return the plateau callback when the schedule is one."""
    from .optim import discriminative_optimizer, make_optimizer, make_schedule

    rate: Any = phase.lr
    plateau = None
    if phase.schedule != "constant":
        extra = {"warmup_epochs": phase.warmup_epochs} if phase.schedule == "cosine" else dict(phase.schedule_params)
        schedule = make_schedule(phase.schedule, phase.lr, steps_per_epoch=steps, epochs=max(phase.epochs, 1), **extra)
        if isinstance(schedule, keras.callbacks.Callback):
            plateau = schedule
        else:
            rate = schedule
    extra = {"clipnorm": context.clipnorm} if context.clipnorm else {}
    scope = context.strategy.scope() if context.strategy is not None else contextlib.nullcontext()
    with scope:
        if phase.discriminative and groups:
            optimizer = discriminative_optimizer(context.optimizer, rate, groups, **extra)
        else:
            optimizer = make_optimizer(context.optimizer, rate, **extra)
        target.compile(optimizer=optimizer, loss=context.loss, metrics=metrics_for(context.multi_label, context.soft_labels),
                       jit_compile=context.jit)
    return plateau


def fit_phase(target: keras.Model, phase: Phase, data: PhaseData, context: FitContext, *, first_epoch: int,
              resume: bool = False, groups: Sequence[Sequence[Any]] | None = None) -> None:
    """Fit ``target`` for ``phase``: compile, standard callbacks, ``fit`` or the Trainer, checkpoints.

    Epochs are numbered across phases: this phase runs epochs
    ``first_epoch .. first_epoch + phase.epochs - 1`` (0-based), starting after
    the rows already in ``context.rows`` (a resumed run). One row per epoch is
    appended to ``context.rows``.

    Raises:
        TrainingDiverged: the loss became NaN or infinite (the last good checkpoint is kept).
    """
    last = first_epoch + phase.epochs
    initial = len(context.rows)
    if initial >= last:
        return
    plateau = compile_phase(target, phase, context, data.steps, groups)
    guard = StopOnNaN()
    stateful: dict[str, Stateful] = {}
    if phase.patience:
        stateful["early_stopping"] = ResumableEarlyStopping(context.monitor, patience=phase.patience,
                                                            restore_best_weights=True)
    if plateau is not None:
        stateful["plateau"] = plateau
    if resume and context.store is not None:
        for name, state in context.store.restore(target, phase.name).items():
            if name in stateful:
                stateful[name].load_state_dict(state)
    callbacks = [EpochSeeds(context.seed, context.seeded_model), guard, EpochLog(phase.name, context.rows),
                 *context.callbacks, *stateful.values()]
    context.budget_stop = TimeBudget(context.deadline) if context.deadline is not None else None
    if context.budget_stop is not None:
        callbacks.append(context.budget_stop)
    progress = PhaseProgress(phase.name, last, context.monitor) if context.verbose else None
    # On a terminal, live-image epochs keep Keras's per-epoch bar (they are long); cached epochs share one line.
    keras_verbose = 1 if (progress is not None and progress.tty and phase.inputs == "images") else 0
    if progress is not None and not keras_verbose:
        callbacks.append(progress)
    if context.store is not None:
        callbacks.append(Checkpointer(context.store, phase.name, context.rows, stateful, guard))
    kwargs = dict(validation_data=data.val, initial_epoch=initial, epochs=last, callbacks=callbacks,
                  verbose=keras_verbose)
    if context.loop == "trainer":
        from .loop import Trainer

        Trainer(target).fit(data.train, **kwargs)
    else:
        target.fit(data.train, steps_per_epoch=data.steps, shuffle=False, **kwargs)
    if guard.diverged_at is not None:
        epoch, batch = guard.diverged_at
        raise TrainingDiverged(
            f"the loss became NaN/inf in {phase.name} epoch {epoch}, batch {batch}: the learning rate is probably "
            f"too high (now {phase.lr:g}; try 10x lower), or inputs are badly scaled"
            + (f"; the last good checkpoint is in {context.store.dir}" if context.store is not None else "")
        )
