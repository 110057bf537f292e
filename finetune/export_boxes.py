"""Export a detection run: a SavedModel or a TFLite file that takes one image and returns its boxes after NMS.

The exported function takes ``image``: float32 ``(1, S, S, 3)`` RGB in [0, 255], already plainly resized to the
run's input size ``S`` (``detector.json``), and returns ``boxes`` ``(K, 4)`` as corners ``x0, y0, x1, y1`` in
pixels of that input, ``scores`` and ``classes`` (indices into ``labels.txt``), best first, each padded to
:data:`MAX_DETECTIONS` rows, and ``count``: how many rows are detections. Decoding and per-class NMS are in the
graph: ``tf.image.non_max_suppression_padded``, which TFLite runs as its built-in ``NON_MAX_SUPPRESSION_V4`` (no
select-TF ops). Parity: the exported file, run by its
own runtime on the run's test images, gives the same detections as :meth:`Detector.detect` in Keras.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .errors import ExportError

MAX_DETECTIONS = 100


def detection_archive(detector, score: float, iou: float):
    """A ``keras.export.ExportArchive`` with one endpoint, ``serve(image)`` -> ``{"boxes", "scores", "classes",
    "count"}`` (see the module doc). (A bare ``tf.Module`` around the model converts to a TFLite file that outputs
    NaN; the archive, which tracks the Keras variables itself, does not.)"""
    import keras
    import tensorflow as tf

    from .models.yolo import decode_grids

    size, heads, model = detector.input_size, detector.heads, detector.model
    classes = heads[0].classes

    def detect(image):
        boxes, scores = decode_grids(detector.outputs(image), heads, size)
        boxes, scores = boxes[0], scores[0]
        half = boxes[:, 2:] / 2
        corners = tf.concat([boxes[:, :2] - half, boxes[:, :2] + half], 1) * float(size)  # x0 y0 x1 y1
        yxyx = tf.gather(corners, [1, 0, 3, 2], axis=1)
        kept_boxes, kept_scores, kept_classes = [], [], []
        for c in range(classes):  # fixed-size (padded) NMS: TFLite's built-in NON_MAX_SUPPRESSION_V4
            picked, valid = tf.image.non_max_suppression_padded(
                yxyx, scores[:, c], MAX_DETECTIONS, iou_threshold=iou, score_threshold=score,
                pad_to_max_output_size=True)
            real = tf.range(MAX_DETECTIONS) < valid
            kept_boxes.append(tf.gather(corners, picked))
            kept_scores.append(tf.where(real, tf.gather(scores[:, c], picked), -1.0))
            kept_classes.append(tf.fill((MAX_DETECTIONS,), c))
        all_scores = tf.concat(kept_scores, 0)
        best = tf.math.top_k(all_scores, k=MAX_DETECTIONS)
        return {"boxes": tf.gather(tf.concat(kept_boxes, 0), best.indices), "scores": best.values,
                "classes": tf.gather(tf.concat(kept_classes, 0), best.indices),
                "count": tf.reduce_sum(tf.cast(best.values >= 0, tf.int32))}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", detect, input_signature=[tf.TensorSpec((1, size, size, 3), tf.float32, name="image")])
    return archive


def export_detector(run_dir: str | os.PathLike, format: str, out_path=None, *, score: float = 0.25,
                    iou: float = 0.45) -> dict:
    """Write the run's detector as ``savedmodel`` (a folder) or ``tflite`` and check it on the test images.

    Returns ``{"path", "size_bytes", "images", "detections", "max_box_diff", "max_score_diff", "same_classes"}``.

    Raises:
        ExportError: another format, or the exported file's detections differ from Keras's.
    """
    import tensorflow as tf

    from .detection_runs import load_detector

    if format not in ("savedmodel", "tflite"):
        raise ExportError(f"a detection run exports as savedmodel or tflite, not {format!r}")
    run_dir = Path(run_dir)
    detector = load_detector(run_dir)
    out_path = Path(out_path) if out_path else run_dir / "export" / ("detector" if format == "savedmodel"
                                                                     else "detector.tflite")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    archive = detection_archive(detector, score, iou)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".export-") as tmp:
        saved = Path(tmp) / "savedmodel"
        archive.write_out(str(saved), verbose=False)
        result = saved
        if format == "tflite":
            converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no select-TF ops
            result = Path(tmp) / "detector.tflite"
            result.write_bytes(converter.convert())
        if out_path.is_dir():
            shutil.rmtree(out_path)
        elif out_path.exists():
            out_path.unlink()
        os.replace(result, out_path)
    runner = _saved_runner(out_path) if format == "savedmodel" else _tflite_runner(out_path)
    parity = _parity(detector, runner, _parity_images(run_dir, detector.input_size), score, iou)
    size = sum(f.stat().st_size for f in out_path.rglob("*") if f.is_file()) if out_path.is_dir() \
        else out_path.stat().st_size
    return {"path": str(out_path), "size_bytes": size, **parity}


def _parity_images(run_dir: Path, size: int) -> np.ndarray:
    from .data.images import load_image, resize_plain

    splits = run_dir / "splits.json"
    paths = json.loads(splits.read_text())["test"][:8] if splits.is_file() else []
    if paths:
        return np.stack([resize_plain(load_image(p), size) for p in paths])
    return np.random.default_rng(0).uniform(0, 255, (4, size, size, 3)).astype(np.float32)


def _parity(detector, runner, images: np.ndarray, score: float, iou: float) -> dict:
    from .models.yolo import decode, non_max_suppression

    box_diff, score_diff, total, same = 0.0, 0.0, 0, True
    for image in images:
        boxes, scores = decode(detector.outputs(image[None].astype(np.float32)), detector.heads, detector.input_size)
        expected = non_max_suppression(boxes[0], scores[0], score=score, iou=iou)[:MAX_DETECTIONS]
        got = runner(image[None].astype(np.float32))
        if len(expected) != len(got["scores"]):
            same = False
            continue
        want = sorted(((c, s, b) for b, s, c in expected), key=lambda t: (t[0], -t[1]))
        have = sorted(zip(got["classes"].tolist(), got["scores"].tolist(), got["boxes"]), key=lambda t: (t[0], -t[1]))
        for (c1, s1, b1), (c2, s2, b2) in zip(want, have):
            cx, cy, w, h = b1
            corners = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) * detector.input_size
            same &= c1 == c2
            box_diff = max(box_diff, float(np.abs(corners - b2).max()))
            score_diff = max(score_diff, abs(s1 - s2))
        total += len(expected)
    if not same or box_diff > 0.5 or score_diff > 1e-3:
        raise ExportError(f"the exported detector disagrees with Keras (same classes and counts: {same}, box "
                          f"corners differ by up to {box_diff:.2f} px, scores by {score_diff:.1e})")
    return {"images": len(images), "detections": total, "max_box_diff": box_diff, "max_score_diff": score_diff,
            "same_classes": same}


def _saved_runner(path: Path):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))

    def run(image):
        return _valid({k: v.numpy() for k, v in loaded.serve(tf.constant(image)).items()})

    return run


def _tflite_runner(path: Path):
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner()

    def run(image):
        return _valid({k: np.asarray(v) for k, v in runner(image=image).items()})

    return run


def _valid(found: dict) -> dict:
    """The first ``count`` rows of each output."""
    count = int(found.pop("count"))
    return {k: v[:count] for k, v in found.items()}
