"""Classifier heads: pooling, hidden Dense layers, dropout, regularizers, constraints."""

from __future__ import annotations

import keras

from ..config import HeadConfig  # a pure value, defined beside TrainConfig; re-exported here and by finetune.models
from ..errors import ConfigError

__all__ = ["HeadConfig", "build_classifier", "dense_factory", "pooling_layer"]


def pooling_layer(pooling: str) -> keras.layers.Layer:
    """The parameter-free layer turning a feature map into a vector."""
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="pool")
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name="pool")
    if pooling == "flatten":
        return keras.layers.Flatten(name="pool")
    raise ConfigError(f"unknown pooling {pooling!r}; choose avg, max or flatten")


def dense_factory(config: HeadConfig):
    """Shared Dense defaults (the seed's ``functools.partial`` idiom, done once)."""
    regularizer = None
    if config.l1 or config.l2:
        regularizer = keras.regularizers.L1L2(l1=config.l1, l2=config.l2)
    constraint = keras.constraints.MaxNorm(config.max_norm) if config.max_norm else None

    def dense(units: int, activation: str | None, name: str) -> keras.layers.Dense:
        return keras.layers.Dense(
            units, activation=activation, kernel_regularizer=regularizer, kernel_constraint=constraint, name=name
        )

    return dense


def build_classifier(num_features: int, num_classes: int, config: HeadConfig, *,
                     multi_label: bool = False) -> keras.Sequential:
    """Dense layers from a pooled feature vector to class probabilities.

    Two classes give one sigmoid unit; more give a softmax; ``multi_label``
    gives one independent sigmoid per label.

    Example:
        >>> head = build_classifier(1280, 3, HeadConfig(hidden=[256], dropout=0.5))
        >>> head.output_shape
        (None, 3)
    """
    dense = dense_factory(config)
    layers: list[keras.layers.Layer] = [keras.Input((num_features,), name="features")]
    for i, units in enumerate(config.hidden):
        if config.dropout:
            layers.append(keras.layers.Dropout(config.dropout, name=f"dropout_{i}"))
        layers.append(dense(units, config.activation, name=f"dense_{i}"))
    if config.dropout:
        layers.append(keras.layers.Dropout(config.dropout, name="dropout_out"))
    binary = num_classes == 2 and not multi_label
    layers.append(dense(1 if binary else num_classes, "sigmoid" if binary or multi_label else "softmax",
                        name="predictions"))
    return keras.Sequential(layers, name="classifier")
