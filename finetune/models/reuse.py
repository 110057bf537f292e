"""Reuse the lower layers of a trained Keras model for a new task, safely.

`keras.Sequential(model_a.layers[:-1])` looks like a copy but SHARES the
layers: training the new model silently changes the old one. `reuse` always
works on a clone with copied weights, so the source model never changes.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import keras
from .._compat import unsafe_deserialization
from ..errors import ConfigError

HEAD_NAME = "reuse_head"


def reuse(
    model_or_path: keras.Model | str | os.PathLike,
    drop_top: int = 1,
    freeze: bool = True,
    num_outputs: int | None = None,
    activation: str | None = None,
    head: keras.layers.Layer | Sequence[keras.layers.Layer] | None = None,
    *,
    unsafe: bool = False,
    name: str | None = None,
) -> keras.Model:
    """Build a new model from a copy of another model's lower layers.

    The source model is cloned and its weights copied, the last `drop_top`
    layers are dropped and a new output layer is put on top. The source model
    is never modified, now or when the new model trains.

    Args:
        model_or_path: a Sequential or functional model, or the path of a
            `.keras` or `.h5` file holding one.
        drop_top: how many layers to drop from the top (0 keeps them all).
        freeze: make the reused layers non-trainable (the new head always
            trains). Unfreeze later with `layer.trainable = True` for all but
            the head, then compile again.
        num_outputs: units of the new output layer: 1 gives a sigmoid unit
            (binary task), more give a softmax. With neither `num_outputs`
            nor `head`, no layer is added (a feature extractor).
        activation: overrides the output activation chosen from `num_outputs`.
        head: a layer, or a list of layers applied in order, to put on top
            instead of the `num_outputs` Dense layer. Pass fresh layers.
        unsafe: allow loading files whose model runs arbitrary Python code
            (Lambda layers). Only for files you trust; it warns.
        name: name of the new model (default: `<source name>_reused`).

    Returns:
        A new model; a `keras.Sequential` when the source is Sequential.
        Compile it before training.

    Raises:
        ValueError: when `drop_top` is negative or leaves no layer, when the
            layer left on top is not the only way to the dropped ones, or
            when a file holds Lambda layers and `unsafe` is False.

    Example:

    >>> import keras, numpy as np
    >>> model_a = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
    ...                             keras.layers.Dense(5, activation="softmax")])
    >>> x_b, y_b = np.random.default_rng(0).random((32, 8)), np.arange(32) % 2
    >>> model_b_on_a = reuse(model_a, num_outputs=1)   # drop softmax, add sigmoid
    >>> model_b_on_a.compile(loss="binary_crossentropy", optimizer="adam")
    >>> history = model_b_on_a.fit(x_b, y_b, epochs=4, verbose=0)   # model_a is untouched
    >>> for layer in model_b_on_a.layers[:-1]:
    ...     layer.trainable = True
    >>> model_b_on_a.output_shape
    (None, 1)
    """
    source = _load(model_or_path, unsafe) if isinstance(model_or_path, (str, os.PathLike)) else model_or_path
    if not isinstance(source, keras.Model):
        raise TypeError(f"Expected a keras.Model or a file path, got {type(source).__name__}.")
    if not source.built or not getattr(source, "inputs", None):
        raise ConfigError("The source model has no known input shape: build it (or call it once) first.")
    clone = _clone_with_weights(source)
    body_layers = [layer for layer in clone.layers if not isinstance(layer, keras.layers.InputLayer)]
    if drop_top < 0 or drop_top >= len(body_layers):
        raise ConfigError(
            f"drop_top={drop_top} but the model has {len(body_layers)} layers "
            f"(not counting its Input): drop_top must be in [0, {len(body_layers) - 1}]."
        )
    kept = body_layers[: len(body_layers) - drop_top]
    for layer in kept:
        layer.trainable = not freeze
    head_layers = _head_layers(head, num_outputs, activation, taken={layer.name for layer in kept})
    name = name or f"{source.name}_reused"

    if isinstance(source, keras.Sequential):
        input_shape = tuple(clone.inputs[0].shape[1:])
        return keras.Sequential([keras.Input(input_shape), *kept, *head_layers], name=name)

    features = _features(clone, kept, drop_top)
    outputs = features
    for layer in head_layers:
        outputs = layer(outputs)
    return keras.Model(clone.inputs, outputs, name=name)


def _load(path: str | os.PathLike, unsafe: bool) -> keras.Model:
    path = Path(path)
    if unsafe:
        warnings.warn(
            f"Loading {path} with unsafe=True: Lambda layers in it can run arbitrary code.",
            stacklevel=3,
        )
    elif path.suffix in (".h5", ".hdf5") and _h5_has_lambda(path):
        # Keras checks `safe_mode` for .keras files only; legacy .h5 gets the same rule here.
        raise ConfigError(f"{path} holds a Lambda layer (arbitrary code); pass unsafe=True if you trust it.")
    return keras.models.load_model(path, compile=False, safe_mode=not unsafe)


def _h5_has_lambda(path: Path) -> bool:
    import h5py

    with h5py.File(path, "r") as f:
        config = f.attrs.get("model_config")
    if config is None:
        return False
    config = config.decode() if isinstance(config, bytes) else config
    return '"Lambda"' in json.dumps(json.loads(config))


def _clone_with_weights(model: keras.Model) -> keras.Model:
    # The model is already in memory, so re-creating its Lambda layers runs no new code.
    try:
        with unsafe_deserialization():
            clone = keras.models.clone_model(model)
    except (ValueError, TypeError, NotImplementedError) as error:
        raise TypeError(
            f"Cannot clone {type(model).__name__}: reuse needs a Sequential or functional model."
        ) from error
    clone.set_weights(model.get_weights())
    return clone


def _head_layers(
    head: keras.layers.Layer | Sequence[keras.layers.Layer] | None,
    num_outputs: int | None,
    activation: str | None,
    taken: set[str],
) -> list[keras.layers.Layer]:
    if head is not None:
        if num_outputs is not None:
            raise ConfigError("Pass either `head` or `num_outputs`, not both.")
        return [head] if isinstance(head, keras.layers.Layer) else list(head)
    if num_outputs is None:
        return []
    if num_outputs < 1:
        raise ConfigError(f"num_outputs must be >= 1, got {num_outputs}.")
    activation = activation or ("sigmoid" if num_outputs == 1 else "softmax")
    name, suffix = HEAD_NAME, 1
    while name in taken:
        name, suffix = f"{HEAD_NAME}_{suffix}", suffix + 1
    return [keras.layers.Dense(num_outputs, activation=activation, name=name)]


def _features(clone: keras.Model, kept: list[keras.layers.Layer], drop_top: int):
    if drop_top == 0:
        if len(clone.outputs) != 1:
            raise ConfigError("reuse needs a model with a single output.")
        return clone.outputs[0]
    top = kept[-1]
    try:
        features = top.output
    except (AttributeError, ValueError) as error:
        raise ConfigError(f"Layer {top.name!r} has no single output to build on.") from error
    body = keras.Model(clone.inputs, features)
    used = {layer.name for layer in body.layers}
    cut_off = [layer.name for layer in kept if layer.name not in used]
    if cut_off:
        raise ConfigError(
            f"Dropping {drop_top} layer(s) leaves {top.name!r} on top, which does not use "
            f"layers {cut_off}: those only reach the output through the dropped layers."
        )
    return features
