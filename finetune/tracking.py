"""Experiment tracking: TensorBoard event files and MLflow runs, as Keras callbacks.

Example:
    >>> callbacks = tracking_callbacks("runs/flowers", tensorboard=True,
    ...                                mlflow_uri="sqlite:///mlflow.db", params=config.to_dict())  # doctest: +SKIP
    >>> result = fine_tune("flowers/", config, callbacks=callbacks)                               # doctest: +SKIP
    >>> log_final_metrics(callbacks, test_metrics)                                                # doctest: +SKIP

MLflow is an optional extra (``pip install mlflow``). Since MLflow 3 the plain
folder store (``file:`` URIs) is refused unless ``MLFLOW_ALLOW_FILE_STORE=true``;
``sqlite:///path/mlflow.db`` or an ``http://`` tracking server are the usual URIs.
"""

from __future__ import annotations

from ._compat import import_tensorflow_quietly

import_tensorflow_quietly()  # before Keras starts TensorFlow

import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import keras

from .errors import ConfigError

MLFLOW_HINT = "pip install mlflow"
TENSORBOARD_HINT = "pip install tensorboard"
MAX_PARAM_CHARS = 500


class TrackingError(ConfigError, RuntimeError):
    """Tracking asked for but not possible (e.g. MLflow not installed); still a RuntimeError, as before."""


class MLflowLogger(keras.callbacks.Callback):
    """Logs ``params`` once, at the first ``on_train_begin``, and every epoch's logs as metrics.

    One MLflow run spans every ``fit`` the callback is given to (both phases of
    :func:`finetune.fine_tune`, whose epochs are numbered on from phase 1), and
    stays open until :meth:`finish` (or :func:`log_final_metrics`) closes it.
    MLflow's fluent global state (``mlflow.active_run``) is left untouched.

    Example:
        >>> logger = MLflowLogger("sqlite:///mlflow.db", params={"lr": 1e-3})   # doctest: +SKIP
        >>> model.fit(x, y, epochs=3, callbacks=[logger]); logger.finish({"test_accuracy": 0.9})  # doctest: +SKIP
    """

    def __init__(self, tracking_uri: str, params: Mapping[str, Any] | None = None, *,
                 experiment: str = "finetune", run_name: str | None = None):
        super().__init__()
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as err:
            raise TrackingError(f"MLflow tracking needs mlflow ({err}): {MLFLOW_HINT}") from err
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.run_params = dict(params or {})
        self.experiment, self.run_name = experiment, run_name
        self.run_id: str | None = None

    def start(self) -> str:
        """Create the MLflow run (once) and log the params; return its id."""
        if self.run_id is None:
            from mlflow.entities import Param

            found = self.client.get_experiment_by_name(self.experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(self.experiment)
            self.run_id = self.client.create_run(experiment_id, run_name=self.run_name).info.run_id
            params = [Param(key, str(value)[:MAX_PARAM_CHARS]) for key, value in _flatten(self.run_params).items()]
            for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(self.run_id, params=params[start:start + 100])
        return self.run_id

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0) -> None:
        """Log the finite numbers of ``metrics`` (nested dicts flattened to ``a.b``)."""
        from mlflow.entities import Metric

        run_id = self.start()
        timestamp = _now_ms()
        rows = [Metric(key, float(value), timestamp, step) for key, value in _flatten(metrics).items()
                if _is_number(value) and math.isfinite(float(value))]
        for start in range(0, len(rows), 1000):
            self.client.log_batch(run_id, metrics=rows[start:start + 1000])

    def finish(self, metrics: Mapping[str, Any] | None = None, status: str = "FINISHED") -> str:
        """Log the final ``metrics`` (if any) and close the run; return its id."""
        run_id = self.start()
        if metrics:
            self.log_metrics(metrics)
        self.client.set_terminated(run_id, status=status)
        return run_id

    def on_train_begin(self, logs=None):
        self.start()

    def on_epoch_end(self, epoch, logs=None):
        self.log_metrics({key: value for key, value in (logs or {}).items() if key != "learning_rate"}, step=epoch)


def tracking_callbacks(run_dir: str | os.PathLike, tensorboard: bool = False, mlflow_uri: str | None = None,
                       params: Mapping[str, Any] | None = None, *, experiment: str = "finetune") -> list[keras.callbacks.Callback]:
    """The tracking callbacks asked for: none, TensorBoard, MLflow, or both.

    Args:
        run_dir: The run folder; TensorBoard writes to ``run_dir/tensorboard``.
        tensorboard: Write TensorBoard event files (``tensorboard --logdir run_dir/tensorboard``).
        mlflow_uri: An MLflow tracking URI; the run is named after ``run_dir``.
        params: Logged as MLflow params (e.g. ``config.to_dict()``).

    Raises:
        TrackingError: mlflow (for ``mlflow_uri``) or tensorboard (for ``tensorboard``) not installed.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     [type(c).__name__ for c in tracking_callbacks(run_dir, tensorboard=True)]
        ['TensorBoard']
    """
    callbacks: list[keras.callbacks.Callback] = []
    if tensorboard:
        try:
            import tensorboard as _  # noqa: F401  (tf.summary.scalar lives there)
        except ImportError as err:
            raise TrackingError(f"TensorBoard logging needs tensorboard ({err}): {TENSORBOARD_HINT}") from err
        log_dir = Path(run_dir) / "tensorboard"
        log_dir.mkdir(parents=True, exist_ok=True)
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False, profile_batch=0))
    if mlflow_uri:
        callbacks.append(MLflowLogger(mlflow_uri, params, experiment=experiment, run_name=Path(run_dir).name))
    return callbacks


def log_final_metrics(callbacks: Sequence[keras.callbacks.Callback], metrics: Mapping[str, Any] | None,
                      prefix: str = "test_") -> str | None:
    """Log the test ``metrics`` (e.g. :func:`finetune.evaluate_split`'s) to the MLflow run and close it.

    Scalars are logged as ``test_accuracy``, ``test_macro_f1``, ...; per-class
    figures as ``test_per_class.<class>.f1``. Returns the MLflow run id, or
    ``None`` when ``callbacks`` hold no :class:`MLflowLogger`.
    """
    for callback in callbacks:
        if isinstance(callback, MLflowLogger):
            kept = {f"{prefix}{key}": value for key, value in (metrics or {}).items()
                    if key not in ("confusion_matrix", "class_names")}
            return callback.finish(kept)
    return None


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = re.sub(r"[^\w\-. /]", "_", f"{prefix}{key}")  # the characters MLflow accepts in a key
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, (str, bytes, bool))


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
