"""Cutting a base into a frozen bottom and a trainable top, at the unfreeze point.

Below the first unfrozen layer the base is a fixed function of its input (it
runs in inference mode with BatchNormalization frozen), so its output at the
cut can be computed once per image and cached; phase 2 then trains only the
top. The cut is found from the graph: every tensor that a layer at or above
the cut reads from a layer below it crosses the cut (usually one tensor at a
block boundary; a residual branch adds another).

Example:
    >>> base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))
    >>> split = split_base(base, "block_16_expand")
    >>> [tuple(t.shape) for t in split.bottom.outputs]
    [(None, 1, 1, 160)]
    >>> x = np.random.rand(2, 32, 32, 3).astype("float32")
    >>> bool(np.allclose(split.top(split.bottom(x)), base(x), atol=1e-5))
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np  # noqa: F401  (the example)


class CannotSplit(ValueError):
    """The base's graph cannot be cut at the requested layer (shared layers, nested models)."""


@dataclass
class Split:
    """``bottom``: the base's input -> the tensors crossing the cut; ``top``: those tensors -> the base's output.

    Both reuse the base's own layers (no copies): training ``top`` trains the base.
    """

    bottom: keras.Model
    top: keras.Model
    layer: str

    def activations(self, x, training: bool = False) -> list:
        """The tensors crossing the cut for inputs ``x``, always as a list."""
        return _as_list(self.bottom(x, training=training))

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """The per-example shape of each tensor crossing the cut."""
        return [tuple(int(d) for d in t.shape[1:]) for t in self.bottom.outputs]


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def split_base(base: keras.Model, layer: str) -> Split:
    """Cut ``base`` just below the layer named ``layer``.

    Raises:
        CannotSplit: a layer is used more than once, or the cut leaves nothing below or above it.
    """
    # `operations` holds the layers and the plain ops (e.g. MobileNetV3's hard-swish multiply) in graph order.
    operations = list(getattr(base, "operations", base.layers))
    names = [op.name for op in operations]
    if layer not in names:
        raise CannotSplit(f"{base.name} has no layer {layer!r}")
    start = names.index(layer)
    if start == 0:
        raise CannotSplit(f"{layer!r} is the input of {base.name}: nothing below it to cache")
    producer: dict[int, int] = {}
    try:
        for index, op in enumerate(operations):
            for tensor in _as_list(op.output):
                producer[id(tensor)] = index
        crossing = []
        for op in operations[start:]:
            for tensor in _as_list(op.input):
                if producer[id(tensor)] < start and all(tensor is not c for c in crossing):
                    crossing.append(tensor)
        bottom = keras.Model(base.input, crossing if len(crossing) > 1 else crossing[0], name=f"{base.name}_bottom")
        top = keras.Model(crossing if len(crossing) > 1 else crossing[0], base.output, name=f"{base.name}_top")
    except (AttributeError, KeyError, ValueError, IndexError) as err:  # shared layers: no single input/output
        raise CannotSplit(f"cannot cut {base.name} at {layer!r}: {err}") from None
    return Split(bottom, top, layer)
