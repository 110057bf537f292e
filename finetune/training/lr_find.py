"""The learning-rate finder (Smith 2015, as popularised by fastai).

Train for a few hundred steps while the learning rate grows exponentially from
tiny to huge, record the (smoothed) loss, and pick the rate where the loss
falls fastest. The model comes back exactly as it was::

    result = lr_find(model, train_ds)
    print(result.suggestion)
    result.plot("lr_find.png")
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..errors import ConfigError
from .optim import make_optimizer

__all__ = ["LRFindResult", "lr_find"]


@dataclass
class LRFindResult:
    """The outcome of :func:`lr_find`.

    Attributes:
        lrs: the learning rate of each step done.
        losses: the loss after each step, smoothed (bias-corrected EMA, beta 0.98).
        raw_losses: the same, unsmoothed.
        suggestion: the rate at the steepest descent of the smoothed loss
            (most negative d loss / d log lr), searched before the minimum.
        min_loss_lr: the rate of the lowest smoothed loss, divided by 10
            (fastai's other rule of thumb).
    """

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float] = field(default_factory=list)
    suggestion: float = float("nan")
    min_loss_lr: float = float("nan")

    def plot(self, path: str | Path) -> Path:
        """Write a PNG of the smoothed loss against the learning rate (log x).

        Example:

        >>> import tempfile, os
        >>> result = LRFindResult([1e-3, 1e-2, 1e-1], [1.0, 0.5, 2.0], suggestion=1e-2)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     result.plot(os.path.join(folder, "lr_find.png")).name
        'lr_find.png'
        """
        from matplotlib.figure import Figure


        path = Path(path)
        fig = Figure(figsize=(7, 4.5), dpi=110)
        ax = fig.subplots()
        ax.semilogx(self.lrs, self.losses, color="tab:blue", label="smoothed loss")
        if self.raw_losses:
            ax.semilogx(self.lrs, self.raw_losses, color="tab:blue", alpha=0.25, lw=0.8,
                        label="raw loss")
        if math.isfinite(self.suggestion):
            ax.axvline(self.suggestion, color="tab:red", ls="--",
                       label=f"suggestion (steepest): {self.suggestion:.2g}")
            ax.plot([self.suggestion], [np.interp(np.log(self.suggestion), np.log(self.lrs),
                                                  self.losses)], "o", color="tab:red")
        if math.isfinite(self.min_loss_lr):
            ax.axvline(self.min_loss_lr, color="tab:green", ls=":",
                       label=f"min loss / 10: {self.min_loss_lr:.2g}")
        finite = np.asarray(self.losses)[np.isfinite(self.losses)]
        if finite.size:
            low, start = finite.min(), finite[: max(1, finite.size // 10)].mean()
            top = min(finite.max(), start + 1.5 * (start - low) + 1e-8)
            ax.set_ylim(low - 0.05 * (top - low) - 1e-8, top + 0.05 * (top - low))
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("training loss")
        ax.set_title("Learning-rate finder")
        ax.grid(True, which="major", alpha=0.35)
        ax.grid(True, which="minor", axis="x", alpha=0.1)
        ax.legend(loc="best")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        return path


def _batches(data: Any, batch_size: int) -> tf.data.Dataset:
    if isinstance(data, tf.data.Dataset):
        return data.repeat()
    x, y = data
    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(
        len(x), seed=0).batch(batch_size).repeat()


_BETA = 0.98


def _smooth(values: list[float], beta: float = _BETA) -> list[float]:
    avg, out = 0.0, []
    for i, v in enumerate(values, start=1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**i))
    return out


def _suggest(lrs: list[float], losses: list[float]) -> tuple[float, float]:
    finite = np.isfinite(losses)
    n = len(losses) if finite.all() else int(np.argmin(finite))
    lrs, losses = lrs[:n], losses[:n]
    if n < 3:
        return float("nan"), float("nan")
    losses_arr = np.asarray(losses)
    best = int(np.nanargmin(losses_arr))
    slopes = np.gradient(losses_arr, np.log10(lrs))
    skip = len(lrs) // 10  # the first points carry the EMA's warm-up noise
    window = slopes[skip:best + 1] if best > skip else slopes[: best + 1]
    offset = skip if best > skip else 0
    steepest = offset + int(np.nanargmin(window)) if window.size else best
    return float(lrs[steepest]), float(lrs[best] / 10)


def lr_find(
    model: keras.Model,
    data: tf.data.Dataset | tuple[np.ndarray, np.ndarray],
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 200,
    loss: Any = None,
    optimizer: str | keras.optimizers.Optimizer = "adam",
    batch_size: int = 32,
    diverge: float = 4.0,
) -> LRFindResult:
    """Sweep the learning rate exponentially and record the loss.

    ``data`` is a ``tf.data.Dataset`` of ``(x, y)`` batches (repeated as needed)
    or ``(x, y)`` numpy arrays (shuffled, batched by ``batch_size``). ``loss``
    defaults to the model's compiled loss; ``model.losses`` (regularization)
    are added. ``optimizer`` is a name of :data:`finetune.choices.OPTIMIZERS`
    (a fresh one is used) or an instance, whose variables and learning rate are
    restored afterwards. The sweep stops early once the smoothed loss exceeds
    ``diverge`` times its best. All model variables (weights, BatchNorm
    statistics) are restored bit for bit.

    Example:

    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> x, y = np.random.rand(64, 3), np.random.rand(64, 1)
    >>> result = lr_find(model, (x, y), loss="mse", steps=50)
    >>> 1e-7 <= result.suggestion <= 10
    True
    """
    loss_fn = keras.losses.get(loss if loss is not None else getattr(model, "loss", None))
    if loss_fn is None:
        raise ConfigError("Pass a `loss`, or compile the model first.")
    own_optimizer = isinstance(optimizer, str)
    opt = make_optimizer(optimizer, start_lr) if own_optimizer else optimizer
    if not opt.built:
        opt.build(model.trainable_variables)
    saved_model = [v.numpy() for v in model.variables]
    saved_opt = None if own_optimizer else ([v.numpy() for v in opt.variables],
                                            float(opt.learning_rate))

    @tf.function(reduce_retracing=True)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            value = tf.reduce_mean(loss_fn(y, y_pred))
            if model.losses:
                value += tf.add_n(model.losses)
        grads = tape.gradient(value, model.trainable_variables)
        opt.apply(grads, model.trainable_variables)
        return value

    ratio = (end_lr / start_lr) ** (1 / max(steps - 1, 1))
    lrs: list[float] = []
    raw: list[float] = []
    best, average, beta = math.inf, 0.0, _BETA
    try:
        for i, (x, y) in enumerate(_batches(data, batch_size).take(steps)):
            lr = start_lr * ratio**i
            opt.learning_rate = lr
            value = float(train_step(x, y))
            lrs.append(lr)
            raw.append(value)
            average = beta * average + (1 - beta) * value
            smoothed = average / (1 - beta ** (i + 1))
            if not math.isfinite(smoothed) or smoothed > diverge * best:
                break
            best = min(best, smoothed)
    finally:
        for var, value in zip(model.variables, saved_model):
            var.assign(value)
        if saved_opt is not None:
            for var, value in zip(opt.variables, saved_opt[0]):
                var.assign(value)
            opt.learning_rate = saved_opt[1]
    losses = _smooth(raw)
    suggestion, min_loss_lr = _suggest(lrs, losses)
    return LRFindResult(lrs=lrs, losses=losses, raw_losses=raw,
                        suggestion=suggestion, min_loss_lr=min_loss_lr)
