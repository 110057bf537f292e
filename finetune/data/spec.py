"""How raw input becomes a model input: the :class:`ImageSpec` of a run, made once and read everywhere.

A run's spec is saved in its folder (``spec.json``) and is the only thing that
decoding, prediction, serving, export, Grad-CAM, lr-find and ensembles read to
turn a file or an array into what the model takes. It is part of every cache
key, so two commands share cached features only when their inputs are identical.

The crop and pad boxes are computed once, here, for both decode backends
(PIL in :mod:`finetune.data.images`, ``tf.io`` in :mod:`finetune.data.native`).

Example:
    >>> import numpy as np
    >>> spec = ImageSpec(size=64)
    >>> spec.resize
    'crop'
    >>> spec.prepare(np.zeros((2, 48, 30), np.uint8)).shape      # any size, grayscale: fitted to the spec
    (2, 64, 64, 3)
    >>> ImageSpec.from_dict(spec.to_dict()) == spec
    True
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from ..choices import DEFAULT_RESIZE, RESIZE_POLICIES
from ..errors import ConfigError, DataError


def check_resize(resize: str) -> str:
    """``resize`` if it is a known policy; else :class:`ConfigError` naming the choices (no silent default)."""
    if resize not in RESIZE_POLICIES:
        raise ConfigError(f"resize: must be one of {', '.join(RESIZE_POLICIES)}; got {resize!r}")
    return resize


def crop_box(width, height, aspect=1.0, fraction=1.0, minimum: Callable = min) -> tuple:
    """The centred region of ``aspect`` (width / height) to keep from a ``width`` x ``height`` image, unrounded.

    ``(left, top, right, bottom)``: the largest such region (``crop_to_aspect_ratio``:
    nothing is cut from an image that already has the aspect), shrunk by ``fraction``.
    ``minimum`` is ``min`` for Python numbers, ``tf.minimum`` for tensors.

    Example:
        >>> crop_box(200, 100)
        (50.0, 0.0, 150.0, 100.0)
    """
    cw, ch = minimum(width, height * aspect) * fraction, minimum(height, width / aspect) * fraction
    left, top = (width - cw) / 2, (height - ch) / 2
    return left, top, left + cw, top + ch


def pad_box(width, height, aspect=1.0, maximum: Callable = max, rounding: Callable = round) -> tuple:
    """``(canvas width, canvas height, left, top)``: black borders that give a ``width`` x ``height`` image ``aspect``.

    Example:
        >>> pad_box(200, 100)
        (200, 200, 0, 50)
    """
    pw, ph = maximum(width, rounding(height * aspect)), maximum(height, rounding(width / aspect))
    return pw, ph, (pw - width) // 2, (ph - height) // 2


@dataclass(frozen=True)
class ImageSpec:
    """How an image (a file, an array of any size, a dataset) becomes a model input.

    Args:
        size: Side of the square input in pixels.
        resize: How an image meets the square: ``crop`` (centre, keeps the shape), ``pad`` or ``squash``.
        crop_fraction: Below 1, a centred margin is also cut (timm's evaluation crop).
        bicubic: Resample bicubic instead of bilinear (PIL decoding only).
        channels: Channels the model takes (RGB; grayscale input is repeated).
        normalization: The backbone's scaling of [0, 255] pixels, done inside the model (for the record:
            the model's input is raw RGB 0-255).
    """

    kind: ClassVar[str] = "image"

    size: int
    resize: str = DEFAULT_RESIZE
    crop_fraction: float = 1.0
    bicubic: bool = False
    channels: int = 3
    normalization: str = "inside the model"

    def __post_init__(self):
        check_resize(self.resize)
        if not isinstance(self.size, (int, np.integer)) or self.size < 1:
            raise ConfigError(f"image_size: must be a positive integer, got {self.size!r}")
        if not 0 < self.crop_fraction <= 1:
            raise ConfigError(f"crop_fraction: must be in (0, 1], got {self.crop_fraction!r}")

    # -- the record -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ImageSpec":
        values = dict(values)
        kind = values.pop("kind", cls.kind)
        if kind != cls.kind:
            raise ConfigError(f"input spec of kind {kind!r}: this finetune reads {cls.kind!r} specs")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def identity(self) -> dict[str, Any]:
        """What the pixels depend on, for cache keys (everything but the record-only fields)."""
        values = self.to_dict()
        values.pop("normalization")
        return values

    @property
    def fit_options(self) -> dict[str, Any]:
        """``resize``/``crop_fraction``/``bicubic`` as the decode functions take them (defaults left out)."""
        options: dict[str, Any] = {"resize": self.resize}
        if self.crop_fraction < 1:
            options["crop_fraction"] = self.crop_fraction
        if self.bicubic:
            options["bicubic"] = True
        return options

    # -- raw input -> model input -------------------------------------------------------

    def load(self, path: str | os.PathLike) -> np.ndarray:
        """One file as ``uint8`` (size, size, 3), as training decoded it."""
        from .images import load_image

        return load_image(path, self.size, **self.fit_options)

    def fit_array(self, image: np.ndarray) -> np.ndarray:
        """One image array (H, W[, 1|3|4], pixels 0-255) as ``uint8`` (size, size, 3)."""
        from PIL import Image

        from .images import _to_rgb, fit_to

        image = np.asarray(image)
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (3, 4)):
            raise DataError(f"an image must be (H, W) grayscale or (H, W, 1|3|4); got shape {image.shape}")
        if image.dtype != np.uint8:
            if image.size and (float(image.min()) < 0 or float(image.max()) > 255):
                raise DataError(f"pixels span {float(image.min()):g}..{float(image.max()):g}; finetune expects 0-255")
            image = np.round(image).astype(np.uint8)
        pil = _to_rgb(Image.fromarray(image))
        resample = Image.BICUBIC if self.bicubic else Image.BILINEAR
        fitted = fit_to(pil, (self.size, self.size), self.resize, crop_fraction=self.crop_fraction, resample=resample)
        return np.asarray(fitted, dtype=np.uint8)

    def prepare(self, x: Any) -> np.ndarray:
        """A float32 batch (N, size, size, 3) in [0, 255] from what a user has: an array of images of any size
        ((N, H, W[, C]) or one (H, W[, C]) image), a path, a list of paths or arrays, or a ``tf.data.Dataset``
        of images (or ``(image, label)`` pairs, batched or not)."""
        if isinstance(x, (str, os.PathLike)):
            return self.prepare([x])
        if hasattr(x, "as_numpy_iterator"):
            return self.prepare(list(_dataset_images(x)))
        if isinstance(x, np.ndarray) or (isinstance(x, Sequence) and x and not isinstance(x[0], (str, os.PathLike))):
            array = x if isinstance(x, np.ndarray) else None
            if array is not None and array.ndim in (2, 3) and not (array.ndim == 3 and array.shape[-1] > 4):
                array = array[None]  # one image
            images = list(array) if array is not None else list(x)
            return _stack([self.fit_array(i) for i in images], self.size)
        paths = list(x)
        return _stack([self.load(p) for p in paths], self.size)


def _stack(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    if not images:
        return np.zeros((0, size, size, 3), np.float32)
    return np.stack(images).astype(np.float32)


def _dataset_images(dataset):
    for element in dataset.as_numpy_iterator():
        image = element[0] if isinstance(element, tuple) else element
        yield from (image if image.ndim == 4 else [image])


def as_spec(image_size: "int | ImageSpec", resize: str | None = None) -> ImageSpec:
    """An :class:`ImageSpec` from a spec or a size (``resize`` defaults to :data:`DEFAULT_RESIZE`, as ``TrainConfig``).

    Example:
        >>> as_spec(32).resize, as_spec(32, "pad").resize, as_spec(ImageSpec(32, "squash")).resize
        ('crop', 'pad', 'squash')
    """
    if isinstance(image_size, ImageSpec):
        if resize is not None and resize != image_size.resize:
            raise ConfigError(f"resize {resize!r} disagrees with the input spec's {image_size.resize!r}")
        return image_size
    return ImageSpec(int(image_size), resize or DEFAULT_RESIZE)
