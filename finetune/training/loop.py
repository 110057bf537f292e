"""`Trainer`: an explicit `tf.GradientTape` training loop that behaves like `model.fit`.

Same callbacks protocol, same logs (``loss``, metrics, ``val_*``), same
`keras.callbacks.History`, same numbers: downstream code cannot tell the two
apart. What it adds: gradient clipping by global norm, gradient accumulation
over micro-batches, and a loop that runs under any `tf.distribute.Strategy`
(``MultiWorkerMirroredStrategy`` included, where ``model.fit`` fails on Keras 3).

    trainer = Trainer(model, "adam", "sparse_categorical_crossentropy",
                      metrics=["accuracy"], clipnorm=1.0, accumulate=4)
    history = trainer.fit(train_ds, epochs=10, validation_data=val_ds,
                          callbacks=[keras.callbacks.EarlyStopping(patience=2)])

Loss and metrics are the model's compiled ones (the Trainer compiles the model
when given a ``loss``), so regularization losses (``model.losses``) are added
exactly as ``fit`` adds them and losses are scaled per replica like ``fit``
(the equivalent of ``tf.nn.compute_average_loss``).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from .._compat import build_for, track_loss
from ..errors import ConfigError

__all__ = ["Trainer"]

Batch = Any


def _as_dataset(data: Any, batch_size: int) -> tf.data.Dataset:
    if isinstance(data, tf.data.Dataset):
        return data
    if isinstance(data, (tuple, list)) and all(isinstance(a, np.ndarray) for a in data):
        return tf.data.Dataset.from_tensor_slices(tuple(data)).batch(batch_size)
    raise TypeError("Expected a tf.data.Dataset of (x, y[, sample_weight]) batches "
                    f"or a tuple of numpy arrays, got {type(data).__name__}.")


def _pythonify(logs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in logs.items():
        value = np.asarray(value)
        out[key] = value.item() if value.ndim == 0 else value
    return out


def _num_batches(dataset: tf.data.Dataset) -> int | None:
    n = int(dataset.cardinality())
    return n if n >= 0 else None


class Trainer:
    """Train a Keras model with a hand-written, `tf.function`-compiled loop.

    Args:
        model: the model. If it is compiled and ``loss`` is None, its compiled
            loss, metrics and optimizer are used.
        optimizer: an optimizer instance or Keras name; replaces the model's.
        loss: a loss (instance, function or Keras name); when given, the model
            is (re)compiled with it and ``metrics``.
        metrics: metrics as for ``model.compile``.
        clipnorm: clip the gradients to this global norm before each update.
        accumulate: average the gradients of this many consecutive batches and
            apply them in one update (same result as a batch this many times
            larger, less memory). A last incomplete group is applied at the
            end of each epoch with the average of what it holds.

    Example:

    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> trainer = Trainer(model, "sgd", "mse")
    >>> x, y = np.ones((8, 3), "float32"), np.ones((8, 1), "float32")
    >>> history = trainer.fit((x, y), epochs=2, verbose=0)
    >>> sorted(history.history)
    ['loss']
    """

    def __init__(
        self,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer | str | None = None,
        loss: Any = None,
        metrics: Sequence[Any] | None = None,
        *,
        clipnorm: float | None = None,
        accumulate: int = 1,
    ):
        if accumulate < 1:
            raise ConfigError(f"accumulate must be >= 1, got {accumulate}.")
        compiled = getattr(model, "compiled", False)
        if loss is not None or not compiled:
            if loss is None:
                raise ConfigError("The model is not compiled: pass a `loss` (and an `optimizer`).")
            model.compile(optimizer=optimizer or getattr(model, "optimizer", None) or "rmsprop",
                          loss=loss, metrics=metrics)
        elif optimizer is not None:
            model.optimizer = keras.optimizers.get(optimizer)
        elif model.optimizer is None:
            raise ConfigError("The model is compiled without an optimizer: pass one.")
        self.model = model
        self.clipnorm = clipnorm
        self.accumulate = int(accumulate)
        self.strategy = tf.distribute.get_strategy()
        self._distributed = tf.distribute.has_strategy()
        if self._distributed and self.accumulate > 1:
            raise NotImplementedError("Gradient accumulation under a tf.distribute.Strategy.")
        self._accumulators: list[tf.Variable] | None = None
        self._functions: dict[str, Callable] = {}
        self._traced_for: tuple[int, ...] = ()

    @property
    def optimizer(self) -> keras.optimizers.Optimizer:
        """The optimizer (the model's)."""
        return self.model.optimizer

    # ---- steps (run inside tf.function, per replica) -------------------------

    def _forward(self, batch: Batch, training: bool) -> tuple[Any, Any, Any, Any, tf.Tensor]:
        model = self.model
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
        y_pred = model(x, training=training)
        loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                  training=training)
        # Logged loss is per replica-unscaled, weighted by batch size, as in fit.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        batch_size = tf.shape(tf.nest.flatten(x)[0])[0]
        track_loss(model, loss * replicas, batch_size)
        return x, y, y_pred, sample_weight, loss

    def _gradients(self, batch: Batch) -> tuple[list[tf.Tensor], tuple]:
        with tf.GradientTape() as tape:
            x, y, y_pred, sample_weight, loss = self._forward(batch, training=True)
            loss = self.optimizer.scale_loss(loss)
        grads = tape.gradient(loss, self.model.trainable_variables)
        return grads, (x, y, y_pred, sample_weight)

    def _apply(self, grads: list[tf.Tensor]) -> None:
        if self.clipnorm is not None:
            grads, _ = tf.clip_by_global_norm(grads, self.clipnorm)
        self.optimizer.apply(grads, self.model.trainable_variables)

    def _train_step(self, batch: Batch) -> dict[str, tf.Tensor]:
        grads, (x, y, y_pred, sample_weight) = self._gradients(batch)
        self._apply(grads)
        return self.model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _accumulate_step(self, batch: Batch) -> dict[str, tf.Tensor]:
        grads, (x, y, y_pred, sample_weight) = self._gradients(batch)
        for acc, g in zip(self._accumulators, grads):
            acc.assign_add(tf.convert_to_tensor(g))
        return self.model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _apply_accumulated(self, count: tf.Tensor) -> None:
        self._apply([acc / tf.cast(count, acc.dtype) for acc in self._accumulators])
        for acc in self._accumulators:
            acc.assign(tf.zeros_like(acc))

    def _test_step(self, batch: Batch) -> dict[str, tf.Tensor]:
        x, y, y_pred, sample_weight, _ = self._forward(batch, training=False)
        return self.model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    # ---- compiled functions ----------------------------------------------

    def _compile_step(self, step: Callable[[Batch], dict]) -> Callable:
        strategy = self.strategy

        def run(data):
            # An iterator when the number of batches is known: no per-step Python
            # iteration. Else a batch, drawn in Python, since a graph-side
            # `next` past the end still runs the ops that don't need the data.
            is_iterator = isinstance(data, (tf.data.Iterator, tf.distribute.DistributedIterator))
            batch = next(data) if is_iterator else data
            if not self._distributed:
                return step(batch)
            logs = strategy.run(step, args=(batch,))
            # Metric results are synchronised across replicas: take the first.
            return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], logs)

        return tf.function(run, reduce_retracing=True, jit_compile=self.model.jit_compile)

    def _function(self, name: str) -> Callable:
        if name not in self._functions:
            if name == "apply":
                fn = tf.function(self._apply_accumulated, jit_compile=self.model.jit_compile)
            else:
                fn = self._compile_step({"train": self._train_step, "accumulate": self._accumulate_step,
                                        "test": self._test_step}[name])
            self._functions[name] = fn
        return self._functions[name]

    def _build(self, dataset: tf.data.Dataset) -> None:
        model = self.model
        build_for(model, dataset.element_spec)
        trainable = tuple(id(v) for v in model.trainable_variables)
        if trainable != self._traced_for:  # (un)frozen layers: retrace, new accumulators
            self._functions.clear()
            self._accumulators = None
            self._traced_for = trainable
        if not self.optimizer.built:
            with self.strategy.scope():
                self.optimizer.build(model.trainable_variables)
        if self.accumulate > 1 and self._accumulators is None:
            self._accumulators = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False)
                                  for v in model.trainable_variables]

    def _feed(self, dataset: tf.data.Dataset) -> Iterator[tuple[int, Any]]:
        """(step, what to pass to a step function) for one pass over ``dataset``."""
        num_batches = _num_batches(dataset)
        if self._distributed:
            dataset = self.strategy.experimental_distribute_dataset(dataset)
        if num_batches is None:
            return enumerate(dataset)
        iterator = iter(dataset)
        return ((step, iterator) for step in range(num_batches))

    # ---- public loops ---------------------------------------------------------

    def fit(
        self,
        train_data: tf.data.Dataset | tuple[np.ndarray, ...],
        epochs: int = 1,
        *,
        validation_data: tf.data.Dataset | tuple[np.ndarray, ...] | None = None,
        callbacks: Sequence[keras.callbacks.Callback] | keras.callbacks.CallbackList | None = None,
        initial_epoch: int = 0,
        verbose: int | str = 1,
        batch_size: int = 32,
    ) -> keras.callbacks.History:
        """Train for ``epochs`` epochs, like ``model.fit``, and return its History.

        ``train_data`` is a finite ``tf.data.Dataset`` of ``(x, y)`` or
        ``(x, y, sample_weight)`` batches (one pass = one epoch) or a tuple of
        numpy arrays, batched by ``batch_size`` in order (no shuffling).
        Callbacks get the model set and the same calls and logs as in
        ``fit``; ``model.stop_training`` ends training after the current batch.

        Example:

        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> trainer = Trainer(model, "adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        >>> ds = tf.data.Dataset.from_tensor_slices((np.ones((8, 3)), np.zeros(8))).batch(4)
        >>> logs = trainer.fit(ds, epochs=1, validation_data=ds, verbose=0).history
        >>> sorted(logs)
        ['accuracy', 'loss', 'val_accuracy', 'val_loss']
        """
        model = self.model
        dataset = _as_dataset(train_data, batch_size)
        val_dataset = None if validation_data is None else _as_dataset(validation_data, batch_size)
        self._build(dataset)
        num_batches = _num_batches(dataset)
        if not isinstance(callbacks, keras.callbacks.CallbackList):
            callbacks = keras.callbacks.CallbackList(
                callbacks, add_history=True, add_progbar=verbose != 0, verbose=verbose,
                epochs=epochs, steps=num_batches, model=model)
        step_fn = self._function("train" if self.accumulate == 1 else "accumulate")

        model.stop_training = False
        callbacks.on_train_begin()
        logs: dict = {}
        training_logs = None
        for epoch in range(initial_epoch, epochs):
            model.reset_metrics()
            callbacks.on_epoch_begin(epoch)
            pending = 0
            for step, data in self._feed(dataset):
                callbacks.on_train_batch_begin(step)
                logs = step_fn(data)
                pending += 1
                if self.accumulate > 1 and pending == self.accumulate:
                    self._function("apply")(tf.constant(pending))
                    pending = 0
                callbacks.on_train_batch_end(step, logs)
                if model.stop_training:
                    break
            if self.accumulate > 1 and pending:
                self._function("apply")(tf.constant(pending))
            epoch_logs = _pythonify(model.get_metrics_result())
            if val_dataset is not None:
                val_logs = self.evaluate(val_dataset, callbacks=callbacks, verbose=0)
                epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
            callbacks.on_epoch_end(epoch, epoch_logs)
            training_logs = epoch_logs
            if model.stop_training:
                break
        if epochs > initial_epoch:
            self.optimizer.finalize_variable_values(model.trainable_weights)
        callbacks.on_train_end(logs=training_logs)
        return model.history

    def evaluate(
        self,
        data: tf.data.Dataset | tuple[np.ndarray, ...],
        *,
        callbacks: Sequence[keras.callbacks.Callback] | keras.callbacks.CallbackList | None = None,
        verbose: int | str = 0,
        batch_size: int = 32,
    ) -> dict[str, float]:
        """Loss and metrics over ``data``, like ``model.evaluate(..., return_dict=True)``.

        Example:

        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        >>> logs = Trainer(model, "sgd", "mse").evaluate((np.ones((4, 3)), np.ones((4, 1))))
        >>> sorted(logs)
        ['loss']
        """
        model = self.model
        dataset = _as_dataset(data, batch_size)
        self._build(dataset)
        num_batches = _num_batches(dataset)
        if not isinstance(callbacks, keras.callbacks.CallbackList):
            callbacks = keras.callbacks.CallbackList(
                callbacks, add_progbar=verbose != 0, verbose=verbose, epochs=1,
                steps=num_batches, model=model)
        test_fn = self._function("test")
        model.reset_metrics()
        callbacks.on_test_begin()
        for step, data in self._feed(dataset):
            callbacks.on_test_batch_begin(step)
            logs = test_fn(data)
            callbacks.on_test_batch_end(step, logs)
        logs = _pythonify(model.get_metrics_result())
        callbacks.on_test_end(logs)
        return logs
