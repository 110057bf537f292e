"""One plain ``keras.Model`` from a backbone and a head: raw RGB [0, 255] in, probabilities out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras

from ..data.augment import augmentation
from .backbones import Backbone, get_backbone, preprocessing_layer
from .freeze import freeze
from .heads import HeadConfig, build_classifier, pooling_layer
from .taps import CannotTap, with_taps


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
    features: Any = None  # text models: inputs -> pooled features of the frozen base (images pool the base's map)


def build_model(
    backbone: str | Backbone,
    num_classes: int,
    *,
    weights: str | None = "imagenet",
    image_size: int | None = None,
    head: HeadConfig | None = None,
    augment: str = "light",
    seed: int | None = None,
    multi_label: bool = False,
    feature_taps: int = 0,
) -> ModelParts:
    """A plain ``keras.Model``: raw RGB [0, 255] -> augment -> scale -> base -> head.

    The base is frozen and always runs with ``training=False``, so its
    BatchNormalization statistics never move. Augmentation only acts in training.
    ``multi_label`` gives one sigmoid per class (an image may carry several).
    ``feature_taps`` concatenates that many earlier stages to the base's feature
    map (see :mod:`finetune.models.taps`).

    Example:
        >>> import numpy as np
        >>> parts = build_model("mobilenetv2", 3, weights=None, image_size=96)
        >>> parts.model.predict(np.zeros((2, 96, 96, 3)), verbose=0).shape
        (2, 3)
    """
    from ..config import ConfigError  # config imports models; import at call time

    spec = get_backbone(backbone) if isinstance(backbone, str) else backbone
    size = check_image_size(spec, image_size)
    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
    head = head or HeadConfig()
    base = spec.build((size, size, 3), spec.resolve_weights(weights))
    if feature_taps:
        try:
            base, _ = with_taps(base, spec.block_pattern, feature_taps)
        except CannotTap as err:
            raise ConfigError(f"feature_taps: {err}") from None
    freeze(base)
    pool = pooling_layer(head.pooling) if len(base.outputs[0].shape) == 4 else keras.layers.Identity(name="pool")
    preprocess = preprocessing_layer(spec.preprocessing)
    aug = augmentation(augment, seed=seed)

    inputs = keras.Input((size, size, 3), name="image")
    x = aug(inputs) if aug is not None else inputs
    x = preprocess(x) if preprocess is not None else x
    features = pool(base(x, training=False))
    classifier = build_classifier(int(features.shape[-1]), num_classes, head, multi_label=multi_label)
    outputs = classifier(features)
    model = keras.Model(inputs, outputs, name=f"finetune_{spec.name}")
    return ModelParts(model, base, pool, classifier, preprocess, aug, spec, size)


def check_image_size(spec: Backbone, image_size: int | None) -> int:
    """The input size to use (the backbone's default when ``None``); raise ``ConfigError`` if it is too small."""
    from ..config import ConfigError

    size = image_size or spec.input_size
    if size < spec.min_input_size:
        raise ConfigError(
            f"image_size: {size}px is too small for {spec.name} (minimum {spec.min_input_size}px); "
            f"use --image-size {spec.input_size} (its default)"
        )
    return size


def input_size_for(spec: Backbone, native: int | None) -> tuple[int, str]:
    """The input size for images whose shorter side is typically ``native`` px, and why.

    Images smaller than the backbone's default size are used at their own size
    (upscaling adds no detail and costs (default/native)^2 more compute), never
    below the backbone's minimum; images under half the default (see
    :func:`is_small`) at twice their size, rounded up to a multiple of 32, so
    the last feature map keeps some spatial detail (2x2 rather than 1x1 for
    28px digits). Larger images are resized to the default, the size the
    weights were trained at.

    Example:
        >>> from finetune.models import get_backbone
        >>> lite0 = get_backbone("efficientnet_lite0")
        >>> input_size_for(lite0, 28)[0], input_size_for(lite0, 150)[0], input_size_for(lite0, 300)[0]
        (64, 150, 224)
    """
    default = spec.input_size
    if native is None or native >= default:
        return default, f"input {default}px: {spec.name}'s default" + (f" (images are {native}px)" if native else "")
    if is_small(spec, native):
        size = max(spec.min_input_size, min(default, -(-2 * native // 32) * 32))
        return size, (f"input {size}px: the images are {native}px (median shorter side), under half of "
                      f"{spec.name}'s {default}px; twice their size keeps a {size // 32}x{size // 32} last feature map")
    size = max(native, spec.min_input_size)
    return size, (f"input {size}px: the images are {native}px (median shorter side), smaller than {spec.name}'s "
                  f"{default}px default; upscaling adds no detail" + (f" (raised to its {size}px minimum)"
                                                                        if size > native else ""))


def is_small(spec: Backbone, native: int | None) -> bool:
    """Whether images of ``native`` px are under half the backbone's input size (its features were learned
    at another scale)."""
    return native is not None and native < spec.input_size / 2


def loss_for(num_classes: int, multi_label: bool = False, label_smoothing: float = 0.0, soft_labels: bool = False):
    """Binary cross-entropy for one sigmoid (two classes) or one per label, else sparse categorical.

    With ``label_smoothing`` ``s`` the targets become ``1 - s + s / K`` and ``s / K``
    (``K`` = 2 for each sigmoid), as Keras's losses smooth them. ``soft_labels``: the
    training targets may be rows of class probabilities (mixup) while validation
    keeps integer labels.

    Example:
        >>> loss_for(4)
        'sparse_categorical_crossentropy'
        >>> type(loss_for(4, label_smoothing=0.1)).__name__
        'SmoothedCrossentropy'
    """
    if num_classes == 2 or multi_label:  # Keras's binary cross-entropy takes soft targets as they are
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing) if label_smoothing else "binary_crossentropy"
    if label_smoothing or soft_labels:
        return SmoothedCrossentropy(label_smoothing)
    return "sparse_categorical_crossentropy"


@keras.saving.register_keras_serializable(package="finetune")
class SmoothedCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy on integer labels or on rows of class probabilities, with label smoothing.

    Keras's ``SparseCategoricalCrossentropy`` has no ``label_smoothing`` and takes
    no soft targets; this one one-hot encodes integer labels (a target of lower
    rank than the prediction) and calls ``categorical_crossentropy``.

    Args:
        label_smoothing: ``s`` in ``[0, 1)``: the true class gets ``1 - s + s / K``, the others ``s / K``.
    """

    def __init__(self, label_smoothing: float = 0.1, name: str = "smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        if not _class_rows(y_true, y_pred):
            labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
            y_true = keras.ops.one_hot(labels, keras.ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        y_true = keras.ops.cast(y_true, y_pred.dtype)
        return keras.losses.categorical_crossentropy(y_true, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def metrics_for(multi_label: bool = False, soft_labels: bool = False) -> list:
    """Training metrics: ``accuracy`` (for multi-label, the fraction of labels right: Keras's string
    ``"accuracy"`` would read several-hot targets as one class). With ``soft_labels`` (mixup) a mixed
    target counts as its larger part."""
    if soft_labels:
        return [keras.metrics.MeanMetricWrapper(majority_accuracy, name="accuracy", sigmoid=multi_label)]
    return [keras.metrics.BinaryAccuracy(name="accuracy")] if multi_label else ["accuracy"]


def majority_accuracy(y_true, y_pred, sigmoid: bool = False):
    """Accuracy against each target's larger part: integer labels, (mixed) one-hot rows, or sigmoid targets."""
    ops = keras.ops
    if sigmoid or y_pred.shape[-1] == 1:
        y_true = ops.reshape(ops.cast(y_true, y_pred.dtype), ops.shape(y_pred))
        return ops.mean(ops.cast(ops.equal(y_true > 0.5, y_pred > 0.5), "float32"), axis=-1)
    predicted = ops.argmax(y_pred, axis=-1)
    if _class_rows(y_true, y_pred):
        return ops.cast(ops.equal(ops.argmax(y_true, axis=-1), predicted), "float32")
    return ops.cast(ops.equal(ops.cast(ops.reshape(y_true, (-1,)), predicted.dtype), predicted), "float32")


def _class_rows(y_true, y_pred) -> bool:
    """Whether the targets are rows over the classes (one-hot or mixed) rather than integer labels."""
    return len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == y_pred.shape[-1]


def is_multi_label(model: keras.Model) -> bool:
    """Whether ``model`` ends in several independent sigmoids (a multi-label head).

    Example:
        >>> head = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="sigmoid")])
        >>> is_multi_label(head)
        True
    """
    from .graph import last_dense

    last = last_dense(model)
    return last is not None and getattr(last.activation, "__name__", "") == "sigmoid" and last.units > 1
