"""Look inside a trained classifier: its worst mistakes, and test-time augmentation (TTA).

Example:
    >>> model, config, names = load_run("runs/flowers/")                         # doctest: +SKIP
    >>> rows = top_losses(model, test_items, names, config.image_size, k=16)     # doctest: +SKIP
    >>> plot_worst_mistakes(rows, "runs/flowers/worst.png")                      # doctest: +SKIP
    >>> evaluate_tta(model, test_items, names, config.image_size)["accuracy_tta"]  # doctest: +SKIP
    0.947
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np

from ..choices import DEFAULT_RESIZE
from ..data import load_image, load_images
from .metrics import classification_metrics
from .predict import as_class_probs, chunks, inference_fn, predict_batches, predict_files

EPS = 1e-7


@dataclass(frozen=True)
class LossRow:
    """One test image and how wrong the model is about it.

    Attributes:
        path: The image file.
        true, predicted: Class names.
        p_predicted, p_true: The model's probability of the predicted and of the true class.
        loss: Cross-entropy of this image, ``-log(p_true)``.
    """

    path: str
    true: str
    predicted: str
    p_predicted: float
    p_true: float
    loss: float

    @property
    def correct(self) -> bool:
        return self.true == self.predicted


def top_losses(
    model: keras.Model, items: Sequence[tuple[str, int]], class_names: Sequence[str], image_size: int,
    k: int = 16, *, batch_size: int = 32, resize: str = DEFAULT_RESIZE,
) -> list[LossRow]:
    """The ``k`` images of ``[(path, label), ...]`` with the highest loss, worst first.

    Example:
        >>> rows = top_losses(model, folder.splits["test"], folder.class_names, 224, k=4)  # doctest: +SKIP
        >>> rows[0].true, rows[0].predicted, round(rows[0].p_predicted, 2)                 # doctest: +SKIP
        ('cat', 'dog', 0.97)
    """
    if not items:
        return []
    probs = predict_files(model, [p for p, _ in items], image_size, batch_size, resize)
    labels = np.asarray([label for _, label in items])
    p_true = probs[np.arange(len(labels)), labels]
    losses = -np.log(np.clip(p_true, EPS, 1.0))
    rows = []
    for i in np.argsort(-losses, kind="stable")[:k]:
        pred = int(probs[i].argmax())
        rows.append(LossRow(items[i][0], class_names[labels[i]], class_names[pred],
                            float(probs[i, pred]), float(p_true[i]), float(losses[i])))
    return rows


def plot_worst_mistakes(rows: Sequence[LossRow], path: str | Path, *, columns: int = 4,
                        title: str = "Highest-loss test images", heatmaps: Sequence[np.ndarray] | None = None,
                        images: np.ndarray | None = None) -> None:
    """A grid PNG of ``rows`` titled ``true / pred p=0.93`` (red when wrong, green when right).

    ``heatmaps`` (one Grad-CAM per row, values in [0, 1] at any resolution) are
    laid over ``images`` (the rows' images as the model saw them, RGB 0-255),
    showing where the network looked for its prediction.
    """
    from matplotlib.figure import Figure

    columns = max(1, min(columns, len(rows)))
    lines = max(1, math.ceil(len(rows) / columns))
    titles = [f"{row.true} / {row.predicted} p={row.p_predicted:.2f}" for row in rows]
    cell = max(3.0, 0.085 * max(map(len, titles), default=0))  # inches: wide enough that titles never overlap
    fig = Figure(figsize=(cell * columns, cell * 1.1 * lines + 0.5), dpi=100)
    axes = fig.subplots(lines, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, row, text) in enumerate(zip(axes.flat, rows, titles)):
        ax.imshow(load_image(row.path) if images is None else np.asarray(images[i]).astype(np.uint8))
        if heatmaps is not None:
            extent = (-0.5, ax.get_xlim()[1], ax.get_ylim()[0], -0.5)
            ax.imshow(heatmaps[i], cmap="jet", alpha=0.4, extent=extent, interpolation="bilinear")
        ax.set_title(f"{text}\n{Path(row.path).name}", fontsize=10, color="darkgreen" if row.correct else "firebrick")
    if not rows:
        axes.flat[0].text(0.5, 0.5, "no test images", ha="center", va="center")
    fig.suptitle(f"{title}: true / predicted", fontsize=12)
    fig.tight_layout()
    fig.savefig(path)


def tta_views(images, *, flip: bool = True, crops: bool = True, crop_fraction: float = 0.9,
              vflip: bool = False) -> list:
    """The augmented copies of a batch that :func:`tta_predict` averages over.

    The batch itself, then (with ``crops``) the center and 4 corner crops covering
    ``crop_fraction`` of each side, resized back; then (with ``flip``) the horizontal
    mirror of each of those; then (with ``vflip``) the vertical mirror of every view so
    far. 12 views by default; ``crops=False, vflip=True``: the 4 views of the ``flips``
    augmentation (identity, horizontal, vertical, both).
    """
    import tensorflow as tf

    images = tf.convert_to_tensor(images, tf.float32)
    views = [images]
    if crops:
        n, h, w = tf.shape(images)[0], int(images.shape[1]), int(images.shape[2])
        m = 1.0 - crop_fraction
        corners = [(m / 2, m / 2), (0.0, 0.0), (0.0, m), (m, 0.0), (m, m)]  # center, then (top, left) of each corner
        for top, left in corners:
            box = tf.constant([[top, left, top + crop_fraction, left + crop_fraction]], tf.float32)
            views.append(tf.image.crop_and_resize(images, tf.repeat(box, n, axis=0), tf.range(n), (h, w)))
    if flip:
        views += [tf.reverse(v, axis=[2]) for v in views]
    if vflip:
        views += [tf.reverse(v, axis=[1]) for v in views]
    return views


def tta_options(augment: str) -> dict[str, Any]:
    """The test-time views that match a run's training augmentation: for ``flips`` (images without an up)
    the 4 flips the model was trained on, no crops; otherwise horizontal flips and crops (12 views)."""
    return {"crops": False, "vflip": True} if augment == "flips" else {}


def tta_predict(model: keras.Model, images: np.ndarray, *, flip: bool = True, crops: bool = True,
                crop_fraction: float = 0.9, vflip: bool = False, batch_size: int = 32) -> np.ndarray:
    """Class probabilities averaged over the test-time views of :func:`tta_views`.

    Args:
        model: A classifier taking RGB [0, 255] images (any finetune model).
        images: ``(n, h, w, 3)`` float RGB in [0, 255], at the model's input size.
        flip, crops, crop_fraction, vflip: Which views to average (see :func:`tta_views`).

    Returns:
        ``(n, num_classes)`` probabilities (binary sigmoid outputs expanded to 2 columns).

    Example:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.GlobalAveragePooling2D(),
        ...                           keras.layers.Dense(5, activation="softmax")])
        >>> probs = tta_predict(model, np.zeros((2, 32, 32, 3)))   # or load_images(["rose.jpg"], 32)
        >>> probs.shape
        (2, 5)
    """
    out = []
    forward = inference_fn(model)
    for chunk in chunks(np.asarray(images, np.float32), batch_size):
        views = tta_views(chunk, flip=flip, crops=crops, crop_fraction=crop_fraction, vflip=vflip)
        out.append(np.mean([as_class_probs(forward(v)) for v in views], axis=0))
    return np.concatenate(out) if out else np.zeros((0, 0))


def evaluate_tta(model: keras.Model, items: Sequence[tuple[str, int]], class_names: Sequence[str], image_size: int,
                 *, batch_size: int = 32, resize: str = DEFAULT_RESIZE, ordinal=None, **tta: Any) -> dict[str, Any]:
    """Metrics on ``[(path, label), ...]`` without and with TTA.

    Returns:
        ``{"accuracy": ..., "accuracy_tta": ..., "plain": metrics, "tta": metrics}``, where
        ``metrics`` is :func:`finetune.evaluation.metrics.classification_metrics` (per-class, confusion matrix).
        ``tta`` keywords go to :func:`tta_predict`; with an ``ordinal`` rule the classes are its decisions.

    Example:
        >>> result = evaluate_tta(model, folder.splits["test"], folder.class_names, 224)   # doctest: +SKIP
        >>> result["accuracy"], result["accuracy_tta"]                                     # doctest: +SKIP
        (0.93, 0.947)
    """
    labels = np.asarray([label for _, label in items], dtype=int)
    plain, augmented = [], []
    forward = inference_fn(model)
    for chunk in chunks(list(items), batch_size):
        images = load_images([p for p, _ in chunk], image_size, resize)
        plain.append(as_class_probs(forward(images)))
        augmented.append(tta_predict(model, images, batch_size=batch_size, **tta))
    k = len(class_names)
    plain_probs = np.concatenate(plain) if plain else np.zeros((0, k))
    tta_probs = np.concatenate(augmented) if augmented else np.zeros((0, k))
    def decided(probs):
        return ordinal.classes(probs) if ordinal is not None else None

    plain_metrics = classification_metrics(labels, plain_probs, class_names, decided(plain_probs))
    tta_metrics = classification_metrics(labels, tta_probs, class_names, decided(tta_probs))
    return {"accuracy": plain_metrics["accuracy"], "accuracy_tta": tta_metrics["accuracy"],
            "plain": plain_metrics, "tta": tta_metrics}


def predict_images(model: keras.Model, images: np.ndarray, *, mc_samples: int = 0, tta: bool = False, forward=None,
                   tta_views: dict | None = None):
    """``(probs, std, entropy)`` as class columns: plain, MC-dropout averaged (std and entropy), or test-time augmented.

    ``forward``: :func:`~finetune.evaluation.predict.inference_fn` of ``model``, made once by a caller that
    predicts batch after batch (a new one traces the model again).
    """
    if mc_samples:
        from .uncertainty import mc_predict

        result = mc_predict(model, images, samples=mc_samples, seed=0)
        std = result.std if result.std.shape[-1] > 1 else np.concatenate([result.std, result.std], axis=-1)
        return as_class_probs(result.mean), std, result.entropy
    if tta:
        return as_class_probs(tta_predict(model, images, **(tta_views or {}))), None, None
    return predict_batches(model, images, as_classes=True, forward=forward), None, None
