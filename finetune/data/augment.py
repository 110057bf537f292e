"""Augmentation presets as Keras preprocessing layers (active only in training).

``light`` (the default): horizontal flips, rotations up to 10 degrees, zoom up to
10%. ``flips``: horizontal and vertical flips only, for images without an up
and a down (solar cells, microscopy, aerial views): exact, nothing interpolated.

``seed`` reproduces seed 002's ``ImageDataGenerator`` settings::

    ImageDataGenerator(rotation_range=40, width_shift_range=0.2, height_shift_range=0.2,
                       shear_range=0.2, zoom_range=0.2, horizontal_flip=True, fill_mode="nearest")

Units matter: ``shear_range`` is a shear *angle in degrees* (0.2 deg), whereas
``keras.layers.RandomShear(0.2)`` shears by up to 20% of the image. The
generator's shear moves x by ``-sin(angle) * y``, so the matching Keras factor
is ``sin(0.2 deg) = 0.0035`` along x only. Its zoom samples x and y scales
independently in [0.8, 1.2], as ``RandomZoom`` does with both factors set.
"""

from __future__ import annotations

from .._compat import import_tensorflow_quietly

import_tensorflow_quietly()  # before Keras starts TensorFlow

import math

import keras

from ..choices import AUGMENT_PRESETS as PRESETS  # the closed list lives in finetune.choices
from ..errors import ConfigError


def augmentation(preset: str = "light", seed: int | None = None) -> keras.Sequential | None:
    """The augmentation pipeline for ``preset``, or ``None`` for ``"none"``.

    Example:
        >>> aug = augmentation("seed", seed=0)
        >>> [layer.__class__.__name__ for layer in aug.layers][:2]
        ['RandomRotation', 'RandomTranslation']
    """
    if preset == "none":
        return None
    if preset == "light":
        layers = [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomRotation(10 / 360, fill_mode="nearest", seed=seed),
            keras.layers.RandomZoom(0.1, fill_mode="nearest", seed=seed),
        ]
    elif preset == "flips":  # data without an orientation (EL cells, microscopy, aerial): exact, no interpolation
        # Two layers: Keras's "horizontal_and_vertical" draws one coin for both (identity or a 180-degree turn only)
        layers = [keras.layers.RandomFlip("horizontal", seed=seed),
                  keras.layers.RandomFlip("vertical", seed=None if seed is None else seed + 1)]
    elif preset == "seed":
        shear = math.sin(math.radians(0.2))
        layers = [
            keras.layers.RandomRotation(40 / 360, fill_mode="nearest", seed=seed),
            keras.layers.RandomTranslation(0.2, 0.2, fill_mode="nearest", seed=seed),
            keras.layers.RandomShear(x_factor=shear, y_factor=0.0, fill_mode="nearest", seed=seed),
            keras.layers.RandomZoom((-0.2, 0.2), (-0.2, 0.2), fill_mode="nearest", seed=seed),
            keras.layers.RandomFlip("horizontal", seed=seed),
        ]
    else:
        raise ConfigError(f"unknown augmentation preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return keras.Sequential(layers, name="augment")
