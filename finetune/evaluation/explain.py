"""Grad-CAM: where the network looked (Selvaraju et al. 2017).

The heatmap of class ``c`` weighs each channel of the last convolutional
feature map by the mean gradient of ``c``'s score with respect to it. For a
finetune model that map is the base's output (the last conv block of every
registered backbone); for any chain of layers, the last layer with a 4-D
output (found by walking the model, e.g. a model trained ``--from`` another).
Binary (one sigmoid unit), multi-class (softmax) and multi-label (sigmoids)
heads all work: the score of class ``c`` is its probability. An ensemble
(:func:`finetune.models.ensemble.average_models`) is explained by the mean of
its members' heatmaps for the class the ensemble chose.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from ..errors import CannotExplain

#: Images explained per eager pass: EfficientNet-Lite0 at 224 holds about 70 MB per image until its output
#: (16 at once, the report's worst mistakes, cost 1.1-1.6 GB at peak; 4 at a time 0.2 GB, no slower).
CAM_BATCH = 4


@dataclass
class Explanation:
    """One image's Grad-CAM.

    Attributes:
        heatmap: ``(h, w)`` in [0, 1] at the feature map's resolution.
        class_index: The class explained.
        probability: The model's probability for that class.
        probabilities: All class probabilities (binary expanded to two columns).
    """

    heatmap: np.ndarray
    class_index: int
    probability: float
    probabilities: np.ndarray

    def upsampled(self, size: tuple[int, int]) -> np.ndarray:
        """The heatmap resized (bilinear) to ``(height, width)``."""
        from PIL import Image

        image = Image.fromarray(np.uint8(np.clip(self.heatmap, 0, 1) * 255))
        return np.asarray(image.resize((size[1], size[0]), Image.BILINEAR), np.float32) / 255


def _chain(model: keras.Model) -> tuple[list[keras.layers.Layer], int]:
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    shapes = [tuple(layer.output.shape) if hasattr(layer, "output") else () for layer in layers]
    four_d = [i for i, shape in enumerate(shapes) if len(shape) == 4]
    if not four_d:
        raise CannotExplain(f"{model.name} has no layer with a 4-D (convolutional) output to explain")
    return layers, four_d[-1]


def grad_cam(model: keras.Model, images: np.ndarray, class_index: int | Sequence[int] | None = None) -> list[Explanation]:
    """Grad-CAM of ``images`` (RGB 0-255, the model's input size) for ``class_index`` (default: the predicted class).

    Example:
        >>> base = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, padding="same")])
        >>> model = keras.Sequential([keras.Input((16, 16, 3)), base, keras.layers.GlobalAveragePooling2D(),
        ...                           keras.layers.Dense(3, activation="softmax")])
        >>> found = grad_cam(model, np.random.rand(2, 16, 16, 3) * 255)
        >>> found[0].heatmap.shape, 0 <= found[0].class_index < 3
        ((16, 16), True)
    """
    import tensorflow as tf

    if len(images) > CAM_BATCH:  # eagerly, a base holds every intermediate of its batch until its output
        chosen = None if class_index is None else np.broadcast_to(np.asarray(class_index), (len(images),))
        return [found for start in range(0, len(images), CAM_BATCH)
                for found in grad_cam(model, images[start:start + CAM_BATCH],
                                      None if chosen is None else chosen[start:start + CAM_BATCH])]
    members = ensemble_members(model)
    if members:
        return _explain_ensemble(model, members, images, class_index)
    layers, last_conv = _chain(model)
    x = tf.convert_to_tensor(np.asarray(images, np.float32))
    # Only what follows the feature map is recorded: a frozen base's variables are still tf.Variables the tape
    # would watch, keeping its whole forward pass for a gradient nobody asks for.
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        fmap = None
        for i, layer in enumerate(layers):
            try:
                x = layer(x, training=False)
            except (TypeError, ValueError) as err:
                raise CannotExplain(f"{model.name} is not a chain of layers ({layer.name}: {err})") from None
            if i == last_conv:
                fmap = x
                tape.watch(fmap)
        probs = x if x.shape[-1] > 1 else tf.concat([1 - x, x], axis=-1)
        if class_index is None:
            chosen = tf.argmax(probs, axis=-1)
        else:
            chosen = tf.constant(np.broadcast_to(np.asarray(class_index), (probs.shape[0],)), tf.int64)
        score = tf.reduce_sum(tf.gather(probs, chosen, axis=-1, batch_dims=1))
    grads = tape.gradient(score, fmap)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cams = tf.nn.relu(tf.reduce_sum(weights * fmap, axis=-1)).numpy()
    probs, chosen = probs.numpy(), chosen.numpy()
    out = []
    for cam, p, c in zip(cams, probs, chosen):
        top = cam.max()
        out.append(Explanation(cam / top if top > 0 else cam, int(c), float(p[c]), p))
    return out


def ensemble_members(model: keras.Model) -> list[keras.Model]:
    """The members of a model built by :func:`~finetune.models.ensemble.average_models` (else ``[]``)."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if len(layers) > 2 and isinstance(layers[-1], keras.layers.Average) and all(
            isinstance(layer, keras.Model) for layer in layers[:-1]):
        return layers[:-1]
    return []


def _explain_ensemble(model, members, images, class_index) -> list[Explanation]:
    probs = np.asarray(model(np.asarray(images, np.float32), training=False))
    probs = probs if probs.shape[-1] > 1 else np.concatenate([1 - probs, probs], axis=-1)
    chosen = probs.argmax(-1) if class_index is None else np.broadcast_to(np.asarray(class_index), (len(probs),))
    per_member = [grad_cam(member, images, chosen) for member in members]
    out = []
    for i, (p, c) in enumerate(zip(probs, chosen)):
        heatmap = np.mean([found[i].heatmap for found in per_member], axis=0)
        top = heatmap.max()
        out.append(Explanation(heatmap / top if top > 0 else heatmap, int(c), float(p[c]), p))
    return out


def overlay(image: np.ndarray, explanation: Explanation, *, alpha: float = 0.45) -> np.ndarray:
    """The image (RGB 0-255) under the heatmap (jet colours), as ``uint8`` pixels of the image's size.

    Example:
        >>> found = Explanation(np.eye(2), 0, 0.9, np.array([0.9, 0.1]))
        >>> overlay(np.zeros((8, 8, 3)), found).shape
        (8, 8, 3)
    """
    from matplotlib import colormaps

    image = np.asarray(image, np.float32) / 255
    heat = colormaps["jet"](explanation.upsampled(image.shape[:2]))[..., :3]
    return np.uint8(np.clip((1 - alpha) * image + alpha * heat, 0, 1) * 255 + 0.5)


def save_overlay(image: np.ndarray, explanation: Explanation, path: str | Path, class_names: Sequence[str],
                 *, alpha: float = 0.45) -> Path:
    """Write a PNG: the image, and the image under the heatmap, titled with the class and its probability."""
    from matplotlib.figure import Figure

    blended = overlay(image, explanation, alpha=alpha)
    image = np.asarray(image, np.float32) / 255
    fig = Figure(figsize=(6.4, 3.4), dpi=100)
    left, right = fig.subplots(1, 2)
    left.imshow(image)
    left.set_title("image")
    right.imshow(blended)
    right.set_title(f"Grad-CAM: {class_names[explanation.class_index]} ({explanation.probability:.1%})")
    for ax in (left, right):
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
