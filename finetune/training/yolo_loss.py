"""YOLO training targets and loss (YOLOv3/v4 style), for the raw grids that :mod:`finetune.models.yolo` outputs.

Targets: each true box goes to the anchor (of all heads) whose shape fits it best (IoU of sizes) and to the grid
cell holding its centre; that cell/anchor learns the box (GIoU loss, weighted ``2 - w * h`` so small boxes
count more), objectness 1 and its class (binary cross-entropy). Every other cell/anchor learns objectness 0,
except those whose predicted box already overlaps a true box by more than ``ignore`` IoU (not penalised).
Sums over cells, averaged over images.

Example:
    >>> from finetune.models.yolo import YoloHead
    >>> head = YoloHead(((10.0, 10.0), (20.0, 20.0)), 1.0, 2)
    >>> grids, truth = encode_targets(np.array([[0.3, 0.3, 0.08, 0.08]]), np.array([1]), [head], [4], 100, 3)
    >>> grids[0].shape, int(grids[0][..., 4].sum()), np.argwhere(grids[0][..., 4])[0].tolist()
    ((4, 4, 2, 7), 1, [1, 1, 0])
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ..models.yolo import decode_grid
from ..models.yolo_tune import wh_iou


def encode_targets(boxes: np.ndarray, labels: np.ndarray, heads, grid_sizes: list[int], input_size: int,
                   max_boxes: int) -> tuple[list[np.ndarray], np.ndarray]:
    """``(grids, truth)`` for one image: ``boxes`` ``(n, 4)`` centre x, y, width, height in fractions of the
    image. ``grids[h]``: ``(S, S, anchors, 5 + C)`` = box, objectness, one-hot class; ``truth``: ``(max_boxes, 4)``
    the boxes again, zero-padded (for the ignore mask). Boxes beyond ``max_boxes`` are dropped from ``truth`` only."""
    classes = heads[0].classes
    grids = [np.zeros((s, s, len(h.anchors), 5 + classes), np.float32) for h, s in zip(heads, grid_sizes)]
    truth = np.zeros((max_boxes, 4), np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    truth[:min(len(boxes), max_boxes)] = boxes[:max_boxes]
    if not len(boxes):
        return grids, truth
    anchors = np.concatenate([np.asarray(h.anchors, np.float32) for h in heads])
    owner = np.concatenate([[(h, a) for a in range(len(head.anchors))] for h, head in enumerate(heads)])
    best = np.argmax(wh_iou(boxes[:, 2:] * input_size, anchors), axis=1)
    for box, label, b in zip(boxes, labels, best):
        h, a = owner[b]
        s = grid_sizes[h]
        col, row = min(int(box[0] * s), s - 1), min(int(box[1] * s), s - 1)
        grids[h][row, col, a, :4] = box
        grids[h][row, col, a, 4] = 1
        grids[h][row, col, a, 5 + int(label)] = 1
    return grids, truth


def _corners(box: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return box[..., :2] - box[..., 2:] / 2, box[..., :2] + box[..., 2:] / 2


def box_iou(a: tf.Tensor, b: tf.Tensor, generalized: bool = False) -> tf.Tensor:
    """IoU (or GIoU) of centre/size boxes, broadcasting over leading axes."""
    a0, a1 = _corners(a)
    b0, b1 = _corners(b)
    inter = tf.reduce_prod(tf.maximum(tf.minimum(a1, b1) - tf.maximum(a0, b0), 0.0), -1)
    union = tf.reduce_prod(a[..., 2:], -1) + tf.reduce_prod(b[..., 2:], -1) - inter
    iou = inter / tf.maximum(union, 1e-9)
    if not generalized:
        return iou
    hull = tf.reduce_prod(tf.maximum(a1, b1) - tf.minimum(a0, b0), -1)
    return iou - (hull - union) / tf.maximum(hull, 1e-9)


def yolo_loss(outputs, grids, truth: tf.Tensor, heads, input_size: int, ignore: float = 0.5) -> dict[str, tf.Tensor]:
    """``{"loss", "box", "objectness", "class"}`` of a batch: ``outputs`` the raw grids, ``grids`` their targets
    from :func:`encode_targets` (batched), ``truth`` ``(B, max_boxes, 4)``."""
    parts = {"box": 0.0, "objectness": 0.0, "class": 0.0}
    batch = tf.cast(tf.shape(truth)[0], tf.float32)
    bce = tf.nn.sigmoid_cross_entropy_with_logits
    for raw, target, head in zip(outputs, grids, heads):
        boxes, logits = decode_grid(tf.cast(raw, tf.float32), head, input_size, training=True)
        positive = target[..., 4]
        giou = box_iou(boxes, target[..., :4], generalized=True)
        small = 2.0 - target[..., 2] * target[..., 3]
        parts["box"] += tf.reduce_sum(positive * small * (1.0 - giou))
        overlap = tf.reduce_max(box_iou(boxes[..., None, :], truth[:, None, None, None, :, :]), axis=-1)
        negative = (1.0 - positive) * tf.cast(overlap < ignore, tf.float32)
        objectness = bce(labels=positive, logits=logits[..., 0])
        parts["objectness"] += tf.reduce_sum((positive + negative) * objectness)
        parts["class"] += tf.reduce_sum(positive[..., None] * bce(labels=target[..., 5:], logits=logits[..., 1:]))
    parts = {k: v / batch for k, v in parts.items()}
    parts["loss"] = parts["box"] + parts["objectness"] + parts["class"]
    return parts
