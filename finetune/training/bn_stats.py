"""Re-estimate a frozen base's BatchNormalization statistics on the task's own images (AdaBN).

A base trained on ImageNet normalises every layer with ImageNet's running
means and variances. On images far from photos (electroluminescence cells,
grayscale digits, micrographs) those statistics are off, and a frozen base
feeds the head shifted activations. AdaBN (Li et al. 2016) replaces them with
the statistics of the target images: here one pass over the training images
(un-augmented) with every BatchNormalization layer in training mode and a
cumulative average of its batch moments (as ``torch.optim.swa_utils.update_bn``
does), Dropout off. The learned scales and offsets are kept. It runs before any
feature is cached, and the cache key carries a fingerprint of the new
statistics, so cached features never mix the two.

Example:
    >>> import keras, numpy as np
    >>> inputs = keras.Input((4,))
    >>> bn = keras.layers.BatchNormalization()
    >>> base = keras.Model(inputs, bn(inputs))
    >>> base.trainable = False
    >>> x = np.random.default_rng(0).normal(5.0, 2.0, (64, 4)).astype("float32")
    >>> shift, variance_ratio = adapt_batchnorm(base, [x[:32], x[32:]])
    >>> bool(np.allclose(bn.moving_mean.numpy(), x.mean(0), atol=1e-4)), base.trainable, bn.momentum
    (True, False, 0.99)
"""

from __future__ import annotations

import hashlib
from typing import Iterable

import keras
import numpy as np

from ..models.graph import walk_layers


def batchnorm_layers(model: keras.Model) -> list:
    """Every BatchNormalization layer of ``model``, nested models included."""
    return [layer for layer in walk_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]


def adapt_batchnorm(base: keras.Model, batches: Iterable) -> tuple[float, float]:
    """Replace every BatchNormalization layer's moving mean and variance in ``base`` by their average over
    ``batches`` (inputs as ``base`` takes them).

    Returns:
        ``(shift, variance_ratio)``: how far the means moved, in the old standard deviations, and the
        geometric mean of new / old variances, averaged over the layers' channels.

    The layers' ``trainable`` flags, momenta and Dropout rates are restored afterwards.
    """
    import tensorflow as tf

    norms = batchnorm_layers(base)
    drops = [layer for layer in walk_layers(base) if isinstance(layer, keras.layers.Dropout)]
    before = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in norms]
    saved = [(layer.trainable, layer.momentum) for layer in norms]
    rates = [layer.rate for layer in drops]
    momentum = tf.Variable(0.0, trainable=False)
    try:
        for layer in norms:
            layer.trainable = True  # BatchNormalization updates its statistics only when trainable
            layer.momentum = momentum  # read at every step of the traced pass: a cumulative average
        for layer in drops:
            layer.rate = 0.0
        step = tf.function(lambda x: base(x, training=True))
        for t, x in enumerate(batches):
            momentum.assign(t / (t + 1))
            step(tf.convert_to_tensor(x))
    finally:
        for layer, (trainable, old) in zip(norms, saved):
            layer.trainable, layer.momentum = trainable, old
        for layer, rate in zip(drops, rates):
            layer.rate = rate
    shifts = [np.mean(np.abs(layer.moving_mean.numpy() - mean) / np.sqrt(var + layer.epsilon))
              for layer, (mean, var) in zip(norms, before)]
    ratios = [np.mean(np.log((layer.moving_variance.numpy() + layer.epsilon) / (var + layer.epsilon)))
              for layer, (_, var) in zip(norms, before)]
    return (float(np.mean(shifts)), float(np.exp(np.mean(ratios)))) if shifts else (0.0, 1.0)


def batchnorm_fingerprint(base: keras.Model) -> str:
    """A short hash of every BatchNormalization layer's moving statistics (what adaptation changes)."""
    digest = hashlib.sha256()
    for layer in batchnorm_layers(base):
        digest.update(np.asarray(layer.moving_mean.numpy(), np.float32).tobytes())
        digest.update(np.asarray(layer.moving_variance.numpy(), np.float32).tobytes())
    return digest.hexdigest()[:16]
