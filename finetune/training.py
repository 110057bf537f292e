"""The two-phase fine-tuning recipe as one call.

Phase 1 trains a new head on a frozen base; phase 2 unfreezes the top of the
base and trains on at a lower learning rate. ``model.fit`` runs underneath,
so any Keras callback works. By default phase 1 runs the frozen base once per
image and trains the head on the cached features (bit-for-bit the same model
as running it live, many times faster).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import keras

from .augment import augmentation
from .backbones import Backbone, get_backbone, preprocessing_layer
from .config import ConfigError, TrainConfig
from .data import ImageFolder, balanced_class_weights, make_dataset, scan_folder
from .heads import HeadConfig, build_classifier, pooling_layer
from .transfer import UnfreezePolicy, freeze


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
    pool = pooling_layer(head.pooling)
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


def _optimizer(name: str, lr: float) -> keras.optimizers.Optimizer:
    try:
        from .optim import make_optimizer
    except ImportError:  # pragma: no cover
        return keras.optimizers.get({"class_name": name, "config": {"learning_rate": lr}})
    return make_optimizer(name, lr)


class EpochLog(keras.callbacks.Callback):
    """Records one row per epoch: phase, metrics, learning rate and seconds."""

    def __init__(self, phase: str, rows: list[dict[str, Any]]):
        super().__init__()
        self.phase, self.rows = phase, rows

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        lr = self.model.optimizer.learning_rate
        row = {"epoch": len(self.rows) + 1, "phase": self.phase}
        row.update({k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"})
        row["lr"] = float(keras.ops.convert_to_numpy(lr)) if not callable(lr) else float("nan")
        row["seconds"] = round(time.perf_counter() - self._start, 3)
        self.rows.append(row)


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
    """

    model: keras.Model
    parts: ModelParts
    folder: ImageFolder
    config: TrainConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    unfreeze_epoch: int | None = None
    unfrozen_layers: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return self.folder.class_names


def extract_features(
    parts: ModelParts, dataset, *, augmented: bool = False, verbose: int = 0
) -> tuple[np.ndarray, ...]:
    """Run the frozen base once over ``dataset``; return (features, labels[, weights]).

    With ``augmented=True`` the augmentation layers act (training mode) while
    the base still runs in inference mode.
    """
    import tensorflow as tf

    aug, prep, base, pool = parts.augment, parts.preprocess, parts.base, parts.pool

    @tf.function(reduce_retracing=True)
    def features(images):
        x = aug(images, training=True) if (augmented and aug is not None) else images
        x = prep(x) if prep is not None else x
        return pool(base(x, training=False))

    chunks: list[list[np.ndarray]] = []
    steps = int(dataset.cardinality()) if int(dataset.cardinality()) > 0 else None
    progbar = keras.utils.Progbar(steps, unit_name="batch") if verbose else None
    for i, batch in enumerate(dataset):
        out = [features(batch[0]).numpy()] + [np.asarray(t) for t in batch[1:]]
        chunks.append(out)
        if progbar:
            progbar.update(i + 1)
    if progbar:
        progbar.update(len(chunks), finalize=True)
    return tuple(np.concatenate([c[j] for c in chunks]) for j in range(len(chunks[0])))


def fine_tune(
    data: str | ImageFolder,
    config: TrainConfig | None = None,
    *,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 1,
    **overrides: Any,
) -> FineTuneResult:
    """Fine-tune a pretrained backbone on an image folder, in two phases.

    Args:
        data: A class-folder tree (or one split into train/val[/test]), or an
            :class:`ImageFolder` from :func:`finetune.data.scan_folder`.
        config: A :class:`TrainConfig`; keyword ``overrides`` replace its fields.
        callbacks: Extra Keras callbacks for both phases.
        verbose: 0 silent, 1 progress bars.

    Returns:
        A :class:`FineTuneResult` whose ``model`` is a plain ``keras.Model``.

    Example:
        >>> result = fine_tune("flowers/", head_epochs=5, tune_epochs=3)   # doctest: +SKIP
        >>> result.model.save("flowers.keras")                              # doctest: +SKIP
    """
    config = TrainConfig.from_dict({**(config or TrainConfig()).to_dict(), **overrides})
    with warnings.catch_warnings():
        # tf.data pipelines that drop undecodable files have no known length; Keras learns it in epoch 1.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        return _fine_tune(data, config, callbacks, verbose)


def _fine_tune(data, config: TrainConfig, callbacks, verbose: int) -> FineTuneResult:
    timings: dict[str, float] = {}
    start = time.perf_counter()
    folder = data if isinstance(data, ImageFolder) else scan_folder(
        data, val_split=config.val_split, test_split=config.test_split, seed=config.seed
    )
    timings["scan"] = time.perf_counter() - start
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)

    parts = build_model(
        config.backbone, folder.num_classes, weights=config.weights, image_size=config.image_size,
        head=config.head_config(), augment=config.augment, seed=config.seed,
    )
    config.image_size = parts.image_size
    policy = _unfreeze_policy(config, parts.backbone)
    policy.start_index(parts.base)  # fail on a bad unfreeze point before any training

    weights = balanced_class_weights(folder.counts("train")) if config.class_weight == "balanced" else None
    loader = dict(image_size=parts.image_size, batch_size=config.batch_size, binary=folder.binary)
    train_ds = make_dataset(folder.splits["train"], shuffle=True, seed=config.seed, class_weights=weights, **loader)
    val_items = folder.splits.get("val") or []
    val_ds = make_dataset(val_items, **loader) if val_items else None
    monitor = "val_loss" if val_ds is not None else "loss"

    rows: list[dict[str, Any]] = []
    loss = loss_for(folder.num_classes)

    # Phase 1: frozen base, new head.
    start = time.perf_counter()
    if config.head_epochs:
        head_callbacks = [EpochLog("head", rows), *callbacks]
        if config.patience:
            head_callbacks.append(keras.callbacks.EarlyStopping(monitor, patience=config.patience, restore_best_weights=True))
        if config.cache_features:
            timings["features"] = _fit_head_on_features(parts, folder, train_ds, val_ds, config, loss, weights, head_callbacks, verbose)
        else:
            parts.model.compile(optimizer=_optimizer(config.optimizer, config.lr), loss=loss, metrics=["accuracy"])
            parts.model.fit(train_ds, validation_data=val_ds, epochs=config.head_epochs, callbacks=head_callbacks,
                            verbose=verbose, shuffle=False)
    timings["head"] = time.perf_counter() - start

    # Phase 2: unfreeze the top of the base, lower learning rate, live data with augmentation.
    start = time.perf_counter()
    unfreeze_epoch, unfrozen = None, []
    if config.tune_epochs:
        before = parts.model.get_weights()
        best_head = min((r.get(monitor, np.inf) for r in rows), default=np.inf)
        unfrozen = policy.apply(parts.base)
        parts.model.compile(  # recompiling is what makes the new `trainable` flags count
            optimizer=_optimizer(config.optimizer, config.resolved_tune_lr), loss=loss, metrics=["accuracy"]
        )
        unfreeze_epoch = len(rows) + 1
        tune_callbacks = [EpochLog("tune", rows), *callbacks]
        if config.patience:
            tune_callbacks.append(keras.callbacks.EarlyStopping(monitor, patience=config.patience, restore_best_weights=True))
        parts.model.fit(
            train_ds, validation_data=val_ds, initial_epoch=len(rows),
            epochs=len(rows) + config.tune_epochs, callbacks=tune_callbacks, verbose=verbose, shuffle=False,
        )
        best_tune = min((r.get(monitor, np.inf) for r in rows[unfreeze_epoch - 1:]), default=np.inf)
        if best_tune > best_head:  # unfreezing did not help: keep the phase-1 model
            parts.model.set_weights(before)
    timings["tune"] = time.perf_counter() - start
    freeze(parts.base)

    return FineTuneResult(parts.model, parts, folder, config, rows, unfreeze_epoch, unfrozen, timings)


def _unfreeze_policy(config: TrainConfig, spec: Backbone) -> UnfreezePolicy:
    if config.unfreeze_blocks is not None:
        return UnfreezePolicy(last_blocks=config.unfreeze_blocks, block_pattern=spec.block_pattern)
    if config.unfreeze_fraction is not None:
        return UnfreezePolicy(fraction=config.unfreeze_fraction, block_pattern=spec.block_pattern)
    return UnfreezePolicy(from_layer=config.unfreeze_from or spec.default_unfreeze, block_pattern=spec.block_pattern)


def _fit_head_on_features(parts, folder, train_ds, val_ds, config, loss, weights, callbacks, verbose) -> float:
    """Phase 1 on cached features: the base runs once per image (and per augmented variant)."""
    start = time.perf_counter()
    loader = dict(image_size=parts.image_size, batch_size=config.batch_size, binary=folder.binary, class_weights=weights)
    plain = make_dataset(folder.splits["train"], **loader)
    train = [extract_features(parts, plain, verbose=verbose)]
    for _ in range(config.cache_variants):
        train.append(extract_features(parts, plain, augmented=True, verbose=verbose))
    train_arrays = [np.concatenate(column) for column in zip(*train)]
    val = None
    if val_ds is not None:
        val = extract_features(parts, val_ds, verbose=verbose)
    seconds = time.perf_counter() - start

    classifier = parts.classifier
    classifier.compile(optimizer=_optimizer(config.optimizer, config.lr), loss=loss, metrics=["accuracy"])
    x, y = train_arrays[0], train_arrays[1]
    sample_weight = train_arrays[2] if len(train_arrays) > 2 else None
    classifier.fit(
        x, y, sample_weight=sample_weight, batch_size=config.batch_size, epochs=config.head_epochs,
        validation_data=val, shuffle=True, callbacks=callbacks, verbose=verbose,
    )
    return seconds
