"""Export a trained model for deployment: SavedModel, TFLite (float32, float16, int8) and ONNX.

Every export is checked against the Keras model it came from: the exported
file is loaded with its own runtime (``tf.saved_model.load``, the TFLite
interpreter, onnxruntime), run on the run's test images (or on 32 generated
images), and compared class probability by class probability.

Augmentation layers are dropped first. They are no-ops at inference in Keras,
but ``model.export`` traces them into the graph anyway (the exported
SavedModel then augments at serving time) and the TFLite converter refuses
their random ops, so what is exported is :func:`inference_model`.

Example:
    >>> result = export("runs/flowers/", "tflite", quantize="int8")          # doctest: +SKIP
    >>> result.path, result.size_bytes, result.parity.top1_agreement       # doctest: +SKIP
    (PosixPath('runs/flowers/export/model_int8.tflite'), 1398112, 1.0)
"""

from __future__ import annotations

from ._compat import import_tensorflow_quietly

import_tensorflow_quietly()  # before Keras starts TensorFlow

import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from .choices import EXPORT_FORMATS, QUANTIZATIONS
from .errors import ExportError
from .evaluation.predict import as_class_probs, predict_batches

FORMATS = EXPORT_FORMATS  # the closed lists live in finetune.choices
ONNX_HINT = "pip install keras-finetune[onnx]  (tf2onnx and onnxruntime)"


@dataclass(frozen=True)
class Parity:
    """How closely the exported model reproduces the Keras model.

    Attributes:
        n: Images compared.
        max_abs_diff: Largest absolute difference of any class probability.
        top1_agreement: Fraction of images whose top-1 class is the same.
        images: Where the images came from (``"test split"``, ``"given"`` or ``"generated"``).
    """

    n: int
    max_abs_diff: float
    top1_agreement: float
    images: str


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote, and how faithful it is."""

    format: str
    quantize: str | None
    path: Path
    size_bytes: int
    parity: Parity

    def summary(self) -> str:
        """One line, e.g. ``tflite int8: model_int8.tflite 0.02 MB, max |dp| 3.1e-03, top-1 100.0% (32 generated)``."""
        kind = f"{self.format} {self.quantize}" if self.quantize else self.format
        p = self.parity
        return (f"{kind}: {self.path.name} {self.size_bytes / 1e6:.2f} MB, max |dp| {p.max_abs_diff:.1e}, "
                f"top-1 {p.top1_agreement:.1%} ({p.n} {p.images})")


class _PassThrough(keras.layers.Layer):
    """Stands in for an augmentation layer: returns its input."""

    def call(self, inputs, mask=None, training=None):
        return inputs


def is_augmentation(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` only augments (a ``Random*`` layer, or a Sequential of them such as ``augment``)."""
    if type(layer).__name__.startswith("Random"):
        return True
    return isinstance(layer, keras.Sequential) and bool(layer.layers) and all(map(is_augmentation, layer.layers))


def inference_model(model: keras.Model) -> keras.Model:
    """``model`` without its augmentation layers, sharing every other layer (and so its weights).

    Example:
        >>> from finetune.models import build_model
        >>> parts = build_model("mobilenetv2", 3, weights=None, image_size=96, augment="light")
        >>> [l.name for l in parts.model.layers if is_augmentation(l)]
        ['augment']
        >>> [l.name for l in inference_model(parts.model).layers if is_augmentation(l)]
        []
    """
    if not any(is_augmentation(layer) for layer in model.layers):
        return model
    if isinstance(model, keras.Sequential):
        return keras.Sequential([layer for layer in model.layers if not is_augmentation(layer)], name=model.name)
    return keras.models.clone_model(
        model, clone_function=lambda layer: _PassThrough(name=layer.name) if is_augmentation(layer) else layer
    )


def export(
    run_dir_or_model: str | os.PathLike | keras.Model,
    format: str,
    out_path: str | os.PathLike | None = None,
    *,
    quantize: str | None = None,
    images: np.ndarray | Sequence[str] | None = None,
) -> ExportResult:
    """Export a run's model (or any single-input image model) and check it against Keras.

    Args:
        run_dir_or_model: A run folder written by ``finetune train``, or a ``keras.Model``.
        format: ``"savedmodel"`` (a folder), ``"tflite"`` or ``"onnx"`` (a file).
        out_path: Where to write; default ``<run>/export/model[_<quantize>].<ext>``
            (required when a model is passed).
        quantize: TFLite only: ``None`` (float32), ``"float16"`` (weights in float16)
            or ``"int8"`` (dynamic-range: int8 weights, float activations).
        images: Parity images: an ``(n, h, w, 3)`` array of RGB in [0, 255], or file
            paths. Default: the run's test split, else 32 generated images. For a text run: a list of texts
            (default: up to 64 of its test split), compared in a fresh process that imports only TensorFlow and
            TensorFlow Text (:mod:`finetune.export_text`).

    Returns:
        An :class:`ExportResult` with the file size and the :class:`Parity` figures.

    Raises:
        ExportError: unknown format or quantization, missing ONNX extra, no ``out_path``.

    Example:
        >>> export("runs/flowers/", "onnx").summary()                        # doctest: +SKIP
        'onnx: model.onnx 13.40 MB, max |dp| 4.2e-07, top-1 100.0% (263 test split)'
    """
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if quantize is not None and (format != "tflite" or quantize not in QUANTIZATIONS):
        raise ExportError(f"quantize={quantize!r}: only tflite takes quantize, one of {', '.join(QUANTIZATIONS)} (or None)")
    if format == "onnx":
        _require_onnx()
    if not isinstance(run_dir_or_model, keras.Model):
        from .runs import load_run

        run = load_run(run_dir_or_model)
        if run.spec.kind == "text":
            return _export_text(run, format, quantize, out_path, images)
    model, run_dir, test_items, spec = _resolve(run_dir_or_model)
    if out_path is None:
        if run_dir is None:
            raise ExportError("out_path is required when exporting a keras.Model (there is no run folder to write into)")
        out_path = run_dir / "export" / default_filename(format, quantize)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    batch, source = _parity_images(images, test_items, spec)
    model = inference_model(model)
    expected = as_class_probs(predict_batches(model, batch))  # also a first call, which Keras's ONNX export requires
    _write(model, format, quantize, out_path)
    got = as_class_probs(run_exported(out_path, format, batch))
    parity = Parity(
        n=len(batch),
        max_abs_diff=float(np.abs(expected - got).max()),
        top1_agreement=float((expected.argmax(1) == got.argmax(1)).mean()),
        images=source,
    )
    return ExportResult(format, quantize, out_path, _size(out_path), parity)


def _export_text(run, format: str, quantize: str | None, out_path, texts) -> ExportResult:
    """A text run: strings in (SavedModel) or token ids in (TFLite, ONNX), checked on the run's texts."""
    from . import export_text

    out_path = Path(out_path) if out_path is not None else Path(run.path) / "export" / default_filename(format, quantize)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    texts, source = export_text.parity_texts(run, texts)
    expected = as_class_probs(run.predict(texts))
    if format == "savedmodel":
        export_text.export_text_savedmodel(run, out_path)
        got, modules = export_text.serve_in_fresh_process(out_path, texts)
        if modules:
            raise ExportError(f"{out_path}: serving it loaded {', '.join(modules[:3])}: the SavedModel is not "
                              "self-contained (it must need TensorFlow and TensorFlow Text only)")
    else:
        inputs = export_text.token_inputs(run, texts)
        _write(run.model, format, quantize, out_path)
        export_text.token_model_files(run, out_path)
        got = export_text.run_token_model(out_path, format, inputs)
    got = as_class_probs(got)
    parity = Parity(n=len(texts), max_abs_diff=float(np.abs(expected - got).max()),
                    top1_agreement=float((expected.argmax(1) == got.argmax(1)).mean()), images=source)
    return ExportResult(format, quantize, out_path, _size(out_path), parity)


def default_filename(format: str, quantize: str | None = None) -> str:
    """``model_savedmodel``, ``model.tflite``, ``model_float16.tflite``, ``model_int8.tflite``, ``model.onnx``."""
    if format == "savedmodel":
        return "model_savedmodel"
    return f"model{'_' + quantize if quantize else ''}.{format}"


def run_exported(path: str | os.PathLike, format: str, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Run an exported model on ``images`` (float32 RGB in [0, 255]) with its own runtime; its raw outputs.

    Example:
        >>> probs = run_exported("runs/flowers/export/model.tflite", "tflite", images)   # doctest: +SKIP
    """
    images = np.asarray(images, dtype=np.float32)
    if format == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))  # keep the object alive: `serve` only references its variables
        run = lambda x: loaded.serve(tf.constant(x)).numpy()  # noqa: E731
    elif format == "tflite":
        run = _tflite_runner(path)
    elif format == "onnx":
        _require_onnx()
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        run = lambda x: session.run(None, {name: x})[0]  # noqa: E731
    else:
        raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    return np.concatenate([run(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def _resolve(source) -> tuple[keras.Model, Path | None, list[tuple[str, int]], "ImageSpec"]:
    """``(model, run folder, test items, input spec)``; a bare model gets the default spec at its input size."""
    from .data.spec import ImageSpec

    if isinstance(source, keras.Model):
        return source, None, [], ImageSpec(int(source.inputs[0].shape[1]))
    from .runs import load_run

    run = load_run(source)
    run.require_images("export")
    return run.model, Path(source), _test_items(run), run.spec


def _test_items(run) -> list[tuple[str, int]]:
    """The run's test split (``splits.csv``), or nothing when its images are gone."""
    from .errors import DataError, RunError

    try:
        return run.splits().get("test") or []
    except (DataError, RunError):
        return []


def _parity_images(images, test_items, spec) -> tuple[np.ndarray, str]:
    from .data import load_images

    if images is not None:
        if len(images) and isinstance(images[0], (str, os.PathLike)):
            return load_images([str(p) for p in images], spec), "given"
        return np.asarray(images, dtype=np.float32), "given"
    if test_items:
        return load_images([p for p, _ in test_items], spec), "test split"
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (32, spec.size, spec.size, 3)).astype(np.float32), "generated"


def _write(model: keras.Model, format: str, quantize: str | None, out_path: Path) -> None:
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".export-") as tmp:
        saved = Path(tmp) / "savedmodel"
        if format in ("savedmodel", "tflite"):
            model.export(str(saved), format="tf_saved_model", verbose=False)
        if format == "savedmodel":
            result = saved
        elif format == "tflite":
            result = Path(tmp) / "model.tflite"
            result.write_bytes(_tflite_bytes(saved, quantize))
        else:
            result = Path(tmp) / "model.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tf2onnx's numpy deprecation noise
                model.export(str(result), format="onnx", verbose=False)
        if out_path.is_dir():
            shutil.rmtree(out_path)
        os.replace(result, out_path)


def _tflite_bytes(saved_model: Path, quantize: str | None) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # without a representative dataset: dynamic range
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def _tflite_runner(path):
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice (moving to ai-edge-litert)
        interpreter = tf.lite.Interpreter(model_path=str(path))
    source = interpreter.get_input_details()[0]["index"]
    target = interpreter.get_output_details()[0]["index"]

    def run(x: np.ndarray) -> np.ndarray:
        interpreter.resize_tensor_input(source, x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(source, x)
        interpreter.invoke()
        return interpreter.get_tensor(target).copy()

    return run


def _require_onnx() -> None:
    missing = []
    for module in ("tf2onnx", "onnxruntime"):
        try:
            __import__(module)
        except ImportError as err:
            missing.append(f"{module} ({err})")
    if missing:
        raise ExportError(f"ONNX export needs {' and '.join(missing)}: {ONNX_HINT}")


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size
