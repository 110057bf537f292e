"""Feature taps: earlier stages of a base pooled beside its top, for features that keep finer detail.

A *stage* ends where the base's feature map changes shape (channels or
resolution) from one block to the next, as timm's ``features_only`` stages.
:func:`with_taps` returns the base with the last ``n`` stage ends below its
final block resized (average pooling; area resizing when the sizes do not
divide) to the top's resolution and concatenated to its feature map along
channels. The output stays a 4-D feature map, so global average pooling of it
is exactly the pooled top and the pooled taps side by side, Grad-CAM still
finds it, and the base can still be cut for the activation cache.

Example:
    >>> base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(64, 64, 3))
    >>> tapped, names = with_taps(base, r"^(block_\\d+)_", 2)
    >>> names
    ['block_15_add', 'block_12_add']
    >>> tapped.output.shape
    (None, 2, 2, 1536)
"""

from __future__ import annotations

import re

import keras

from ..errors import CannotTap


def stage_ends(base: keras.Model, block_pattern: str) -> list[str]:
    """The last layer of every block after which the feature map changes shape, deepest first, the final
    block (which feeds the top) left out."""
    pattern = re.compile(block_pattern)
    last_of_block: dict[str, keras.layers.Layer] = {}
    for layer in base.layers:
        match = pattern.match(layer.name)
        if match and len(getattr(layer, "output", ()).shape) == 4:
            last_of_block.pop(match.group(1), None)  # keep insertion order at the block's last layer
            last_of_block[match.group(1)] = layer
    ends = list(last_of_block.values())
    return [a.name for a, b in zip(ends[-2::-1], ends[:0:-1]) if tuple(a.output.shape) != tuple(b.output.shape)]


def with_taps(base: keras.Model, block_pattern: str, n: int) -> tuple[keras.Model, list[str]]:
    """``base`` with its last ``n`` stage ends concatenated to its output, and the tapped layers' names.

    Raises:
        CannotTap: ``base`` has no 4-D output or fewer than ``n`` stages below its final block.
    """
    top = base.output
    if len(top.shape) != 4:
        raise CannotTap(f"{base.name} outputs a {len(top.shape)}-D tensor: feature taps need a feature map")
    names = stage_ends(base, block_pattern)[:n]
    if len(names) < n:
        raise CannotTap(f"{base.name} has {len(names)} stages below its final block; feature_taps is at most "
                        f"{len(names)}")
    height, width = int(top.shape[1]), int(top.shape[2])
    maps = [top]
    for i, name in enumerate(names):
        tap = base.get_layer(name).output
        h, w = int(tap.shape[1]), int(tap.shape[2])
        if (h, w) == (height, width):
            maps.append(tap)
        elif h % height == 0 and w % width == 0:
            maps.append(keras.layers.AveragePooling2D((h // height, w // width), name=f"tap_{i}_pool")(tap))
        else:
            maps.append(keras.layers.Resizing(height, width, interpolation="area", name=f"tap_{i}_resize")(tap))
    return keras.Model(base.input, keras.layers.Concatenate(name="taps")(maps), name=base.name), names
