"""Walking the layers of a model, nested models included."""

from __future__ import annotations

from typing import Iterator

import keras


def last_dense(model: keras.layers.Layer) -> keras.layers.Dense | None:
    """The last ``Dense`` layer of ``model`` (its output layer in a classifier), nested models included."""
    found = [layer for layer in walk_layers(model) if isinstance(layer, keras.layers.Dense)]
    return found[-1] if found else None


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
