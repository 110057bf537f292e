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

import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import keras
import numpy as np

from ..config import ConfigError, TrainConfig
from ..data import (
    ImageFolder, as_image_folder, balanced_class_weights, concat_epochs, epoch_batches, make_dataset, typical_size,
)
from ..models import (
    Backbone, ModelParts, UnfreezePolicy, backbone_from_model, build_model, freeze, get_backbone, input_size_for, loss_for,
)
from .checkpoint import RunCheckpoint
from .features import FeatureCache
from .phase import FitContext, Phase, PhaseData, fit_phase


def recipe_phases(config: TrainConfig) -> list[Phase]:
    """The phases ``config`` asks for: a head on the frozen base, then the top of the base unfrozen."""
    common = dict(schedule=config.schedule, warmup_epochs=config.warmup_epochs, patience=config.patience)
    return [
        Phase("head", trains="head", inputs="features" if config.cache_features else "images",
              lr=config.lr, epochs=config.head_epochs, **common),
        Phase("tune", trains="unfrozen", inputs=config.resolved_tune_inputs, lr=config.resolved_tune_lr,
              epochs=config.tune_epochs,
              discriminative=config.discriminative, keep="if_better", **common),
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
    **overrides: Any,
) -> "FineTuneResult":
    """Fine-tune a pretrained backbone on an image folder, in two phases.

    Args:
        data: A class-folder tree (or one split into train/val[/test]), a CSV of
            ``path,label[,split]``, ``(x, y)`` arrays (images 0-255, (N, H, W[, C])),
            a ``tf.data.Dataset`` of ``(image, label)``, or an :class:`ImageFolder`.
        validation_data: With arrays or a dataset: the validation split, as in ``model.fit``.
        config: A :class:`TrainConfig`; keyword ``overrides`` replace its fields.
        callbacks: Extra Keras callbacks for both phases.
        verbose: 0 silent, 1 progress bars.
        checkpoint_dir: Where to checkpoint every epoch (for ``resume``).
        resume: Continue from the checkpoint in ``checkpoint_dir``.

    Returns:
        A :class:`FineTuneResult` whose ``model`` is a plain ``keras.Model``.

    Raises:
        TrainingDiverged: the loss became NaN or infinite (the last good
            checkpoint is kept).

    Example:
        >>> result = fine_tune("flowers/", head_epochs=5, tune_epochs=3)   # doctest: +SKIP
        >>> result.model.save("flowers.keras")                              # doctest: +SKIP
    """
    config = TrainConfig.from_dict({**(config or TrainConfig()).to_dict(), **overrides})
    with warnings.catch_warnings():
        # tf.data pipelines that drop undecodable files have no known length; Keras learns it in epoch 1.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        run = RecipeRun(data, config, callbacks=callbacks, verbose=verbose, checkpoint_dir=checkpoint_dir, resume=resume,
                        validation_data=validation_data)
        for phase in recipe_phases(config):
            run.fit(phase)
        return run.result()


@dataclass
class FineTuneResult:
    """What :func:`fine_tune` returns.

    Attributes:
        model: The trained plain ``keras.Model`` (raw RGB [0, 255] in, probabilities out).
        parts: Its pieces (base, head, ...).
        folder: The scanned data (class names, splits, skipped files).
        config: The fully resolved configuration.
        history: One dict per epoch over both phases (``phase`` is ``head`` or ``tune``).
        unfreeze_epoch: The first epoch of phase 2 (1-based), or ``None``.
        unfrozen_layers: Names of the base layers trained in phase 2.
        unfreeze_policy: Where phase 2 started unfreezing, in words (e.g. "from layer block6a").
        notes: What the run chose on its own, and why (shown in the report).
        timings: Seconds spent scanning, caching features, and in each phase.
        kept_phase1: True when phase 2 did not beat phase 1 and its weights were restored.
    """

    model: keras.Model
    parts: ModelParts
    folder: ImageFolder
    config: TrainConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    unfreeze_epoch: int | None = None
    unfrozen_layers: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    kept_phase1: bool = False
    unfreeze_policy: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def class_names(self) -> list[str]:
        return self.folder.class_names

    @property
    def kept_phase(self) -> str:
        """The phase whose weights the model holds: ``"head"`` or ``"tune"``."""
        tuned = any(r["phase"] == "tune" for r in self.history)
        return "tune" if tuned and not self.kept_phase1 else "head"

    def phase_table(self) -> str:
        """Phase, epochs, best val loss and accuracy, seconds: a short fixed-width table.

        Example:
            >>> rows = [{"phase": "head", "val_loss": 0.6, "val_accuracy": 0.7}, {"phase": "tune", "val_loss": 0.5,
            ...          "val_accuracy": 0.8}]
            >>> print(FineTuneResult(None, None, None, None, rows, timings={"head": 3.0, "tune": 40.0}).phase_table())
            phase  epochs  best val_loss  best val_accuracy  seconds
            head        1         0.6000             0.7000        3
            tune        1         0.5000             0.8000       40
        """
        monitor = "val_loss" if any("val_loss" in r for r in self.history) else "loss"
        accuracy = monitor.replace("loss", "accuracy")
        lines = [f"phase  epochs  best {monitor:<8}  best {accuracy:<12}  seconds"]
        for phase in dict.fromkeys(r["phase"] for r in self.history):
            rows = [r for r in self.history if r["phase"] == phase]
            best_loss = min(r.get(monitor, float("nan")) for r in rows)
            best_acc = max(r.get(accuracy, float("nan")) for r in rows)
            lines.append(f"{phase:<5}  {len(rows):6d}  {best_loss:13.4f}  {best_acc:17.4f}  "
                         f"{self.timings.get(phase, 0.0):7.0f}")
        return "\n".join(lines)

    def kept_reason(self) -> str:
        """One sentence: which phase's weights the model holds, and why.

        Example:
            >>> rows = [{"phase": "head", "epoch": 1, "val_loss": 0.6}, {"phase": "tune", "epoch": 2, "val_loss": 0.7}]
            >>> FineTuneResult(None, None, None, None, rows, kept_phase1=True, timings={"tune": 40.0}).kept_reason()
            "phase 1 (head) weights kept: phase 2's best val_loss 0.7 (epoch 2) did not beat phase 1's 0.6 (epoch 1); phase 2's 40 s were discarded"
        """
        monitor = "val_loss" if any("val_loss" in r for r in self.history) else "loss"

        def best(phase: str) -> tuple[float, int]:
            rows = [r for r in self.history if r["phase"] == phase and monitor in r]
            row = min(rows, key=lambda r: r[monitor]) if rows else {monitor: float("nan"), "epoch": 0}
            return row[monitor], row["epoch"]

        (head, head_epoch), (tune, tune_epoch) = best("head"), best("tune")
        if not any(r["phase"] == "tune" for r in self.history):
            return f"phase 1 (head) weights kept: no phase 2 ran; best {monitor} {head:.4g} (epoch {head_epoch})"
        if self.kept_phase1:
            return (f"phase 1 (head) weights kept: phase 2's best {monitor} {tune:.4g} (epoch {tune_epoch}) did not beat "
                    f"phase 1's {head:.4g} (epoch {head_epoch}); phase 2's {self.timings.get('tune', 0):.0f} s were discarded")
        versus = f" beat phase 1's {head:.4g} (epoch {head_epoch})" if head_epoch else ""
        return f"phase 2 (tune) weights kept: its best {monitor} {tune:.4g} (epoch {tune_epoch}){versus}"


class RecipeRun:
    """One run: the scanned data, the model, and the phases fitted so far.

    Build it, call :meth:`fit` with each :class:`Phase` in order, then take
    :meth:`result`. Phases a resumed run already finished are skipped.
    """

    def __init__(self, data: Any, config: TrainConfig, *, callbacks=(), verbose: int = 1,
                 checkpoint_dir: str | os.PathLike | None = None, resume: bool = False, validation_data: Any = None):
        start = time.perf_counter()
        self.config = config
        self.folder = as_image_folder(data, val_split=config.val_split, test_split=config.test_split, seed=config.seed,
                                      validation_data=validation_data)
        if not isinstance(data, (str, os.PathLike)) and not config.data:
            config.data = self.folder.root  # arrays and datasets: where their PNGs were written
        self.timings: dict[str, float] = {"scan": time.perf_counter() - start}
        keras.utils.set_random_seed(config.seed)
        if config.precision == "mixed":
            keras.mixed_precision.set_global_policy("mixed_float16")
        strategy = _strategy(config.strategy)
        backbone = backbone_from_model(config.from_model, config.drop_top) if config.from_model else config.backbone
        self.notes: list[str] = []  # what the run chose on its own, for the report
        if config.image_size is None and not config.from_model:
            spec = get_backbone(backbone)
            config.image_size, why = input_size_for(spec, typical_size([p for p, _ in self.folder.splits["train"]]))
            self.notes.append(why)
        with strategy.scope():
            self.parts = build_model(backbone, self.folder.num_classes, weights=config.weights,
                                     image_size=config.image_size, head=config.head_config(),
                                     augment=config.augment, seed=config.seed)
        config.image_size = self.parts.image_size
        self.policy = _unfreeze_policy(config, self.parts.backbone)
        self.policy.start_index(self.parts.base)  # fail on a bad unfreeze point before any training
        self.class_weights = (balanced_class_weights(self.folder.counts("train"))
                              if config.class_weight == "balanced" else None)
        self.loader = dict(image_size=self.parts.image_size, batch_size=config.batch_size, binary=self.folder.binary,
                           resize=config.resize)
        val_items = self.folder.splits.get("val") or []
        self.val_ds = make_dataset(val_items, **self.loader) if val_items else None

        self.store = RunCheckpoint(checkpoint_dir) if checkpoint_dir else None
        state = self.store.state() if (self.store is not None and resume) else {}
        if resume and not state:
            raise ConfigError(f"nothing to resume in {self.store.dir if self.store else '(no checkpoint dir)'}")
        self.completed: list[str] = list(state.get("completed", []))
        self.in_progress: str | None = state.get("phase")
        if self.completed:
            self.parts.model.load_weights(self.store.final_weights(self.completed[-1]))
        self.context = FitContext(
            loss=loss_for(self.folder.num_classes), optimizer=config.optimizer, seed=config.seed,
            monitor="val_loss" if self.val_ds is not None else "loss", rows=list(state.get("rows", [])),
            seeded_model=self.parts.model, strategy=strategy, clipnorm=config.clipnorm, jit=config.jit,
            # model.fit fails under MultiWorkerMirroredStrategy (keras-team/keras #20585)
            loop="trainer" if config.strategy == "multiworker" else config.loop,
            callbacks=list(callbacks), verbose=verbose, store=self.store,
        )
        self.unfreeze_epoch: int | None = None
        self.unfrozen_layers: list[str] = []
        self.kept_earlier: bool = False
        self._activation_arrays: dict[tuple[str, int], tuple] = {}

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
            fit_phase(target, phase, data, self.context, first_epoch=first_epoch,
                      resume=self.in_progress == phase.name, groups=groups)
            if before is not None and not self._improved(phase, done_before):
                parts.model.set_weights(before)  # the phase did not help: keep the earlier weights
                self.kept_earlier = True
            if self.store is not None:
                self.store.finish_phase(parts.model, phase.name, self.rows)
        elif phase.keep == "if_better":
            self.kept_earlier = not self._improved(phase, done_before)
        self.timings[phase.name] = self.timings.get(phase.name, 0.0) + time.perf_counter() - started

    def result(self) -> FineTuneResult:
        from .optim import make_optimizer

        freeze(self.parts.base)
        # Compiled afresh for the frozen base: ready for model.fit, and saved without a stale phase-2 optimizer.
        self.parts.model.compile(optimizer=make_optimizer(self.config.optimizer, self.config.lr),
                                 loss=self.context.loss, metrics=["accuracy"])
        self.parts.model.optimizer.build(self.parts.model.trainable_variables)
        for name in ("head", "tune"):
            self.timings.setdefault(name, 0.0)
        return FineTuneResult(self.parts.model, self.parts, self.folder, self.config, self.rows,
                              self.unfreeze_epoch, self.unfrozen_layers, self.timings, self.kept_earlier,
                              self.policy.describe(), self.notes)

    # -- inputs of a phase ---------------------------------------------------------

    def _data_for(self, phase: Phase, first_epoch: int) -> tuple[PhaseData, keras.Model]:
        last = first_epoch + phase.epochs
        if phase.inputs == "features":
            return self._feature_data(len(self.rows), last), self.parts.classifier
        if phase.inputs == "activations":
            cut = self._cut()
            if cut is not None:
                return self._activation_data(cut, len(self.rows), last), self._top_model(cut)
        return self._image_data(len(self.rows), last), self.parts.model

    def _cut(self):
        """Where the unfrozen top starts, or ``None`` (with a warning) when phase 2 must run on live images."""
        from ..models.split import CannotSplit, split_base

        if hasattr(self, "_cut_found"):
            return self._cut_found
        self._cut_found = None

        layer = self.parts.base.layers[self.policy.start_index(self.parts.base)].name
        try:
            cut = split_base(self.parts.base, layer)
        except CannotSplit as err:
            warnings.warn(f"phase 2 runs on live images: {err}", RuntimeWarning, stacklevel=3)
            return None
        self.notes.append(f"phase 2 trained on cached activations at {layer} ({' + '.join('x'.join(map(str, s)) for s in cut.shapes)} "
                          f"per image, {1 + self.config.cache_variants} cop{'y' if not self.config.cache_variants else 'ies'})")
        self._cut_found = cut
        return cut

    def _activations(self, cut, split: str, variant: int) -> tuple:
        """The cached activations of one split and copy (computed once per run, shared by both phases)."""
        key = (split, variant)
        if key not in self._activation_arrays:
            loader = dict(self.loader, class_weights=self.class_weights) if split == "train" else self.loader
            cache = FeatureCache.for_run(self.config, self.parts)
            self._activation_arrays[key] = cache.get_or_compute(
                self.folder.splits[split], loader, self.parts, variant=variant, split=split, cut=cut,
                dtype=self.config.cache_dtype, verbose=self.context.verbose)
        return self._activation_arrays[key]

    def _features_from_activations(self, cut, arrays: tuple) -> tuple:
        """Phase 1's pooled features computed from cached activations: only the top runs, in inference mode."""
        import tensorflow as tf

        n_inputs = len(cut.shapes)
        top = tf.function(lambda *a: self.parts.pool(cut.top(a[0] if n_inputs == 1 else list(a), training=False)))
        out = [top(*[tf.constant(np.asarray(a[i:i + 128], np.float32)) for a in arrays[:n_inputs]]).numpy()
               for i in range(0, len(arrays[0]), 128)]
        return (np.concatenate(out), *arrays[n_inputs:])

    def _top_model(self, cut) -> keras.Model:
        """The cut's inputs -> the unfrozen top (inference mode, like the base) -> pooling -> the head."""
        inputs = [keras.Input(shape, name=f"cut_{i}") for i, shape in enumerate(cut.shapes)]
        top = cut.top(inputs if len(inputs) > 1 else inputs[0], training=False)
        return keras.Model(inputs, self.parts.classifier(self.parts.pool(top)), name="finetune_top")

    def _activation_data(self, cut, first: int, last: int) -> PhaseData:
        """Cached activations; epoch ``e`` trains on copy ``e mod (1 + cache_variants)`` of every image."""
        import tensorflow as tf

        config, parts = self.config, self.parts
        start = time.perf_counter()
        copies = [self._activations(cut, "train", v) for v in range(1 + config.cache_variants)]
        val = None
        if self.val_ds is not None:
            val = _as_batches(self._activations(cut, "val", 0), len(cut.shapes)).batch(config.batch_size)
        self.timings["activations"] = self.timings.get("activations", 0.0) + time.perf_counter() - start
        n = len(copies[0][0])
        # Each copy becomes tensors once; an epoch is a seeded shuffle of indices, gathered batch by batch
        # (the same order as shuffling the arrays themselves, without copying them every epoch).
        tensors = [tuple(tf.constant(a) for a in copy) for copy in copies]
        n_inputs = len(cut.shapes)

        def gather(copy):
            def batch(indices):
                taken = [tf.gather(t, indices) for t in copy]
                inputs = taken[0] if n_inputs == 1 else tuple(taken[:n_inputs])
                return (inputs, *taken[n_inputs:])
            return batch

        def epoch(e: int):
            order = tf.data.Dataset.range(n).shuffle(n, seed=config.seed + e, reshuffle_each_iteration=False)
            return order.batch(config.batch_size).map(gather(tensors[e % len(tensors)]))

        if self.context.loop == "trainer":
            train = tf.data.Dataset.range(n).shuffle(n, seed=config.seed).batch(config.batch_size).map(gather(tensors[0]))
        else:
            train = concat_epochs(epoch, first, last)
        return PhaseData(train.prefetch(tf.data.AUTOTUNE), val, math.ceil(n / config.batch_size))

    def _image_data(self, first: int, last: int) -> PhaseData:
        items, config = self.folder.splits["train"], self.config
        epochs = None if self.context.loop == "trainer" else (first, last)  # the Trainer runs a dataset per epoch
        train = make_dataset(items, shuffle=True, seed=config.seed, class_weights=self.class_weights,
                             epochs=epochs, **self.loader)
        return PhaseData(train, self.val_ds, math.ceil(len(items) / config.batch_size))

    def _feature_data(self, first: int, last: int) -> PhaseData:
        import tensorflow as tf

        config, parts = self.config, self.parts
        start = time.perf_counter()
        cache = FeatureCache.for_run(config, parts)
        loader = dict(self.loader, class_weights=self.class_weights)
        cut = self._cut() if self._phase2_on_activations() else None
        if cut is not None:  # the bottom runs once for both phases; phase 1's features come from the top
            arrays = [self._features_from_activations(cut, self._activations(cut, "train", v))
                      for v in range(1 + config.cache_variants)]
        else:
            arrays = [cache.get_or_compute(self.folder.splits["train"], loader, parts, variant=v,
                                           verbose=self.context.verbose) for v in range(1 + config.cache_variants)]
        x = np.concatenate([a[0] for a in arrays])
        y = np.concatenate([a[1] for a in arrays])
        w = np.concatenate([a[2] for a in arrays]) if self.class_weights is not None else None
        val = None
        if self.val_ds is not None:
            val_arrays = (self._features_from_activations(cut, self._activations(cut, "val", 0)) if cut is not None
                          else cache.get_or_compute(self.folder.splits["val"], self.loader, parts, variant=0,
                                                    split="val", verbose=self.context.verbose))
            val = tf.data.Dataset.from_tensor_slices(tuple(val_arrays)).batch(config.batch_size)
        self.timings["features"] = time.perf_counter() - start
        base = tf.data.Dataset.from_tensor_slices((x, y) if w is None else (x, y, w))
        if self.context.loop == "trainer":
            train = base.shuffle(len(x), seed=config.seed).batch(config.batch_size)
        else:
            train = epoch_batches(base, first, last, batch_size=config.batch_size, seed=config.seed, buffer=len(x))
        return PhaseData(train.prefetch(tf.data.AUTOTUNE), val, math.ceil(len(x) / config.batch_size))

    def _phase2_on_activations(self) -> bool:
        config = self.config
        return bool(config.tune_epochs) and config.resolved_tune_inputs == "activations" and \
            self.context.loop == "fit" and "tune" not in self.completed

    def _groups(self) -> list[list]:
        from .optim import layer_groups

        return [g for g in layer_groups(self.parts.base, 3) if g] + [self.parts.classifier.trainable_variables]

    def _improved(self, phase: Phase, earlier: list[dict[str, Any]]) -> bool:
        monitor = self.context.monitor
        best_before = min((r.get(monitor, np.inf) for r in earlier), default=np.inf)
        best_now = min((r.get(monitor, np.inf) for r in self.rows if r["phase"] == phase.name), default=np.inf)
        return bool(best_now <= best_before)


def _as_batches(arrays: tuple, n_inputs: int):
    """A dataset of ``(inputs, labels[, weights])`` from cached arrays whose first ``n_inputs`` are model inputs."""
    import tensorflow as tf

    inputs = arrays[0] if n_inputs == 1 else tuple(arrays[:n_inputs])
    return tf.data.Dataset.from_tensor_slices((inputs, *arrays[n_inputs:]))


def _strategy(name: str):
    import tensorflow as tf

    if name in ("none", "auto"):
        gpus = tf.config.list_logical_devices("GPU")
        if name == "auto" and len(gpus) > 1:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.get_strategy()
    from .distribute import make_strategy

    return make_strategy(name)


def _unfreeze_policy(config: TrainConfig, spec: Backbone) -> UnfreezePolicy:
    if config.unfreeze_blocks is not None:
        return UnfreezePolicy(last_blocks=config.unfreeze_blocks, block_pattern=spec.block_pattern)
    if config.unfreeze_fraction is not None:
        return UnfreezePolicy(fraction=config.unfreeze_fraction, block_pattern=spec.block_pattern)
    return UnfreezePolicy(from_layer=config.unfreeze_from or spec.default_unfreeze, block_pattern=spec.block_pattern)
