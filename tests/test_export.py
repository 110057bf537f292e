"""Exports run with their own runtimes and match the Keras model."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import tensorflow as tf

import finetune
from conftest import TINY_RUN, make_image_folder
from finetune.config import TrainConfig
from finetune.export import ExportError, export, inference_model, is_augmentation, run_exported


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A trained tiny run whose model carries the `light` augmentation layers."""
    root = tmp_path_factory.mktemp("export")
    data = make_image_folder(root / "data", per_class=10)
    config = TrainConfig(**{**TINY_RUN, "augment": "light"}, data=str(data), head_epochs=1, tune_epochs=0,
                         cache_features=False, output=str(root / "runs"), name="tiny")
    run_dir, _, _ = finetune.train(config, verbose=0)
    return run_dir


def test_inference_model_drops_augmentation_and_shares_weights(tiny_run):
    model = finetune.load_run(tiny_run).model
    assert any(is_augmentation(layer) for layer in model.layers)
    clean = inference_model(model)
    assert not any(is_augmentation(layer) for layer in clean.layers)
    assert clean.get_layer("tiny_base") is model.get_layer("tiny_base")
    x = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(clean(x, training=False), model(x, training=False))


def test_savedmodel_runs_with_tf_and_matches(tiny_run):
    result = export(tiny_run, "savedmodel")
    assert result.path == tiny_run / "export" / "model_savedmodel" and result.size_bytes > 10_000
    assert result.parity.images == "test split" and result.parity.n == 3
    assert result.parity.max_abs_diff < 1e-5 and result.parity.top1_agreement == 1.0
    loaded = tf.saved_model.load(str(result.path))
    model = finetune.load_run(tiny_run).model
    x = np.random.default_rng(2).uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded.serve(tf.constant(x)).numpy(), model(x, training=False), atol=1e-5)


@pytest.mark.parametrize("quantize, atol", [(None, 1e-5), ("float16", 1e-2), ("int8", None)])
def test_tflite_runs_in_the_interpreter_and_matches(tiny_run, tmp_path, quantize, atol):
    x = np.random.default_rng(3).uniform(0, 255, (32, 32, 32, 3)).astype("float32")
    result = export(tiny_run, "tflite", tmp_path / "m.tflite", quantize=quantize, images=x)
    assert result.path.stat().st_size == result.size_bytes > 1000
    assert result.parity.images == "given" and result.parity.n == 32
    if atol is not None:
        assert result.parity.max_abs_diff < atol
    assert result.parity.top1_agreement >= (1.0 if atol else 0.9)
    probs = run_exported(result.path, "tflite", x[:3])
    assert probs.shape == (3, 3) and np.allclose(probs.sum(1), 1, atol=1e-3)


def test_onnx_runs_in_onnxruntime_and_matches(tiny_run):
    import tf2onnx  # noqa: F401  (declared in the test extra: a missing one must fail)
    import onnxruntime  # noqa: F401
    model = finetune.load_run(tiny_run).model
    result = export(model, "onnx", tiny_run / "m.onnx")
    assert result.parity.images == "generated" and result.parity.n == 32
    assert result.parity.max_abs_diff < 1e-5 and result.parity.top1_agreement == 1.0
    assert "onnx: m.onnx" in result.summary()


def test_onnx_missing_extra_names_the_pip_command(tiny_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(ExportError, match=r"pip install keras-finetune\[onnx\]"):
        export(tiny_run, "onnx")


@pytest.mark.parametrize("kwargs, message", [
    (dict(format="coreml"), "unknown export format"),
    (dict(format="onnx", quantize="int8"), "only tflite takes quantize"),
    (dict(format="tflite", quantize="int4"), "only tflite takes quantize"),
])
def test_bad_requests_are_refused(tiny_run, kwargs, message):
    with pytest.raises(ExportError, match=message):
        export(tiny_run, **kwargs)


def test_a_model_needs_an_out_path(tiny_run):
    model = finetune.load_run(tiny_run).model
    with pytest.raises(ExportError, match="out_path is required"):
        export(model, "tflite")
