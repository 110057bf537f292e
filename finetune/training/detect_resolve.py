"""The detection recipe, decided once by a pure function before any work: :func:`resolve_detection`.

``finetune train instances.json`` reads a :class:`~finetune.config.TrainConfig` like every run; the fields a
detection run reads are in :data:`DETECTION_FIELDS`, and any other field moved from its default (an image
augment preset, a head option, mixup...) is a :class:`ConfigError` that names it, before anything is built.
Where a field still has the classification default, the detection default below stands (and the recipe says so).

Example:
    >>> from finetune.config import TrainConfig
    >>> facts = BoxFacts(("cell",), {"train": (40, 90), "val": (5, 11), "test": (5, 12)},
    ...                  np.array([[0.1, 0.12], [0.2, 0.2], [0.11, 0.1]] * 10), 4, "yolov4_tiny", 416)
    >>> recipe = resolve_detection(TrainConfig(data="x.json"), facts)
    >>> recipe.input_size, recipe.views, recipe.batch_size, len(recipe.anchors)
    (416, 4, 8, 6)
    >>> resolve_detection(TrainConfig(data="x.json", mixup=0.2), facts)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    finetune.errors.ConfigError: not used by detection runs: --mixup 0.2; drop it (detection reads: ...)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..choices import DETECTOR_BACKBONES, DETECTOR_PREFIX
from ..config import TrainConfig
from ..errors import ConfigError

#: TrainConfig fields a detection run reads.
DETECTION_FIELDS = ("data", "images", "backbone", "weights", "image_size", "batch_size", "val_split", "test_split", "seed",
                    "split_seed", "lr", "head_epochs", "tune_lr", "tune_epochs", "patience", "tune_patience",
                    "cache_variants", "time_budget", "output", "name")

#: Detection defaults where the field still holds the classification default.
DETECTION_DEFAULTS = {"batch_size": 8, "head_epochs": 30, "tune_epochs": 20, "patience": 5, "tune_patience": 5,
                      "lr": 1e-3, "tune_lr": 1e-4, "cache_variants": 3}
ANCHORS = 6


@dataclass(frozen=True)
class BoxFacts:
    """What the data says, gathered before any work: classes, per split ``(images, boxes)``, the training boxes'
    sizes as fractions of their image, the most boxes in one image, the detector and its cfg's input size."""

    class_names: tuple[str, ...]
    counts: dict[str, tuple[int, int]]
    box_sizes: np.ndarray
    max_boxes: int
    detector: str
    cfg_size: int


@dataclass(frozen=True)
class DetectionRecipe:
    """Every decision of a detection run (saved as ``recipe.json``)."""

    detector: str
    input_size: int
    class_names: tuple[str, ...]
    anchors: tuple[tuple[float, float], ...]
    views: int
    batch_size: int
    head_lr: float
    head_epochs: int
    tune_lr: float
    tune_epochs: int
    patience: int
    tune_patience: int
    max_boxes: int
    seed: int
    time_budget: float | None
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DetectionRecipe":
        values = dict(values)
        values["class_names"] = tuple(values["class_names"])
        values["anchors"] = tuple(tuple(a) for a in values["anchors"])
        values["notes"] = tuple(values.get("notes", ()))
        return cls(**values)

    def save(self, path: str | Path) -> Path:
        from ..util import atomic_text

        atomic_text(path, json.dumps(self.to_dict(), indent=1) + "\n")
        return Path(path)

    def describe(self) -> str:
        anchors = " ".join(f"{w:.0f}x{h:.0f}" for w, h in self.anchors)
        lines = [f"detector       {self.detector} at {self.input_size}x{self.input_size} (plain resize), "
                 f"{len(self.class_names)} class(es): {', '.join(self.class_names)}",
                 f"anchors        {anchors} (k-means of the training boxes; small half on the fine grid)",
                 f"phase 1        neck + new heads on cached backbone maps of {self.views} views per image "
                 f"(1 plain + {self.views - 1} augmented), Adam {self.head_lr:g}, up to {self.head_epochs} epochs, "
                 f"patience {self.patience} on val mAP@0.5",
                 f"phase 2        + the backbone's last block, live augmentation, Adam {self.tune_lr:g}, up to "
                 f"{self.tune_epochs} epochs, patience {self.tune_patience}; the better phase is kept",
                 f"batch          {self.batch_size}; at most {self.max_boxes} boxes per image"]
        if self.time_budget:
            lines.append(f"time budget    {self.time_budget:g} s")
        lines += [f"note           {n}" for n in self.notes]
        return "\n".join(lines)


def detector_name(backbone: str) -> str:
    """The detector a box run trains: ``backbone``, or ``yolov4_tiny`` for the (classification) default.

    Raises:
        ConfigError: ``backbone`` is not a detector.
    """
    if backbone == TrainConfig().backbone:
        return DETECTOR_BACKBONES[0]
    if backbone not in DETECTOR_BACKBONES and not backbone.startswith(DETECTOR_PREFIX):
        raise ConfigError(f"backbone {backbone!r} is not a detector; boxes train {', '.join(DETECTOR_BACKBONES)} or "
                          f"{DETECTOR_PREFIX}CFG[,WEIGHTS] (a Darknet cfg with [yolo] heads)")
    return backbone


def resolve_detection(config: TrainConfig, facts: BoxFacts) -> DetectionRecipe:
    """The recipe for ``config`` on data with ``facts``; pure (the anchors' k-means is seeded).

    Raises:
        ConfigError: a field detection does not read was changed; fewer than 1 training box.
    """
    defaults = TrainConfig()
    foreign = [f"--{k.replace('_', '-')} {getattr(config, k)}" for k in TrainConfig.__dataclass_fields__
               if k not in DETECTION_FIELDS and getattr(config, k) != getattr(defaults, k)]
    if foreign:
        raise ConfigError(f"not used by detection runs: {', '.join(foreign)}; drop it (detection reads: "
                          f"{', '.join('--' + k.replace('_', '-') for k in DETECTION_FIELDS[1:])})")
    notes = []
    chosen = {}
    for key, value in DETECTION_DEFAULTS.items():
        given = getattr(config, key)
        if given is None or given == getattr(defaults, key):
            chosen[key] = value
        else:
            chosen[key] = given
    replaced = [k for k, v in DETECTION_DEFAULTS.items() if chosen[k] == v and getattr(defaults, k) not in (None, v)]
    if replaced:
        notes.append("detection defaults: " + ", ".join(f"{k} {chosen[k]:g}" for k in replaced)
                     + " (in place of the classification defaults)")
    size = config.image_size or facts.cfg_size
    if size % 32:
        raise ConfigError(f"image_size: a YOLO input must be a multiple of 32, got {size}")
    from ..models.yolo_tune import kmeans_anchors

    anchors = kmeans_anchors(facts.box_sizes * size, ANCHORS, seed=config.seed)
    detector = detector_name(config.backbone)
    train_images = facts.counts.get("train", (0, 0))[0]
    if not facts.counts.get("val", (0, 0))[1]:
        notes.append("no validation boxes: each phase runs its epochs and the last weights are kept")
    return DetectionRecipe(detector=detector, input_size=int(size), class_names=tuple(facts.class_names),
                           anchors=tuple((float(w), float(h)) for w, h in anchors), views=1 + int(chosen["cache_variants"]),
                           batch_size=int(min(chosen["batch_size"], max(train_images, 1))),
                           head_lr=float(chosen["lr"]), head_epochs=int(chosen["head_epochs"]),
                           tune_lr=float(chosen["tune_lr"]), tune_epochs=int(chosen["tune_epochs"]),
                           patience=int(chosen["patience"]), tune_patience=int(chosen["tune_patience"]),
                           max_boxes=max(int(facts.max_boxes), 1), seed=int(config.seed),
                           time_budget=config.time_budget, notes=tuple(notes))
