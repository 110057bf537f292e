"""TensorBoard event files and MLflow runs from the tracking callbacks."""

from __future__ import annotations

import sys

import keras
import numpy as np
import pytest

from finetune.tracking import MLflowLogger, TrackingError, log_final_metrics, tracking_callbacks


def _fit_two_phases(callbacks):
    """Two fits like fine_tune's phases: epochs 0-1 then 2-3."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = np.random.default_rng(0).normal(size=(16, 4)).astype("float32"), np.arange(16) % 2
    model.fit(x, y, epochs=2, validation_data=(x, y), callbacks=callbacks, verbose=0)
    model.fit(x, y, initial_epoch=2, epochs=4, validation_data=(x, y), callbacks=callbacks, verbose=0)


def test_no_tracking_asked_gives_no_callbacks(tmp_path):
    assert tracking_callbacks(tmp_path) == []
    assert log_final_metrics([], {"accuracy": 1.0}) is None


def test_tensorboard_writes_event_files(tmp_path):
    import tensorboard  # noqa: F401
    callbacks = tracking_callbacks(tmp_path / "run", tensorboard=True)
    assert [type(c).__name__ for c in callbacks] == ["TensorBoard"]
    _fit_two_phases(callbacks)
    events = sorted((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))
    assert {e.parent.name for e in events} == {"train", "validation"}
    assert all(e.stat().st_size > 100 for e in events)


def test_mlflow_logs_params_epochs_and_final_metrics(tmp_path, monkeypatch):
    import mlflow  # noqa: F401
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the folder store behind this switch
    uri = (tmp_path / "mlruns").as_uri()
    callbacks = tracking_callbacks(tmp_path / "my-run", mlflow_uri=uri, params={"lr": 0.1, "head": {"hidden": 16}})
    _fit_two_phases(callbacks)
    test = {"accuracy": 0.75, "n": 8, "per_class": {"cat 1": {"f1": 0.5}}, "confusion_matrix": [[1]], "class_names": ["a"]}
    run_id = log_final_metrics(callbacks, test)

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "my-run"
    assert run.data.params == {"lr": "0.1", "head.hidden": "16"}
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [0, 1, 2, 3]
    assert {"val_loss", "accuracy", "val_accuracy"} <= set(run.data.metrics)
    assert run.data.metrics["test_accuracy"] == 0.75 and run.data.metrics["test_per_class.cat 1.f1"] == 0.5
    assert not any("confusion" in key for key in run.data.metrics)


def test_mlflow_missing_names_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(TrackingError, match="pip install mlflow"):
        tracking_callbacks(tmp_path, mlflow_uri="sqlite:///x.db")
    with pytest.raises(TrackingError, match="pip install mlflow"):
        MLflowLogger("sqlite:///x.db")


def test_tensorboard_missing_names_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(TrackingError, match="pip install tensorboard"):
        tracking_callbacks(tmp_path, tensorboard=True)
