"""A YOLO network made ready for a user's classes: new heads, anchors from the user's boxes, the cache cut.

* :func:`retarget` rewrites a Darknet cfg for ``C`` classes and new anchors (the convolution before each
  ``[yolo]`` gets ``anchors x (5 + C)`` filters); :func:`transfer_weights` copies every layer whose shapes
  still match (everything but those two heads) from the COCO network.
* :func:`kmeans_anchors`: anchors as k-means of the training boxes' sizes with ``1 - IoU`` as the distance
  (YOLOv2's recipe), sorted by area; the small half goes to the fine grid, the large half to the coarse one.
* :func:`cut_point` / :func:`split_network`: the network as a frozen **bottom** (the backbone, run once per
  augmented view and cached) and a trainable **top** (neck and heads) that reads the bottom's outputs. For
  YOLOv4-tiny the cut is after ``maxpool_25`` (13x13x512 at 416 px) with ``leaky_23`` (the 26x26x256
  convolution inside the third CSP block, which the neck concatenates) as the second input.

Example:
    >>> import numpy as np
    >>> wh = np.array([[10, 10], [12, 11], [50, 60], [55, 58], [200, 180], [210, 190]], float)
    >>> [tuple(int(v) for v in a) for a in kmeans_anchors(wh, 3)]
    [(11, 10), (52, 59), (205, 185)]
"""

from __future__ import annotations

import copy

import keras
import numpy as np

from ..errors import ConfigError, DataError
from .yolo import YoloHead, build_darknet


def yolo_sections(sections: list[dict[str, str]]) -> list[int]:
    """Indices (0 = the first section after ``[net]``) of the ``[yolo]`` sections."""
    return [i for i, s in enumerate(sections[1:]) if s["type"] == "yolo"]


def retarget(sections: list[dict[str, str]], classes: int, anchors: np.ndarray,
             input_size: int | None = None) -> list[dict[str, str]]:
    """A copy of ``sections`` for ``classes`` classes and ``anchors`` (``(k, 2)`` pixels at the input size,
    sorted by area): the first ``[yolo]`` (the coarsest grid) takes the largest ``k / heads`` anchors."""
    result = copy.deepcopy(sections)
    heads = yolo_sections(result)
    per_head = len(anchors) // len(heads)
    if per_head * len(heads) != len(anchors):
        raise ConfigError(f"{len(anchors)} anchors do not divide among {len(heads)} YOLO heads")
    flat = ", ".join(f"{round(float(w))},{round(float(h))}" for w, h in anchors)
    for order, i in enumerate(heads):
        first = (len(heads) - 1 - order) * per_head
        yolo = result[i + 1]
        yolo.update(classes=str(classes), num=str(len(anchors)), anchors=flat,
                    mask=",".join(str(m) for m in range(first, first + per_head)))
        conv = result[i]
        if conv["type"] != "convolutional":
            raise ConfigError(f"the [yolo] section {i + 1} does not follow a convolution")
        conv["filters"] = str(per_head * (5 + classes))
    if input_size:
        result[0] = {**result[0], "width": str(input_size), "height": str(input_size)}
    return result


def transfer_weights(source: keras.Model, target: keras.Model) -> list[str]:
    """Copy every layer of ``source`` into the same-named layer of ``target`` whose weight shapes match; returns
    the names of ``target``'s layers with weights that were left as initialised (the new heads)."""
    fresh = []
    for layer in target.layers:
        if not layer.weights:
            continue
        try:
            other = source.get_layer(layer.name)
        except ValueError:
            fresh.append(layer.name)
            continue
        weights = other.get_weights()
        if [w.shape for w in weights] == [tuple(w.shape) for w in layer.weights]:
            layer.set_weights(weights)
        else:
            fresh.append(layer.name)
    return fresh


def init_heads(model: keras.Model, heads, names: list[str], prior: float = 0.01) -> None:
    """Start new head convolutions near zero (kernel std 0.01, box and class biases 0) with objectness at
    ``prior``: the boxes start at their anchors and the loss at a sane scale. (Glorot-initialised heads on COCO
    features give raw outputs of several units: ``exp`` of the size offsets saturates, and its gradient with it.)"""
    rng = np.random.default_rng(0)
    for name, head in zip(names, heads):
        layer = model.get_layer(name)
        kernel, bias = layer.get_weights()
        per = 5 + head.classes
        bias = np.zeros_like(bias)
        bias[4::per] = np.log(prior / (1 - prior))
        layer.set_weights([rng.normal(0, 0.01, kernel.shape).astype(kernel.dtype), bias])


def kmeans_anchors(wh: np.ndarray, k: int = 6, seed: int = 0, iterations: int = 100, restarts: int = 10) -> np.ndarray:
    """``k`` anchors ``(w, h)`` clustering ``wh`` (box sizes) with distance ``1 - IoU`` of boxes sharing a
    centre; sorted by area. Fewer distinct boxes than ``k`` are repeated (scaled) to fill.

    Raises:
        DataError: no boxes at all.
    """
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    if not len(wh):
        raise DataError("no training boxes to estimate anchors from: every image is a negative")
    distinct = np.unique(wh, axis=0)
    if len(distinct) < k:
        scales = np.linspace(0.7, 1.4, int(np.ceil(k / len(distinct))))
        return _by_area(np.concatenate([distinct * s for s in scales])[:k])
    rng = np.random.default_rng(seed)
    best, best_fit = None, -1.0
    for _ in range(restarts):  # k-means++ seeding, keep the clustering whose boxes fit their anchor best
        centres = distinct[[rng.integers(len(distinct))]]
        while len(centres) < k:
            far = 1 - wh_iou(distinct, centres).max(axis=1)
            centres = np.concatenate([centres, distinct[[rng.choice(len(distinct), p=far / far.sum())]]])
        for _ in range(iterations):
            nearest = np.argmax(wh_iou(wh, centres), axis=1)
            moved = np.array([np.median(wh[nearest == j], axis=0) if np.any(nearest == j) else centres[j]
                              for j in range(k)])
            if np.allclose(moved, centres):
                break
            centres = moved
        fit = float(wh_iou(wh, centres).max(axis=1).mean())
        if fit > best_fit:
            best, best_fit = centres, fit
    return _by_area(best)


def _by_area(anchors: np.ndarray) -> np.ndarray:
    return anchors[np.argsort(anchors[:, 0] * anchors[:, 1], kind="stable")].astype(np.float32)


def wh_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes sharing a centre: ``a`` ``(n, 2)`` x ``b`` ``(m, 2)`` -> ``(n, m)``."""
    inter = np.minimum(a[:, None, 0], b[None, :, 0]) * np.minimum(a[:, None, 1], b[None, :, 1])
    return inter / (a[:, None, 0] * a[:, None, 1] + b[None, :, 0] * b[None, :, 1] - inter)


# -- the cache cut ------------------------------------------------------------------------------------------------


def cut_point(sections: list[dict[str, str]]) -> tuple[int, list[int]]:
    """``(start, feeds)``: the top begins at the section after the last ``maxpool`` before the first ``[yolo]``,
    and reads the outputs of the sections in ``feeds`` (every earlier section it refers to, and the last one).

    Raises:
        ConfigError: the cfg has no ``maxpool`` before its first ``[yolo]`` (nowhere to cut).
    """
    body = sections[1:]
    first_yolo = yolo_sections(sections)[0]
    pools = [i for i, s in enumerate(body[:first_yolo]) if s["type"] == "maxpool"]
    if not pools:
        raise ConfigError("the Darknet cfg has no maxpool before its first [yolo]: no backbone output to cache")
    start = pools[-1] + 1
    feeds = {start - 1}
    for i, section in enumerate(body[start:], start):
        refs = []
        if section["type"] == "route":
            refs = [int(v) for v in section["layers"].split(",")]
        elif section["type"] == "shortcut":
            refs = [int(section["from"])]
        feeds |= {r if r >= 0 else i + r for r in refs if (r if r >= 0 else i + r) < start}
    return start, sorted(feeds)


def tune_start(sections: list[dict[str, str]]) -> int:
    """The first section that phase 2 trains: the last backbone block (after the second-to-last ``maxpool``)."""
    first_yolo = yolo_sections(sections)[0]
    pools = [i for i, s in enumerate(sections[1:first_yolo + 1]) if s["type"] == "maxpool"]
    return pools[-2] + 1 if len(pools) > 1 else 0


def section_layer(sections: list[dict[str, str]], i: int) -> str:
    """The name of the layer whose output is section ``i``'s output."""
    section = sections[i + 1]
    kind = section["type"]
    if kind == "convolutional":
        activation = section.get("activation", "linear")
        return f"{ {'leaky': 'leaky', 'mish': 'mish'}.get(activation, 'conv')}_{i}"
    if kind == "route" and int(section.get("groups", 1)) == 1 and "," not in section["layers"]:
        ref = int(section["layers"])
        return section_layer(sections, ref if ref >= 0 else i + ref)
    prefix = {"route": "route", "shortcut": "shortcut", "maxpool": "maxpool", "upsample": "upsample"}.get(kind)
    if prefix is None:
        raise ConfigError(f"cannot cut at a [{kind}] section")
    return f"{prefix}_{i}"


def split_network(model: keras.Model, sections: list[dict[str, str]]) -> tuple[keras.Model, keras.Model, list[str]]:
    """``(bottom, top, cut layer names)``: ``bottom(image)`` gives the cut outputs (a list, in section order);
    ``top(those)`` gives the raw grids, sharing ``model``'s layers (training the top trains ``model``)."""
    start, feeds = cut_point(sections)
    names = [section_layer(sections, i) for i in feeds]
    bottom = keras.Model(model.input, [model.get_layer(n).output for n in names], name="darknet_bottom")
    inputs = {i: keras.Input(tuple(model.get_layer(n).output.shape[1:]), name=f"cut_{n}") for i, n in zip(feeds, names)}
    top, _ = build_darknet(sections, reuse=model, start=start, feeds=inputs)
    return bottom, keras.Model(top.inputs, top.outputs, name="darknet_top"), names


def heads_of(sections: list[dict[str, str]]) -> list[YoloHead]:
    """The :class:`YoloHead` of each ``[yolo]`` section."""
    from .yolo import _head

    return [_head(sections[i + 1]) for i in yolo_sections(sections)]
