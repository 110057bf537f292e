"""Freeze and unfreeze policies for a pretrained base.

The policy is an object (as PyTorch Lightning's ``BackboneFinetuning``): say
where fine-tuning starts, once, and apply it to any base. BatchNormalization
layers always stay frozen: the base runs with ``training=False``, so their
moving statistics are never updated, and their scale/offset stay fixed too
(keras-team/keras #9214, #20285). A model must be recompiled after any change
to ``trainable`` (#6405); :func:`finetune.training.fine_tune` does that.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass

import keras

from ..errors import ConfigError


def freeze(model: keras.Model | keras.layers.Layer) -> None:
    """Make every weight of ``model`` non-trainable."""
    model.trainable = False


def _is_batchnorm(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


def blocks_of(base: keras.Model, block_pattern: str) -> list[str]:
    """Block ids in layer order, from the first regex group of ``block_pattern``."""
    blocks: list[str] = []
    for layer in base.layers:
        match = re.match(block_pattern, layer.name)
        if match and match.group(1) not in blocks:
            blocks.append(match.group(1))
    return blocks


@dataclass
class UnfreezePolicy:
    """Where fine-tuning starts. Give exactly one of the three.

    Attributes:
        from_layer: A layer name, or a prefix such as ``"block6"`` (the first
            layer whose name starts with it).
        last_blocks: Unfreeze the last N blocks (needs a ``block_pattern``).
        fraction: Unfreeze the top fraction of the base's layers (0 < f <= 1).
        block_pattern: Regex extracting a block id from a layer name.
        keep_frozen: Layers that stay frozen wherever they sit (outside the model's path, such as a text
            encoder's [CLS] pooler when the head pools the token states).

    Example:
        >>> policy = UnfreezePolicy(from_layer="block5_conv1")   # seed 002
        >>> vgg16_base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
        >>> policy.apply(vgg16_base)
        ['block5_conv1', 'block5_conv2', 'block5_conv3']
    """

    from_layer: str | None = None
    last_blocks: int | None = None
    fraction: float | None = None
    block_pattern: str | None = None
    keep_frozen: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        given = [v is not None for v in (self.from_layer, self.last_blocks, self.fraction)]
        if sum(given) != 1:
            raise ConfigError("give exactly one of from_layer, last_blocks or fraction")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ConfigError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.last_blocks is not None and self.last_blocks < 1:
            raise ConfigError(f"last_blocks must be >= 1, got {self.last_blocks}")

    def start_index(self, base: keras.Model) -> int:
        """Index in ``base.layers`` of the first layer to unfreeze."""
        names = [layer.name for layer in base.layers]
        if self.from_layer is not None:
            if self.from_layer in names:
                return names.index(self.from_layer)
            for i, name in enumerate(names):
                if name.startswith(self.from_layer):
                    return i
            raise ConfigError(
                f"no layer named or starting with {self.from_layer!r} in {base.name}; "
                f"blocks are: {', '.join(blocks_of(base, self.block_pattern)) if self.block_pattern else 'see model.summary()'}"
            )
        if self.fraction is not None:
            return min(len(names) - 1, int(round(len(names) * (1 - self.fraction))))
        if not self.block_pattern:
            raise ConfigError("last_blocks needs the backbone's block_pattern")
        blocks = blocks_of(base, self.block_pattern)
        if self.last_blocks > len(blocks):
            raise ConfigError(f"last_blocks={self.last_blocks} but {base.name} has {len(blocks)} blocks")
        first_block = blocks[-self.last_blocks]
        return next(i for i, name in enumerate(names) if re.match(self.block_pattern, name)
                    and re.match(self.block_pattern, name).group(1) == first_block)

    def apply(self, base: keras.Model) -> list[str]:
        """Unfreeze ``base`` from the policy's start; return the unfrozen layer names.

        Layers before the start, every BatchNormalization layer and the ``keep_frozen`` ones stay frozen.
        """
        start = self.start_index(base)
        base.trainable = True
        unfrozen = []
        for i, layer in enumerate(base.layers):
            layer.trainable = i >= start and not _is_batchnorm(layer) and layer.name not in self.keep_frozen
            if layer.trainable and layer.weights:
                unfrozen.append(layer.name)
        return unfrozen

    def state_dict(self) -> dict:
        """The policy as plain values (Lightning's convention); ``UnfreezePolicy(**state)`` rebuilds it."""
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """Where fine-tuning starts, in words (the run report shows it)."""
        if self.from_layer is not None:
            return f"from layer {self.from_layer}"
        if self.last_blocks is not None:
            return f"last {self.last_blocks} block(s)"
        return f"top {self.fraction:.0%} of layers"


def backbone_from_model(path: str, drop_top: int = 1, *, unsafe: bool = False):
    """A :class:`~finetune.models.backbones.Backbone` made of a saved model's layers (``--from model.keras``).

    The model is cloned with :func:`finetune.models.reuse.reuse` (the file is never
    changed), its top ``drop_top`` layers dropped. It must take square RGB
    images (H, H, 3) as finetune feeds them: raw pixels in [0, 255], so any
    scaling it needs must be inside it. Phase 2 unfreezes all reused layers
    unless an unfreeze point is given.
    """
    from .backbones import Backbone
    from .reuse import reuse

    if not os.path.exists(path):
        raise FileNotFoundError(f"model file {path!r} does not exist; pass a .keras or .h5 file to --from")
    body = reuse(path, drop_top=drop_top, freeze=True, unsafe=unsafe)
    shape = tuple(body.inputs[0].shape[1:])
    if len(shape) != 3 or shape[2] != 3 or shape[0] != shape[1] or shape[0] is None:
        raise ConfigError(
            f"--from {path}: the model takes inputs of shape {shape}; finetune feeds square RGB images "
            "(size, size, 3), so reuse a model built on such images"
        )
    names = [layer.name for layer in body.layers if layer.weights]
    return Backbone(
        name="from_" + re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(path)), family="reused model", input_size=int(shape[0]),
        preprocessing="none", build=lambda input_shape, weights: body,
        unfreeze_points={"all": names[0] if names else body.layers[-1].name}, block_pattern=r"^(.+)$",
        min_input_size=int(shape[0]), offline_weights=lambda: os.path.abspath(path),
    )
