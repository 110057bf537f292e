"""The two-phase fine-tuning recipe as one call.

Phase 1 trains a new head on a frozen base; phase 2 unfreezes the top of the
base and trains on at a lower learning rate. ``model.fit`` runs underneath,
so any Keras callback works. By default phase 1 runs the frozen base once per
image and trains the head on the cached features (the same model as running it
live, many times faster).

With a ``checkpoint_dir`` every epoch is checkpointed (weights, optimizer
state, history, callback states); :func:`fine_tune` with ``resume=True``
continues an interrupted run from its last completed epoch. Each epoch's
shuffle order depends only on the seed and the epoch number, so a resumed run
ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any, Sequence

import keras
import numpy as np

from ..config import ConfigError, TrainConfig
from ..data import as_image_folder, balanced_class_weights, make_inputs
from ..models import (
    Backbone, UnfreezePolicy, backbone_from_model, build_model, freeze, get_backbone, loss_for, metrics_for,
)
from .checkpoint import RunCheckpoint
from .inputs import PhaseInputs
from .phase import FitContext, Phase, fit_phase
from .resolve import DEFAULT_COPIES, Recipe, gather_facts, lookup_backbone, resolve  # noqa: F401  (DEFAULT_COPIES: old import path)
from .result import FineTuneResult


def recipe_phases(config: TrainConfig) -> list[Phase]:
    """The phases ``config`` asks for: a head on the frozen base, then the top of the base unfrozen."""
    common = dict(schedule=config.schedule, warmup_epochs=config.warmup_epochs, patience=config.patience,
                  schedule_params=config.schedule_params())
    tune_patience = config.patience if config.tune_patience is None else config.tune_patience
    return [
        Phase("head", trains="head", inputs="features" if config.cache_features else "images",
              lr=config.lr, epochs=config.head_epochs, **common),
        Phase("tune", trains="unfrozen", inputs=config.resolved_tune_inputs, lr=config.resolved_tune_lr,
              epochs=config.tune_epochs,
              discriminative=config.discriminative, keep="if_better", **{**common, "patience": tune_patience}),
    ]


def fine_tune(
    data: Any,
    config: TrainConfig | None = None,
    *,
    validation_data: Any = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 1,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    recipe: Recipe | None = None,
    **overrides: Any,
) -> "FineTuneResult":
    """Fine-tune a pretrained backbone on an image folder, in two phases.

    Args:
        data: A class-folder tree (or one split into train/val[/test]), a CSV of
            ``path,label[,split]``, ``(x, y)`` arrays (images 0-255, (N, H, W[, C]), any size),
            a ``tf.data.Dataset`` of ``(image, label)``, or an :class:`ImageFolder`.
        validation_data: With arrays or a dataset: the validation split, as in ``model.fit``.
        config: A :class:`TrainConfig`; keyword ``overrides`` replace its fields.
        callbacks: Extra Keras callbacks for both phases.
        verbose: 0 silent, 1 progress bars.
        checkpoint_dir: Where to checkpoint every epoch (for ``resume``).
        resume: Continue from the checkpoint in ``checkpoint_dir``.
        recipe: A resolved :class:`~finetune.training.resolve.Recipe` to replay (``--resume``); by default
            the config is resolved on this data by :func:`~finetune.training.resolve.resolve`.

    Returns:
        A :class:`FineTuneResult` whose ``model`` is a plain ``keras.Model`` (raw RGB [0, 255] at the
        spec's size in, probabilities out) and whose ``predict`` takes images of any size, as training did.

    Raises:
        ConfigError: a config the data rules out (before any network is built).
        TrainingDiverged: the loss became NaN or infinite (the last good
            checkpoint is kept).

    Example:
        >>> result = fine_tune("flowers/", head_epochs=5, tune_epochs=3)   # doctest: +SKIP
        >>> result.model.save("flowers.keras")                              # doctest: +SKIP
        >>> result.predict(["rose.jpg"])                                    # doctest: +SKIP
    """
    config = TrainConfig.from_dict({**(config or TrainConfig()).to_dict(), **overrides})
    start = time.perf_counter()
    folder = as_image_folder(data, **config.split_args(), validation_data=validation_data)
    facts = gather_facts(config, folder)
    recipe = recipe or resolve(config, facts)
    scanned = time.perf_counter() - start
    with warnings.catch_warnings():
        # tf.data pipelines that drop undecodable files have no known length; Keras learns it in epoch 1.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        run = RecipeRun(folder, recipe, backbone=facts.backbone, callbacks=callbacks, verbose=verbose,
                        checkpoint_dir=checkpoint_dir, resume=resume)
        run.timings["scan"] = scanned
        for phase in recipe_phases(run.config):
            run.fit(phase)
        run.blend_bag()
        run.decide()
        return run.result()


class RecipeRun(PhaseInputs):
    """One run: the scanned data, a resolved :class:`~finetune.training.resolve.Recipe`, the model, and the
    phases fitted so far. It decides nothing and changes neither its recipe nor a config.

    Build it, call :meth:`fit` with each :class:`Phase` in order, then take
    :meth:`result`. Phases a resumed run already finished are skipped.
    """

    def __init__(self, folder, recipe: Recipe, *, backbone=None, callbacks=(), verbose: int = 1,
                 checkpoint_dir: str | os.PathLike | None = None, resume: bool = False):
        self.recipe, self.folder, self.spec = recipe, folder, recipe.spec
        self.config = config = recipe.config  # this run's own copy
        self.budget_end = time.monotonic() + 60 * config.time_budget if config.time_budget else None
        self.timings: dict[str, float] = {}
        keras.utils.set_random_seed(config.seed)
        if config.precision == "mixed":
            keras.mixed_precision.set_global_policy("mixed_float16")
        strategy = _strategy(config.strategy)
        if backbone is None:
            backbone = lookup_backbone(config, self.spec.kind)
        self.notes: list[str] = list(recipe.notes)  # what the run chose on its own, for the report
        with strategy.scope():
            if self.spec.kind == "text":
                from ..models.text_backbones import build_text_model

                self.parts = build_text_model(backbone, self.folder.num_classes, self.spec.size,
                                              weights=config.weights, head=config.head_config(),
                                              multi_label=self.folder.multi_label, vocabulary=self.spec.vocabulary,
                                              seed=config.seed)
            else:
                self.parts = build_model(backbone, self.folder.num_classes, weights=config.weights,
                                         image_size=self.spec.size, head=config.head_config(),
                                         augment=config.augment, seed=config.seed,
                                         multi_label=self.folder.multi_label, feature_taps=config.feature_taps)
        self.policy = _unfreeze_policy(config, self.parts.backbone)
        self.policy.start_index(self.parts.base)  # fail on a bad unfreeze point before any training
        self.class_weights = (balanced_class_weights(self.folder.counts("train"))
                              if config.class_weight == "balanced" else None)
        self.loader = dict(image_size=self.spec, batch_size=config.batch_size, binary=self.folder.binary)
        val_items = self.folder.splits.get("val") or []
        self.val_ds = make_inputs(val_items, **self.loader) if val_items else None
        if config.bn_stats == "adapt":
            self._adapt_batchnorm()

        self.store = RunCheckpoint(checkpoint_dir) if checkpoint_dir else None
        state = self.store.state() if (self.store is not None and resume) else {}
        if resume and not state:
            raise ConfigError(f"nothing to resume in {self.store.dir if self.store else '(no checkpoint dir)'}")
        self.completed: list[str] = list(state.get("completed", []))
        self.in_progress: str | None = state.get("phase")
        if self.completed:
            self.parts.model.load_weights(self.store.final_weights(self.completed[-1]))
        self.context = FitContext(
            loss=loss_for(self.folder.num_classes, self.folder.multi_label, config.label_smoothing, config.mixup > 0),
            soft_labels=config.mixup > 0, optimizer=config.optimizer, seed=config.seed,
            monitor="val_loss" if self.val_ds is not None else "loss", rows=list(state.get("rows", [])),
            seeded_model=self.parts.model, strategy=strategy, clipnorm=config.clipnorm, jit=config.jit,
            loop=recipe.loop, callbacks=list(callbacks), verbose=verbose, store=self.store,
            multi_label=self.folder.multi_label,
        )
        self.unfreeze_epoch: int | None = None
        self.ordinal = None
        self.unfrozen_layers: list[str] = []
        self.kept_earlier: bool = False
        self._activation_arrays: dict[tuple[str, int], tuple] = {}

    def _adapt_batchnorm(self) -> None:
        """AdaBN: the base's BatchNormalization statistics from the training images, before anything is cached."""
        from .bn_stats import adapt_batchnorm

        items, parts = self.folder.splits["train"], self.parts
        prepare = parts.preprocess if parts.preprocess is not None else (lambda x: x)
        batches = (prepare(x) for x, *_ in make_inputs(items, **self.loader))
        shift, ratio = adapt_batchnorm(parts.base, batches)
        self.notes.append(f"BatchNormalization statistics re-estimated on the {len(items)} training images (AdaBN): "
                          f"the moving means moved by {shift:.2f} ImageNet standard deviations on average, the "
                          f"variances scaled by {ratio:.2f} (geometric mean)")

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.context.rows

    def fit(self, phase: Phase) -> None:
        """Train ``phase`` (unless it has no epochs or a resumed run finished it already)."""
        if phase.epochs == 0:
            return
        started = time.perf_counter()
        parts, done_before = self.parts, [r for r in self.rows if r["phase"] != phase.name]
        first_epoch = len(done_before)
        if phase.trains == "unfrozen":
            self.unfrozen_layers = self.policy.apply(parts.base)
            self.unfreeze_epoch = first_epoch + 1
        if phase.name not in self.completed:
            before = parts.model.get_weights() if phase.keep == "if_better" else None
            data, target = self._data_for(phase, first_epoch)
            groups = self._groups() if phase.discriminative else None
            self.context.deadline = self._deadline(phase)
            fit_phase(target, phase, data, self.context, first_epoch=first_epoch,
                      resume=self.in_progress == phase.name, groups=groups)
            self._note_budget_stop(phase)
            if before is not None and not self._improved(phase, done_before):
                parts.model.set_weights(before)  # the phase did not help: keep the earlier weights
                self.kept_earlier = True
            if self.store is not None:
                self.store.finish_phase(parts.model, phase.name, self.rows)
        elif phase.keep == "if_better":
            self.kept_earlier = not self._improved(phase, done_before)
        self.timings[phase.name] = self.timings.get(phase.name, 0.0) + time.perf_counter() - started

    def blend_bag(self) -> None:
        """A text recipe's last step: a bag of token n-grams fitted on the training texts and blended into the
        model half and half (:mod:`~finetune.training.bag_blend`); val's log losses go to the notes."""
        if not self.config.bag_blend:
            return
        if self.budget_end is not None and time.monotonic() > self.budget_end:
            self.notes.append("bag-of-words blend: the time budget is spent; not fitted")
            return
        from ..evaluation.predict import probabilities
        from ..models.token_bag import vocabulary_size, with_token_bag
        from .bag_blend import BLEND_SHARE, fit_token_bag, log_losses

        started = time.perf_counter()
        texts, labels = zip(*self.folder.splits["train"])
        fitted = fit_token_bag(self.spec.tokenize(list(texts)), np.asarray(labels), self.folder.num_classes,
                               vocabulary_size(self.parts.model), tokens=self.spec.token_strings(),
                               seed=self.config.seed)
        network = self.parts.model
        self.parts.model = with_token_bag(network, fitted.layer, BLEND_SHARE)
        what = (f"bag-of-words blend: TF-IDF of token 1-2-grams and their character 2-5-grams + logistic "
                f"regression (C={fitted.C:g} by cross-validation) on the {len(texts)} training texts, averaged half "
                "and half with the network")
        if self.val_ds is not None:
            p_net, val_labels = probabilities(network, self.val_ds)
            tokens = [network.input[k] for k in ("token_ids", "padding_mask")]
            p_bag, _ = probabilities(keras.Model(network.input, fitted.layer(tokens)), self.val_ds)
            what += "; val log loss " + ", ".join(f"{k} {v:.3f}" for k, v in log_losses(p_net, p_bag, val_labels).items())
        self.notes.append(what)
        self.timings["bag"] = time.perf_counter() - started

    def decide(self) -> None:
        """Fit the config's decision rule on val: ``--ordinal`` cut points (for accuracy, or balanced accuracy
        under ``decision: balanced``), else for ``decision: balanced`` a class-prior correction in the last bias."""
        if self.config.decision != "balanced" and not self.config.ordinal:
            return
        rule = "ordinal" if self.config.ordinal else "decision balanced"
        if self.val_ds is None:
            self.notes.append(f"{rule}: no validation split to fit the rule on; plain argmax")
            return
        if self.config.ordinal:
            from ..evaluation.predict import probabilities
            from .ordinal import fit_ordinal

            self.ordinal = fit_ordinal(*probabilities(self.parts.model, self.val_ds), metric=self.config.decision)
            self.notes.append(self.ordinal.describe())
            return
        from .decision import correct_priors

        self.notes.append(correct_priors(self.parts.model, self.val_ds, self.folder.counts("train")).describe())

    def result(self) -> FineTuneResult:
        from .optim import make_optimizer

        freeze(self.parts.base)
        # Compiled afresh for the frozen base: ready for model.fit, and saved without a stale phase-2 optimizer.
        self.parts.model.compile(optimizer=make_optimizer(self.config.optimizer, self.config.lr),
                                 loss=loss_for(self.folder.num_classes, self.folder.multi_label),
                                 metrics=metrics_for(self.folder.multi_label))
        self.parts.model.optimizer.build(self.parts.model.trainable_variables)
        for name in ("head", "tune"):
            self.timings.setdefault(name, 0.0)
        return FineTuneResult(self.parts.model, self.parts, self.folder, self.config, self.rows,
                              self.unfreeze_epoch, self.unfrozen_layers, self.timings, self.kept_earlier,
                              self.policy.describe(), self.notes, self.ordinal, self.spec, self.recipe)

    # -- inputs of a phase ---------------------------------------------------------

    def _groups(self) -> list[list]:
        from .optim import layer_groups

        return [g for g in layer_groups(self.parts.base, 3) if g] + [self.parts.classifier.trainable_variables]


    def _deadline(self, phase: Phase) -> float | None:
        """When ``phase`` must end under ``--time-budget``: the head phase takes at most a third of what is left
        when a tuning phase follows (it is the cheap one), the last phase the rest."""
        if self.budget_end is None:
            return None
        if phase.trains == "head" and self.config.tune_epochs:
            return time.monotonic() + (self.budget_end - time.monotonic()) / 3
        return self.budget_end

    def _note_budget_stop(self, phase: Phase) -> None:
        stop = self.context.budget_stop
        if stop is not None and stop.stopped_after is not None:
            ran = sum(r["phase"] == phase.name for r in self.rows)
            self.notes.append(f"time budget {self.config.time_budget:g} min: {phase.name} stopped after {ran} of "
                              f"{phase.epochs} epochs (the next, about {stop.epoch_seconds:.0f} s, would overrun)")

    def _improved(self, phase: Phase, earlier: list[dict[str, Any]]) -> bool:
        monitor = self.context.monitor
        best_before = min((r.get(monitor, np.inf) for r in earlier), default=np.inf)
        best_now = min((r.get(monitor, np.inf) for r in self.rows if r["phase"] == phase.name), default=np.inf)
        return bool(best_now <= best_before)


def _strategy(name: str):
    from .distribute import make_strategy  # the one place that turns a strategy name into a strategy

    return make_strategy(name)


def _unfreeze_policy(config: TrainConfig, spec: Backbone) -> UnfreezePolicy:
    common = dict(block_pattern=spec.block_pattern, keep_frozen=tuple(getattr(spec, "unused_layers", ())))
    if config.unfreeze_blocks is not None:
        return UnfreezePolicy(last_blocks=config.unfreeze_blocks, **common)
    if config.unfreeze_fraction is not None:
        return UnfreezePolicy(fraction=config.unfreeze_fraction, **common)
    return UnfreezePolicy(from_layer=config.unfreeze_from or spec.default_unfreeze, **common)
