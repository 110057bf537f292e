"""Augmented views of images with their boxes, the boxes moved with the pixels.

Keras 3's own box-aware preprocessing layers do the work (``RandomFlip``, ``RandomZoom``, ``RandomTranslation``
with ``bounding_box_format="xyxy"``; ``RandomColorJitter`` leaves boxes alone): they ship with Keras, run on
whole batches, and keep finetune free of a second image library (albumentations would load OpenCV). Empty space
a zoom-out or shift uncovers is black (``fill_mode="constant"``: a reflected copy would show objects without
boxes). Boxes are kept while at least ``keep`` of their area and 2 pixels each way remain in the image.

Example:
    >>> images = np.zeros((1, 32, 32, 3), np.uint8)
    >>> views = augment_boxes(images, [np.array([[4, 4, 12, 12]], np.float32)], [np.array([0])], seed=1)
    >>> views[0].shape, len(views[1][0]) == len(views[2][0])
    ((1, 32, 32, 3), True)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: scale jitter (fraction of the side, both ways), shift (fraction of the side), colour strength
ZOOM, SHIFT, COLOUR = 0.25, 0.1, 0.2


def _layers(seed: int):
    import keras

    fmt = "xyxy"
    return [keras.layers.RandomFlip("horizontal", bounding_box_format=fmt, seed=seed),
            keras.layers.RandomZoom((-ZOOM, ZOOM), fill_mode="constant", bounding_box_format=fmt, seed=seed + 1),
            keras.layers.RandomTranslation(SHIFT, SHIFT, fill_mode="constant", bounding_box_format=fmt, seed=seed + 2),
            keras.layers.RandomColorJitter(value_range=(0, 255), brightness_factor=COLOUR, contrast_factor=COLOUR,
                                           saturation_factor=(0.5 - COLOUR, 0.5 + COLOUR), seed=seed + 3,
                                           bounding_box_format=fmt)]


def augment_boxes(images: np.ndarray, boxes: Sequence[np.ndarray], labels: Sequence[np.ndarray], seed: int,
                  keep: float = 0.25) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """One random view of a batch: ``images`` ``(B, S, S, 3)`` uint8, ``boxes[i]`` ``(n, 4)`` pixel corners,
    ``labels[i]`` ``(n,)``. Returns the same three, augmented (images uint8)."""
    width = max([len(b) for b in boxes] + [0]) + 1
    padded = np.zeros((len(images), width, 4), np.float32)
    classes = np.full((len(images), width), -1, np.int32)
    for i, (b, c) in enumerate(zip(boxes, labels)):
        padded[i, :len(b)], classes[i, :len(c)] = b, c
    h, w = images.shape[1:3]
    padded[:, -1] = (w / 4, h / 4, 3 * w / 4, 3 * h / 4)  # a probe that stays inside: how much the zoom scaled
    classes[:, -1] = 0
    data = {"images": np.asarray(images, np.float32), "bounding_boxes": {"boxes": padded, "labels": classes}}
    for layer in _layers(seed):
        data = layer(data, training=True)
    out = np.clip(np.round(np.asarray(data["images"])), 0, 255).astype(np.uint8)
    moved = np.asarray(data["bounding_boxes"]["boxes"], np.float32)
    side = out.shape[2], out.shape[1]
    kept_boxes, kept_labels = [], []
    for i in range(len(images)):
        real = (classes[i] >= 0) & (np.arange(width) < width - 1)
        before = _area(padded[i])
        clipped = np.stack([np.clip(moved[i, :, 0], 0, side[0]), np.clip(moved[i, :, 1], 0, side[1]),
                            np.clip(moved[i, :, 2], 0, side[0]), np.clip(moved[i, :, 3], 0, side[1])], 1)
        scale = _area(moved[i, -1:])[0] / before[-1]  # Keras clips what it returns: the probe gives the zoom
        kept = real & (clipped[:, 2] - clipped[:, 0] >= 2) & (clipped[:, 3] - clipped[:, 1] >= 2) \
            & (_area(clipped) >= keep * scale * before)
        kept_boxes.append(clipped[kept])
        kept_labels.append(classes[i][kept].astype(np.int64))
    return out, kept_boxes, kept_labels


def _area(b: np.ndarray) -> np.ndarray:
    return np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)
