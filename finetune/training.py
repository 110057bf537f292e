"""The two-phase fine-tuning recipe as one call.

Phase 1 trains a new head on a frozen base; phase 2 unfreezes the top of the
base and trains on at a lower learning rate. ``model.fit`` runs underneath,
so any Keras callback works. By default phase 1 runs the frozen base once per
image and trains the head on the cached features (the same model as running it
live, many times faster).

With a ``checkpoint_dir`` every epoch is checkpointed (weights, optimizer
state, history, early-stopping state); :func:`fine_tune` with ``resume=True``
continues an interrupted run from its last completed epoch. Each epoch's
shuffle order depends only on the seed and the epoch number, so a resumed run
ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import keras

from .augment import augmentation
from .backbones import Backbone, get_backbone, preprocessing_layer
from .config import ConfigError, TrainConfig
from .data import ImageFolder, balanced_class_weights, epoch_batches, make_dataset, scan_folder
from .features import FeatureCache, extract_features
from .heads import HeadConfig, build_classifier, pooling_layer
from .transfer import UnfreezePolicy, backbone_from_model, freeze


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class ModelParts:
    """The pieces of a model built by :func:`build_model`, all inside ``model``."""

    model: keras.Model
    base: keras.Model
    pool: keras.layers.Layer
    classifier: keras.Sequential
    preprocess: keras.layers.Layer | None
    augment: keras.Sequential | None
    backbone: Backbone
    image_size: int


def build_model(
    backbone: str | Backbone,
    num_classes: int,
    *,
    weights: str | None = "imagenet",
    image_size: int | None = None,
    head: HeadConfig | None = None,
    augment: str = "light",
    seed: int | None = None,
) -> ModelParts:
    """A plain ``keras.Model``: raw RGB [0, 255] -> augment -> scale -> base -> head.

    The base is frozen and always runs with ``training=False``, so its
    BatchNormalization statistics never move. Augmentation only acts in training.

    Example:
        >>> parts = build_model("mobilenetv2", 3, weights=None, image_size=96)   # doctest: +SKIP
        >>> parts.model.predict(images)                                         # doctest: +SKIP
    """
    spec = get_backbone(backbone) if isinstance(backbone, str) else backbone
    size = image_size or spec.input_size
    if size < spec.min_input_size:
        raise ConfigError(
            f"image_size: {size}px is too small for {spec.name} (minimum {spec.min_input_size}px); "
            f"use --image-size {spec.input_size} (its default)"
        )
    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
    head = head or HeadConfig()
    base = spec.build((size, size, 3), spec.resolve_weights(weights))
    freeze(base)
    pool = pooling_layer(head.pooling) if len(base.outputs[0].shape) == 4 else keras.layers.Identity(name="pool")
    preprocess = preprocessing_layer(spec.preprocessing)
    aug = augmentation(augment, seed=seed)

    inputs = keras.Input((size, size, 3), name="image")
    x = aug(inputs) if aug is not None else inputs
    x = preprocess(x) if preprocess is not None else x
    features = pool(base(x, training=False))
    classifier = build_classifier(int(features.shape[-1]), num_classes, head)
    outputs = classifier(features)
    model = keras.Model(inputs, outputs, name=f"finetune_{spec.name}")
    return ModelParts(model, base, pool, classifier, preprocess, aug, spec, size)


def loss_for(num_classes: int) -> str:
    return "binary_crossentropy" if num_classes == 2 else "sparse_categorical_crossentropy"


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

    @property
    def class_names(self) -> list[str]:
        return self.folder.class_names


# ---------------------------------------------------------------------------- callbacks


class EpochLog(keras.callbacks.Callback):
    """Records one row per epoch: phase, metrics, learning rate and seconds."""

    def __init__(self, phase: str, rows: list[dict[str, Any]]):
        super().__init__()
        self.phase, self.rows = phase, rows

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self.model.optimizer
        lr = optimizer.learning_rate
        row = {"epoch": epoch + 1, "phase": self.phase}
        row.update({k: float(v) for k, v in (logs or {}).items() if k not in ("learning_rate", "lr")})
        row["lr"] = float(keras.ops.convert_to_numpy(lr))
        row["seconds"] = round(time.perf_counter() - self._start, 3)
        self.rows.append(row)


class EpochSeeds(keras.callbacks.Callback):
    """Reseeds every random layer (dropout, augmentation) from (seed, epoch) at each epoch start.

    Randomness then depends only on the epoch number, so an interrupted and
    resumed run draws exactly what an uninterrupted one would.
    """

    def __init__(self, seed: int, model: keras.Model):
        super().__init__()
        self.seed, self.generators = seed, _seed_generators(model)

    def on_epoch_begin(self, epoch, logs=None):
        for i, generator in enumerate(self.generators):
            state = generator.state
            value = np.asarray([self.seed * 1_000_003 + epoch * 7919 + i, 0])
            state.assign(value.astype(keras.ops.convert_to_numpy(state.value).dtype))


def _seed_generators(model: keras.Model) -> list:
    from keras.random import SeedGenerator

    found, seen = [], set()
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for value in vars(layer).values():
            if isinstance(value, SeedGenerator) and id(value) not in seen:
                seen.add(id(value))
                found.append(value)
    return found


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training at the first NaN or infinite loss, remembering where."""

    def __init__(self):
        super().__init__()
        self.diverged_at: tuple[int, int] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged_at = (self._epoch + 1, batch + 1)
            self.model.stop_training = True


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """``EarlyStopping`` (best weights restored) whose state survives a restart."""

    def state(self) -> dict[str, Any]:
        return {"wait": self.wait, "best": _finite_or_none(self.best), "best_epoch": self.best_epoch}

    def restore(self, state: dict[str, Any] | None, best_weights: list[np.ndarray] | None) -> None:
        self._resumed = state
        self._resumed_weights = best_weights

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        state = getattr(self, "_resumed", None)
        if state:
            self.wait = state["wait"]
            self.best = state["best"] if state["best"] is not None else self.best
            self.best_epoch = state["best_epoch"]
            self.best_weights = self._resumed_weights


class Checkpointer(keras.callbacks.Callback):
    """After every epoch, saves what is needed to resume (see :class:`RunCheckpoint`)."""

    def __init__(self, store: "RunCheckpoint", phase: str, rows: list, stopper: ResumableEarlyStopping | None, guard: DivergenceGuard):
        super().__init__()
        self.store, self.phase, self.rows, self.stopper, self.guard = store, phase, rows, stopper, guard

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.diverged_at is not None:
            return  # never overwrite the last good checkpoint with a diverged one
        best = self.stopper.best_weights if self.stopper is not None else None
        self.store.save(self.model, self.phase, self.rows, self.stopper.state() if self.stopper else None, best)


def _finite_or_none(value: Any) -> float | None:
    value = float(value) if value is not None else None
    return value if value is not None and math.isfinite(value) else None


# ---------------------------------------------------------------------------- checkpoints


class RunCheckpoint:
    """Resume state in ``<dir>``: the model being fit, its optimizer, history and phase.

    Every file is written to a temporary name and renamed, so a kill at any
    moment leaves the previous complete checkpoint.
    """

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)

    @property
    def exists(self) -> bool:
        return (self.dir / "state.json").exists()

    def state(self) -> dict[str, Any]:
        return json.loads((self.dir / "state.json").read_text()) if self.exists else {}

    def save(self, model: keras.Model, phase: str, rows: list, stopper: dict | None, best_weights) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._atomic(f"{phase}.weights.h5", lambda p: model.save_weights(p))
        opt = [np.asarray(v) for v in model.optimizer.variables]
        self._atomic(f"{phase}.optimizer.npz", lambda p: np.savez(p, *opt))
        if best_weights is not None:
            self._atomic(f"{phase}.best.npz", lambda p: np.savez(p, *best_weights))
        state = {"phase": phase, "rows": rows, "early_stopping": stopper, "has_best": best_weights is not None}
        self._atomic("state.json", lambda p: Path(p).write_text(json.dumps(state)))

    def save_phase1(self, model: keras.Model, rows: list) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._atomic("phase1.weights.h5", lambda p: model.save_weights(p))
        state = {"phase": "tune", "rows": rows, "early_stopping": None, "has_best": False, "phase1_done": True}
        self._atomic("state.json", lambda p: Path(p).write_text(json.dumps(state)))

    def restore(self, model: keras.Model, phase: str) -> tuple[dict | None, list | None]:
        """Load weights and optimizer state of ``phase`` into ``model`` (compiled); return early-stopping state."""
        state = self.state()
        if not (self.dir / f"{phase}.weights.h5").exists():
            return None, None
        model.load_weights(self.dir / f"{phase}.weights.h5")
        model.optimizer.build(model.trainable_variables)
        with np.load(self.dir / f"{phase}.optimizer.npz") as saved:
            values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        for variable, value in zip(model.optimizer.variables, values):
            variable.assign(value)
        best = None
        if state.get("has_best"):
            with np.load(self.dir / f"{phase}.best.npz") as saved:
                best = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        return state.get("early_stopping"), best

    def _atomic(self, name: str, write) -> None:
        final = self.dir / name
        tmp = self.dir / (".tmp-" + name)
        write(str(tmp))
        os.replace(tmp, final)


# ---------------------------------------------------------------------------- the recipe


def fine_tune(
    data: str | ImageFolder,
    config: TrainConfig | None = None,
    *,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 1,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    **overrides: Any,
) -> FineTuneResult:
    """Fine-tune a pretrained backbone on an image folder, in two phases.

    Args:
        data: A class-folder tree (or one split into train/val[/test]), or an
            :class:`ImageFolder` from :func:`finetune.data.scan_folder`.
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
        return _Recipe(config, callbacks, verbose, checkpoint_dir, resume).run(data)


class _Recipe:
    """One run of the two-phase recipe (kept as an object so each phase reads simply)."""

    def __init__(self, config: TrainConfig, callbacks, verbose: int, checkpoint_dir, resume: bool):
        if config.strategy == "multiworker" and config.loop == "fit":
            config.loop = "trainer"  # model.fit fails under MultiWorkerMirroredStrategy (keras-team/keras #20585)
        self.config, self.user_callbacks, self.verbose = config, list(callbacks), verbose
        self.store = RunCheckpoint(checkpoint_dir) if checkpoint_dir else None
        self.resume = resume
        self.timings: dict[str, float] = {}

    def run(self, data: str | ImageFolder) -> FineTuneResult:
        config = self.config
        start = time.perf_counter()
        folder = data if isinstance(data, ImageFolder) else scan_folder(
            data, val_split=config.val_split, test_split=config.test_split, seed=config.seed
        )
        self.timings["scan"] = time.perf_counter() - start
        keras.utils.set_random_seed(config.seed)
        if config.precision == "mixed":
            keras.mixed_precision.set_global_policy("mixed_float16")
        self.strategy = _strategy(config.strategy)
        backbone = backbone_from_model(config.from_model, config.drop_top) if config.from_model else config.backbone
        with self.strategy.scope():
            parts = build_model(
                backbone, folder.num_classes, weights=config.weights, image_size=config.image_size,
                head=config.head_config(), augment=config.augment, seed=config.seed,
            )
        config.image_size = parts.image_size
        policy = _unfreeze_policy(config, parts.backbone)
        policy.start_index(parts.base)  # fail on a bad unfreeze point before any training
        self.parts, self.folder = parts, folder
        self.loss = loss_for(folder.num_classes)
        self.class_weights = balanced_class_weights(folder.counts("train")) if config.class_weight == "balanced" else None
        self.loader = dict(image_size=parts.image_size, batch_size=config.batch_size, binary=folder.binary)
        val_items = folder.splits.get("val") or []
        self.val_ds = make_dataset(val_items, **self.loader) if val_items else None
        self.monitor = "val_loss" if self.val_ds is not None else "loss"

        state = self.store.state() if (self.store and self.resume) else {}
        if self.resume and not state:
            raise ConfigError(f"nothing to resume in {self.store.dir if self.store else '(no checkpoint dir)'}")
        self.rows: list[dict[str, Any]] = list(state.get("rows", []))
        phase = state.get("phase", "head")

        start = time.perf_counter()
        if config.head_epochs and phase == "head":
            self._phase1(resuming=bool(state))
            if self.store:
                self.store.save_phase1(parts.model, self.rows)
        self.timings["head"] = time.perf_counter() - start

        start = time.perf_counter()
        unfreeze_epoch, unfrozen, kept = None, [], False
        if config.tune_epochs:
            if phase == "tune" and state:  # resuming after phase 1: start from its final weights
                parts.model.load_weights(self.store.dir / "phase1.weights.h5")
            unfreeze_epoch, unfrozen, kept = self._phase2(policy, resuming=phase == "tune" and bool(state))
        self.timings["tune"] = time.perf_counter() - start
        freeze(parts.base)
        return FineTuneResult(parts.model, parts, folder, config, self.rows, unfreeze_epoch, unfrozen, self.timings, kept)

    # -- phase 1 ---------------------------------------------------------------

    def _phase1(self, resuming: bool) -> None:
        config, parts = self.config, self.parts
        done = len(self.rows)
        if config.cache_features:
            target = parts.classifier
            train_ds, val, steps = self._feature_datasets(done)
        else:
            target = parts.model
            n = len(self.folder.splits["train"])
            train_ds = self._image_dataset(done, config.head_epochs)
            val, steps = self.val_ds, math.ceil(n / config.batch_size)
        self._compile(target, config.lr, config.head_epochs, steps)
        self._fit(target, "head", train_ds, val, steps, done, config.head_epochs, resuming)

    def _feature_datasets(self, first_epoch: int):
        import tensorflow as tf

        config, parts = self.config, self.parts
        start = time.perf_counter()
        cache = FeatureCache.for_run(config, parts)
        loader = dict(self.loader, class_weights=self.class_weights)
        train_items = self.folder.splits["train"]
        arrays = [cache.get_or_compute(train_items, loader, parts, variant=v, verbose=self.verbose)
                  for v in range(1 + config.cache_variants)]
        x = np.concatenate([a[0] for a in arrays])
        y = np.concatenate([a[1] for a in arrays])
        w = np.concatenate([a[2] for a in arrays]) if self.class_weights is not None else None
        val = None
        if self.val_ds is not None:
            val_arrays = cache.get_or_compute(self.folder.splits["val"], self.loader, parts, variant=0,
                                              split="val", verbose=self.verbose)
            val = tf.data.Dataset.from_tensor_slices(tuple(val_arrays)).batch(config.batch_size)
        self.timings["features"] = time.perf_counter() - start
        base = tf.data.Dataset.from_tensor_slices((x, y) if w is None else (x, y, w))
        if config.loop == "trainer":  # the Trainer runs a dataset once per epoch
            train = base.shuffle(len(x), seed=config.seed).batch(config.batch_size)
        else:
            train = epoch_batches(base, first_epoch, config.head_epochs, batch_size=config.batch_size,
                                  seed=config.seed, buffer=len(x))
        train = train.prefetch(tf.data.AUTOTUNE)
        return train, val, math.ceil(len(x) / config.batch_size)

    # -- phase 2 ---------------------------------------------------------------

    def _phase2(self, policy: UnfreezePolicy, resuming: bool):
        config, parts = self.config, self.parts
        head_rows = [r for r in self.rows if r["phase"] == "head"]
        best_head = min((r.get(self.monitor, np.inf) for r in head_rows), default=np.inf)
        before = parts.model.get_weights()  # phase-1 weights (a resumed run loaded them in `run`)
        unfrozen = policy.apply(parts.base)
        unfreeze_epoch = len(head_rows) + 1
        done = len(self.rows)
        total = len(head_rows) + config.tune_epochs
        n = len(self.folder.splits["train"])
        steps = math.ceil(n / config.batch_size)
        self._compile(parts.model, config.resolved_tune_lr, config.tune_epochs, steps, discriminative=config.discriminative)
        train_ds = self._image_dataset(done, total)
        self._fit(parts.model, "tune", train_ds, self.val_ds, steps, done, total,
                  resuming and any(r["phase"] == "tune" for r in self.rows))
        tune_rows = self.rows[unfreeze_epoch - 1:]
        best_tune = min((r.get(self.monitor, np.inf) for r in tune_rows), default=np.inf)
        kept = bool(best_tune > best_head)
        if kept:  # unfreezing did not help: keep the phase-1 model
            parts.model.set_weights(before)
        return unfreeze_epoch, unfrozen, kept

    # -- shared ----------------------------------------------------------------

    def _image_dataset(self, first_epoch: int, last_epoch: int):
        items = self.folder.splits["train"]
        if self.config.loop == "trainer":
            return make_dataset(items, shuffle=True, seed=self.config.seed, class_weights=self.class_weights, **self.loader)
        return make_dataset(items, shuffle=True, seed=self.config.seed, class_weights=self.class_weights,
                            epochs=(first_epoch, last_epoch), **self.loader)

    def _compile(self, target: keras.Model, lr: float, epochs: int, steps: int, discriminative: bool = False) -> None:
        from .optim import discriminative_optimizer, layer_groups, make_optimizer, make_schedule

        config = self.config
        schedule = lr if config.schedule == "constant" else make_schedule(
            config.schedule, lr, steps_per_epoch=steps, epochs=max(epochs, 1),
            **({"warmup_epochs": config.warmup_epochs} if config.schedule == "cosine" else {}))
        self.plateau = schedule if isinstance(schedule, keras.callbacks.Callback) else None
        rate = lr if self.plateau is not None else schedule
        extra = {"clipnorm": config.clipnorm} if config.clipnorm else {}
        with self.strategy.scope():
            if discriminative:
                groups = [g for g in layer_groups(self.parts.base, 3) if g] + [self.parts.classifier.trainable_variables]
                optimizer = discriminative_optimizer(config.optimizer, rate, groups, **extra)
            else:
                optimizer = make_optimizer(config.optimizer, rate, **extra)
            target.compile(optimizer=optimizer, loss=self.loss, metrics=["accuracy"], jit_compile=config.jit)

    def _fit(self, target, phase: str, train_ds, val, steps: int, initial_epoch: int, epochs: int, resuming: bool) -> None:
        if initial_epoch >= epochs:
            return
        guard = DivergenceGuard()
        stopper = ResumableEarlyStopping(self.monitor, patience=self.config.patience, restore_best_weights=True) \
            if self.config.patience else None
        if resuming and self.store:
            es_state, best = self.store.restore(target, phase)
            if stopper is not None:
                stopper.restore(es_state, best)
        callbacks = [EpochSeeds(self.config.seed, self.parts.model), guard, EpochLog(phase, self.rows), *self.user_callbacks]
        callbacks += [c for c in (stopper, self.plateau) if c is not None]
        if self.store:
            callbacks.append(Checkpointer(self.store, phase, self.rows, stopper, guard))
        kwargs = dict(validation_data=val, initial_epoch=initial_epoch, epochs=epochs, callbacks=callbacks, verbose=self.verbose)
        if self.config.loop == "trainer":
            from .trainer import Trainer

            Trainer(target).fit(train_ds, **kwargs)
        else:
            target.fit(train_ds, steps_per_epoch=steps, shuffle=False, **kwargs)
        if guard.diverged_at is not None:
            epoch, batch = guard.diverged_at
            raise TrainingDiverged(
                f"the loss became NaN/inf in {phase} epoch {epoch}, batch {batch}: the learning rate is probably too "
                f"high (now {self.config.lr if phase == 'head' else self.config.resolved_tune_lr:g}; try 10x lower), "
                "or inputs are badly scaled"
                + (f"; the last good checkpoint is in {self.store.dir}" if self.store else "")
            )


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
