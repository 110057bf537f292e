"""`finetune detect --coco` images/s against OpenCV's Darknet reader over the same span, on the same photos.

The 8 photos of the parity test (tests/test_detection.py), repeated to 56 images. Both sides: decode the file,
resize to 416x416, forward, per-class NMS (score 0.2, IoU 0.45): finetune with `Detector.detect` (PIL decode,
TensorFlow bilinear resize, the Keras model in a tf.function, NumPy decode and NMS); OpenCV with `cv2.imread`,
`blobFromImage`, `net.forward` and `cv2.dnn.NMSBoxesBatched`. Model load and PNG output are outside the span; each
side runs the photos once to warm up. Goal (issue 24): finetune >= 0.5x OpenCV's images/s.

    .venv/bin/python bench/detect_speed.py            # needs `make test-data` and opencv-python-headless
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

REPEAT = 7


def measure(verbose: bool = True) -> dict:
    """``{"finetune", "opencv"}`` images/s over the same span (see the module docstring)."""
    import cv2

    from bench.common import machine
    from finetune.data.images import load_image
    from finetune.models.yolo import detector_files, load_yolo
    from test_detection import photos

    paths = [str(p) for p in photos().values()] * REPEAT
    detector = load_yolo()
    cfg, weights, _ = detector_files()
    net = cv2.dnn.readNetFromDarknet(cfg, weights)
    names = net.getUnconnectedOutLayersNames()

    def ours(path):
        return detector.detect([load_image(path)])[0]

    def theirs(path):
        image = cv2.imread(path)
        net.setInput(cv2.dnn.blobFromImage(image, 1 / 255, (416, 416), swapRB=True, crop=False))
        rows = np.concatenate(net.forward(names))
        scores = rows[:, 5:]
        classes, best = scores.argmax(1), scores.max(1)
        keep = best > 0.2
        h, w = image.shape[:2]
        boxes = rows[keep, :4] * [w, h, w, h]
        boxes[:, :2] -= boxes[:, 2:] / 2
        return cv2.dnn.NMSBoxesBatched(boxes.tolist(), best[keep].tolist(), classes[keep].tolist(), 0.2, 0.45)

    if verbose:
        print(f"machine: {machine()}; {len(paths)} images (8 photos x {REPEAT}); OpenCV {cv2.__version__}")
    rates = {"images": len(paths)}
    for name, run in (("finetune", ours), ("opencv", theirs)):
        for path in paths[:8]:
            run(path)  # warm-up
        start = time.perf_counter()
        for path in paths:
            run(path)
        rates[name] = len(paths) / (time.perf_counter() - start)
        if verbose:
            print(f"  {name:<9} {rates[name]:.1f} images/s", flush=True)
    return rates


def main() -> None:
    rates = measure()
    print(f"detect --coco {rates['finetune']:.1f} images/s vs OpenCV {rates['opencv']:.1f}: "
          f"{rates['finetune'] / rates['opencv']:.2f}x (goal >= 0.5x)")


if __name__ == "__main__":
    main()
