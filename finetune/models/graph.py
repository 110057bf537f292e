"""Walking the layers of a model, nested models included."""

from __future__ import annotations

from typing import Iterator

import keras


def walk_layers(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """``layer``'s sub-layers, depth first, through nested models and ``Sequential`` stacks.

    Example:
        >>> inner = keras.Sequential([keras.layers.Dense(2), keras.layers.Dropout(0.1)])
        >>> outer = keras.Sequential([keras.Input((3,)), inner, keras.layers.Dense(1)])
        >>> [type(l).__name__ for l in walk_layers(outer)]
        ['Sequential', 'Dense', 'Dropout', 'Dense']
    """
    for child in getattr(layer, "layers", []):
        yield child
        yield from walk_layers(child)
