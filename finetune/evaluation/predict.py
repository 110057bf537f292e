"""The one prediction path: a model run through ``tf.function`` in batches, probabilities as NumPy.

Evaluate, predict, test-time augmentation, MC dropout, export parity and the
report all call these functions.

Example:
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    >>> predict_batches(model, np.zeros((5, 4)), batch_size=2, as_classes=True).shape
    (5, 2)
"""

from __future__ import annotations

from typing import Iterator, Sequence

import keras
import numpy as np

from ..choices import DEFAULT_RESIZE
from ..data import load_images


def inference_fn(model: keras.Model):
    """``x -> model(x, training=False)`` compiled with ``tf.function``, returning NumPy.

    Calling a large model eagerly batch after batch holds far more memory at
    peak (about 1.7 GB more for EfficientNet-Lite0 at 224, batch 32).
    """
    import tensorflow as tf

    shape = getattr(model, "input_shape", None)
    if isinstance(shape, tuple) and shape and all(isinstance(d, int) for d in shape[1:]):
        # One trace for every batch size (a last, smaller batch would trace the model again)
        signature = [tf.TensorSpec((None, *shape[1:]), tf.float32)]
        compiled = tf.function(lambda x: model(x, training=False), input_signature=signature)
    else:
        compiled = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    try:
        takes_dict = isinstance(model.input, dict)
    except AttributeError:  # a Sequential never called has no input yet: it takes a tensor
        takes_dict = False
    if takes_dict:  # a text model: a dict of token batches of any length, one trace for all of them
        dtypes = {k: v.dtype for k, v in model.input.items()}
        signature = [{k: tf.TensorSpec((None, None), dtype) for k, dtype in dtypes.items()}]
        compiled = tf.function(lambda x: model(x, training=False), input_signature=signature)
        return lambda x: compiled({k: tf.convert_to_tensor(x[k], dtypes[k]) for k in dtypes}).numpy()
    return lambda x: compiled(tf.convert_to_tensor(x, tf.float32)).numpy()


def as_class_probs(p: np.ndarray) -> np.ndarray:
    """One sigmoid column ``p`` becomes two class columns ``[1 - p, p]``; other outputs pass through."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 1:
        return np.concatenate([1 - p, p], axis=1)
    return p


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    """``items`` in consecutive slices of ``size``."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def predict_batches(model: keras.Model, images: np.ndarray, *, batch_size: int = 32, as_classes: bool = False,
                    forward=None) -> np.ndarray:
    """The model's outputs on ``images``, batch by batch (``as_classes``: binary expanded to 2 columns)."""
    forward = forward or inference_fn(model)
    out = [forward(np.asarray(chunk, np.float32)) for chunk in chunks(images, batch_size)]
    p = np.concatenate(out) if out else np.zeros((0, 1))
    return as_class_probs(p) if as_classes else p


def predict_files(model: keras.Model, paths: Sequence[str], image_size: int, batch_size: int = 32,
                  resize: str = DEFAULT_RESIZE) -> np.ndarray:
    """Class probabilities ``(n, num_classes)`` for image files (binary sigmoid outputs expanded to 2 columns)."""
    forward = inference_fn(model)
    out = [as_class_probs(forward(load_images(list(chunk), image_size, resize))) for chunk in chunks(list(paths), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0))


def probabilities(model: keras.Model, dataset) -> tuple[np.ndarray, np.ndarray]:
    """``(probs, labels)`` over a ``(images, labels[, weights])`` dataset, probs as class columns."""
    forward = inference_fn(model)
    probs, labels = [], []
    for batch in dataset:
        probs.append(forward(batch[0]))
        labels.append(np.asarray(batch[1]))
    p = np.concatenate(probs) if probs else np.zeros((0, 1))
    return as_class_probs(p), np.concatenate(labels).astype(int) if labels else np.zeros(0, int)
