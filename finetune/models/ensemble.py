"""Several trained classifiers as one ``keras.Model`` that averages their probabilities."""

from __future__ import annotations

from typing import Sequence

import keras

from ..errors import ConfigError


def average_models(models: Sequence[keras.Model], name: str = "ensemble") -> keras.Model:
    """One model whose output is the mean of ``models``' outputs on the same input (stock layers only).

    Every member must take the same input shape and give the same output shape.

    Example:
        >>> import numpy as np
        >>> members = [keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        ...            for _ in range(2)]
        >>> x = np.ones((1, 4))
        >>> both = average_models(members)
        >>> bool(np.allclose(both.predict(x, verbose=0), (members[0](x) + members[1](x)) / 2, atol=1e-6))
        True
    """
    if len(models) < 2:
        raise ConfigError(f"an ensemble needs at least 2 models, got {len(models)}")
    shapes = {tuple(m.inputs[0].shape[1:]) for m in models}
    outputs = {tuple(m.outputs[0].shape[1:]) for m in models}
    if len(shapes) > 1 or len(outputs) > 1:
        raise ConfigError(f"ensemble members differ in input shapes {sorted(shapes)} or output shapes {sorted(outputs)}")
    # Each member renamed: Keras needs unique layer names, and every run's model has the same name.
    if _takes_dict(models[0]):  # text models: token batches by name
        inputs = {k: keras.Input(t.shape[1:], dtype=t.dtype, name=k) for k, t in models[0].input.items()}
        members = [keras.Model(m.input, m.outputs[0], name=f"member_{i}") for i, m in enumerate(models)]
        return keras.Model(inputs, keras.layers.Average(name="average")([m(inputs) for m in members]), name=name)
    inputs = keras.Input(models[0].inputs[0].shape[1:], name="image")
    members = [keras.Model(m.inputs[0], m.outputs[0], name=f"member_{i}") for i, m in enumerate(models)]
    return keras.Model(inputs, keras.layers.Average(name="average")([m(inputs) for m in members]), name=name)


def _takes_dict(model: keras.Model) -> bool:
    try:
        return isinstance(model.input, dict)
    except AttributeError:  # a Sequential never called has no input yet: it takes a tensor
        return False
