"""Backbone input scaling built from stock Keras layers only.

The scaling lives inside the saved model, so a model written by finetune takes
raw RGB pixels in [0, 255] and loads with plain ``keras.models.load_model``
(no custom objects, safe mode on).
"""

from __future__ import annotations

import numpy as np
import keras

IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)  # caffe mode (Keras's VGG/ResNet)
TORCH_MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)  # torchvision's transforms.Normalize
IMAGENET_STD_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def preprocessing_layer(mode: str, name: str = "preprocess") -> keras.layers.Layer | None:
    """A layer mapping RGB in [0, 255] to the backbone's expected input, or ``None``.

    ``caffe`` (RGB->BGR, minus the ImageNet mean) is a frozen 1x1 convolution
    whose kernel is the channel permutation and whose bias is the negated mean:
    exact, and a stock layer.
    """
    if mode == "none":
        return None
    if mode == "tf":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=name)
    if mode == "torch":
        mean = np.asarray(TORCH_MEAN_RGB, "float32")
        var = np.asarray(IMAGENET_STD_RGB, "float32") ** 2
        return keras.layers.Normalization(mean=mean, variance=var, name=name)
    if mode == "caffe":
        kernel = np.zeros((1, 1, 3, 3), "float32")
        for rgb, bgr in ((0, 2), (1, 1), (2, 0)):
            kernel[0, 0, rgb, bgr] = 1.0
        bias = -np.asarray(IMAGENET_MEAN_RGB[::-1], "float32")
        layer = keras.layers.Conv2D(3, 1, name=name, trainable=False)
        layer.build((None, None, None, 3))
        layer.set_weights([kernel, bias])
        return layer
    raise ValueError(f"unknown preprocessing mode {mode!r}")


def preprocess_numpy(images: np.ndarray, mode: str) -> np.ndarray:
    """The same scaling on a NumPy batch (for tests and references)."""
    x = np.asarray(images, "float32")
    if mode == "none":
        return x
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "torch":
        return (x - np.asarray(TORCH_MEAN_RGB, "float32")) / np.asarray(IMAGENET_STD_RGB, "float32")
    if mode == "caffe":
        return x[..., ::-1] - np.asarray(IMAGENET_MEAN_RGB[::-1], "float32")
    raise ValueError(f"unknown preprocessing mode {mode!r}")
