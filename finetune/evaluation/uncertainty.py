"""Monte Carlo dropout predictions and calibration error.

MC dropout (Gal & Ghahramani, 2016) keeps dropout on at prediction time and
averages many stochastic forward passes. Calling the model with
`training=True` would do that, but it would also put BatchNormalization (and
any other training-aware layer) in training mode, changing its outputs and,
in Keras, its moving statistics. `mc_predict` instead predicts with a clone in
which only the dropout-type layers are always on.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from ..errors import ConfigError
from ..models.graph import walk_layers
from .predict import predict_batches

DROPOUT_TYPES: tuple[type, ...] = (
    keras.layers.Dropout,  # also SpatialDropout1D/2D/3D
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
)


@dataclass(frozen=True)
class MCResult:
    """Summary of `samples` stochastic predictions for each input.

    Attributes:
        mean: mean predicted probabilities, shaped like the model's output.
        std: their standard deviation over the samples.
        entropy: predictive entropy of `mean` in nats, shape `(n,)`
            (binary entropy for a single sigmoid unit).
        samples: every prediction, shape `(samples, *mean.shape)`.
    """

    mean: np.ndarray
    std: np.ndarray
    entropy: np.ndarray
    samples: np.ndarray

    @property
    def predicted_class(self) -> np.ndarray:
        """Class indices: `mean > 0.5` for one sigmoid unit, else argmax."""
        if self.mean.shape[-1] == 1:
            return (self.mean[..., 0] > 0.5).astype(np.int64)
        return self.mean.argmax(axis=-1)


class AlwaysOnDropout(keras.layers.Layer):
    """Wraps a dropout-type layer so that it drops at inference too."""

    def __init__(self, layer: keras.layers.Layer, **kwargs):
        super().__init__(name=kwargs.pop("name", f"mc_{layer.name}"), **kwargs)
        self.layer = layer

    def call(self, inputs, training=None):
        return self.layer(inputs, training=True)

    def compute_output_shape(self, input_shape):
        return input_shape


def has_dropout(model: keras.Model) -> bool:
    """Whether `model` (or a model nested in it) holds a dropout-type layer."""
    return any(isinstance(layer, DROPOUT_TYPES) for layer in walk_layers(model))


def mc_dropout_model(model: keras.Model, seed: int | None = None) -> keras.Model:
    """Clone `model` with its dropout-type layers always on, other layers in inference mode.

    The clone has copies of the weights, so nothing done with it changes
    `model`.

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.5),
    ...                           keras.layers.Dense(3, activation="softmax")])
    >>> x = np.ones((2, 4), "float32")
    >>> mc_model = mc_dropout_model(model, seed=0)
    >>> samples = [mc_model(x, training=False) for _ in range(30)]
    >>> len(samples), tuple(samples[0].shape)
    (30, (2, 3))
    """
    counter = iter(range(1 << 30))

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if isinstance(layer, DROPOUT_TYPES):
            if "seed" in config:
                config["seed"] = None if seed is None else seed + next(counter)
            return AlwaysOnDropout(type(layer).from_config(config))
        return type(layer).from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    clone.set_weights(model.get_weights())
    return clone


def mc_predict(
    model: keras.Model,
    x: np.ndarray,
    samples: int = 30,
    seed: int | None = None,
    batch_size: int = 256,
) -> MCResult:
    """Predict with Monte Carlo dropout.

    Runs `samples` forward passes with dropout on and every other layer
    (BatchNormalization included) in inference mode. The model's outputs must
    be probabilities: one sigmoid unit (binary) or a softmax.

    Args:
        model: a Sequential or functional model; it is not modified.
        x: the inputs.
        samples: number of stochastic forward passes.
        seed: makes the dropout masks, hence the result, reproducible.
        batch_size: prediction batch size.

    Returns:
        An `MCResult`. Without dropout layers all samples equal
        `model.predict(x)`.

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.5),
    ...                           keras.layers.Dense(3, activation="softmax")])
    >>> x_test, y_test = np.random.default_rng(0).random((20, 4)), np.zeros(20, int)
    >>> result = mc_predict(model, x_test, samples=30, seed=0)
    >>> result.samples.shape, result.mean.shape
    ((30, 20, 3), (20, 3))
    >>> accuracy = (result.predicted_class == y_test).mean()
    >>> most_uncertain = result.entropy.argsort()[-10:]
    """
    if samples < 1:
        raise ConfigError(f"samples must be >= 1, got {samples}.")
    if has_dropout(model):
        predictor, passes = mc_dropout_model(model, seed=seed), samples
    else:
        predictor, passes = model, 1  # deterministic: one pass stands for all
    draws = np.stack(
        [predict_batches(predictor, x, batch_size=batch_size) for _ in range(passes)]
    ).astype(np.float64)
    draws = np.repeat(draws, samples // passes, axis=0)
    mean = draws.mean(axis=0)
    return MCResult(mean=mean, std=draws.std(axis=0), entropy=predictive_entropy(mean), samples=draws)


def predictive_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each row of probabilities; one column means binary."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 1 or probs.shape[-1] == 1:
        p = probs.reshape(len(probs))
        probs = np.stack([1 - p, p], axis=-1)
    return -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(axis=-1)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of predicted probabilities.

    The predictions are grouped into `bins` equal-width bins of confidence
    (the probability of the predicted class); ECE is the average gap between
    confidence and accuracy, weighted by bin size. 0 is perfectly calibrated.

    Args:
        probs: `(n,)` or `(n, 1)` probabilities of the positive class, or
            `(n, k)` class probabilities.
        labels: `(n,)` true labels (0/1 for binary, class indices otherwise).
        bins: number of confidence bins over [0, 1].

    Example:

    >>> round(expected_calibration_error(np.array([0.9, 0.2, 0.6]), np.array([1, 0, 0])), 3)
    0.3
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if probs.ndim == 1 or probs.shape[-1] == 1:
        positive = probs.reshape(-1)
        predicted = (positive > 0.5).astype(np.int64)
        confidence = np.where(predicted == 1, positive, 1 - positive)
    else:
        predicted = probs.argmax(axis=-1)
        confidence = probs.max(axis=-1)
    if len(labels) != len(predicted):
        raise ValueError(f"{len(predicted)} predictions but {len(labels)} labels.")
    correct = predicted == labels
    # Bin i holds confidences in (i/bins, (i+1)/bins]; confidence 0 joins bin 0.
    bin_index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = bin_index == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)
