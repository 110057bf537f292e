"""COCO mAP of detections against true boxes, with ``pycocotools`` (the reference implementation).

Example:
    >>> truth = [(np.array([[10, 10, 50, 50]], float), np.array([0]))]
    >>> found = [[((11, 9, 50, 52), 0.9, 0)]]
    >>> result = coco_map(truth, found, ["cell"], [(100, 100)])
    >>> round(result["map50"], 3), result["per_class"]["cell"]["ap50"] > 0.99
    (1.0, True)
"""

from __future__ import annotations

import contextlib
import io
from typing import Sequence

import numpy as np


def coco_map(truth: Sequence[tuple[np.ndarray, np.ndarray]], found: Sequence[Sequence[tuple]],
             class_names: list[str], sizes: Sequence[tuple[int, int]]) -> dict:
    """``{"map", "map50", "per_class": {name: {"ap", "ap50", "boxes"}}, "images", "boxes"}`` (fractions).

    ``truth[i]``: image i's ``(corners (n, 4) pixels, class indices (n,))``; ``found[i]``: its detections as
    ``(corners, score, class index)``; ``sizes[i]``: its ``(width, height)``. A class without true boxes has AP
    ``None`` and is left out of the means; with no detections at all every AP is 0.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for i, ((boxes, labels), (width, height)) in enumerate(zip(truth, sizes), 1):
        images.append({"id": i, "width": int(width), "height": int(height)})
        for box, label in zip(np.asarray(boxes, float).reshape(-1, 4), labels):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(label) + 1,
                                "bbox": [float(box[0]), float(box[1]), float(w), float(h)], "area": float(w * h),
                                "iscrowd": 0})
    for i, detections in enumerate(found, 1):
        for box, score, label in detections:
            x0, y0, x1, y1 = (float(v) for v in box)
            results.append({"image_id": i, "category_id": int(label) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "score": float(score)})
    counts = {name: 0 for name in class_names}
    for a in annotations:
        counts[class_names[a["category_id"] - 1]] += 1
    per_class = {name: {"ap": None, "ap50": None, "boxes": counts[name]} for name in class_names}
    summary = {"map": 0.0, "map50": 0.0, "per_class": per_class, "images": len(images), "boxes": len(annotations)}
    if not annotations:
        summary["map"] = summary["map50"] = None
        return summary
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": k + 1, "name": n} for k, n in enumerate(class_names)]}
        gt.createIndex()
        if not results:
            for name in class_names:
                if counts[name]:
                    per_class[name].update(ap=0.0, ap50=0.0)
            return summary
        evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    precision = evaluation.eval["precision"]  # (iou thresholds, recall points, classes, areas, max dets)
    aps, ap50s = [], []
    for k, name in enumerate(class_names):
        if not counts[name]:
            continue
        all_iou = precision[:, :, k, 0, -1]
        at50 = precision[0, :, k, 0, -1]
        ap = float(np.mean(np.maximum(all_iou, 0)))
        ap50 = float(np.mean(np.maximum(at50, 0)))
        per_class[name].update(ap=ap, ap50=ap50)
        aps.append(ap)
        ap50s.append(ap50)
    summary.update(map=float(np.mean(aps)), map50=float(np.mean(ap50s)))
    return summary
