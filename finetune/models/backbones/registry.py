"""The backbone registry: a name -> how to build a pretrained feature extractor.

A backbone knows nothing of where images come from. It says how to build the
network without its classifier top, how raw RGB pixels in [0, 255] must be
scaled for it, its default input size and where it can sensibly be unfrozen.

Adding a backbone is one call to :func:`register` (see ``keras_apps.py``)::

    register(Backbone(
        name="my_net", family="mine", input_size=224, preprocessing="tf",
        build=lambda input_shape, weights: build_my_net(input_shape, weights),
        unfreeze_points={"top": "block5"}, block_pattern=r"^(block\\d+)",
    ))
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Mapping

import keras

from ...errors import ConfigError, UnknownBackboneError
from ...util import suggest

#: How raw RGB pixels in [0, 255] are mapped to what the backbone expects.
#: ``caffe``: RGB->BGR and ImageNet mean subtraction (VGG, ResNet50);
#: ``tf``: scaled to [-1, 1] (MobileNetV2, InceptionV3, Xception, ResNet50V2, EfficientNet-Lite);
#: ``torch``: scaled to [0, 1] then ImageNet mean/std;
#: ``none``: the network does its own scaling (EfficientNet, EfficientNetV2, MobileNetV3).
PREPROCESSING_MODES = ("caffe", "tf", "torch", "none")


@dataclass(frozen=True)
class Backbone:
    """How to build one pretrained network without its top.

    Attributes:
        name: Registry name, e.g. ``"vgg16"``.
        family: Human label, e.g. ``"VGG"``.
        input_size: Default square input size in pixels.
        preprocessing: One of :data:`PREPROCESSING_MODES`.
        build: ``build(input_shape, weights) -> keras.Model``; ``weights`` is
            ``"imagenet"``, ``None`` or a path to a weights file. The model maps
            preprocessed images to a 4-D feature map.
        unfreeze_points: Named layers where fine-tuning may start; the first
            entry is the default (``"top"``).
        block_pattern: Regex whose first group extracts a block id from a layer
            name; used for "unfreeze the last N blocks".
        min_input_size: Smallest input the architecture accepts.
        params_millions: Size of the network without its top.
        offline_weights: Returns a local path to ImageNet weights that need no
            download, or ``None``.
        imagenet_top: For backbones that ship their ImageNet classifier offline,
            ``build_classifier(weights) -> keras.Model`` mapping preprocessed
            images to 1000 logits.
    """

    name: str
    family: str
    input_size: int
    preprocessing: str
    build: Callable[[tuple[int, int, int], str | None], keras.Model]
    unfreeze_points: Mapping[str, str]
    block_pattern: str
    min_input_size: int = 32
    params_millions: float = 0.0
    offline_weights: Callable[[], str | None] = field(default=lambda: None)
    imagenet_top: Callable[[str | None], keras.Model] | None = None

    def __post_init__(self) -> None:
        if self.preprocessing not in PREPROCESSING_MODES:
            raise ConfigError(f"preprocessing must be one of {PREPROCESSING_MODES}, got {self.preprocessing!r}")
        if not self.unfreeze_points:
            raise ConfigError(f"backbone {self.name!r} needs at least one unfreeze point")

    @property
    def default_unfreeze(self) -> str:
        return next(iter(self.unfreeze_points.values()))

    def available_offline(self) -> bool:
        """Whether the ImageNet weights are on this machine (never raises: a listing must not fail)."""
        try:
            return self.offline_weights() is not None
        except Exception:  # noqa: BLE001 - one broken weights package must not break `finetune backbones`
            return False

    def resolve_weights(self, weights: str | None) -> str | None:
        """Map the user's choice to what ``build`` takes.

        ``"imagenet"`` prefers an offline copy when there is one; ``"none"``
        and ``None`` give random weights; anything else must be a file.
        """
        if weights is None or str(weights).lower() == "none":
            return None
        if weights == "imagenet":
            return self.offline_weights() or "imagenet"
        if not os.path.exists(weights):
            raise FileNotFoundError(
                f"weights file {weights!r} does not exist; pass 'imagenet', 'none' or a path to a .weights.h5 / .h5 file"
            )
        return str(weights)


_REGISTRY: dict[str, Backbone] = {}


def register(backbone: Backbone) -> Backbone:
    """Add ``backbone`` to the registry (a later registration replaces an earlier one)."""
    _REGISTRY[backbone.name] = backbone
    return backbone


def get_backbone(name: str) -> Backbone:
    """Look a backbone up by name (case-insensitive), suggesting close names when missing."""
    key = name.strip().lower().replace("-", "_")
    if key in _REGISTRY:
        return _REGISTRY[key]
    hint = suggest(key, _REGISTRY, n=3, cutoff=0.5)
    raise UnknownBackboneError(
        f"unknown backbone {name!r}.{hint} Run `finetune backbones` to list them."
    )


def list_backbones() -> list[Backbone]:
    """All registered backbones, in registration order."""
    return list(_REGISTRY.values())
