"""Detections as files people open: boxes drawn on the image (PNG), and one JSON and one CSV for a batch.

Example:
    >>> from finetune.models.yolo import Detection
    >>> rows = detection_rows("bus.jpg", [Detection("bus", 0.66, (10.0, 20.0, 300.0, 250.0))])
    >>> rows[0]["label"], rows[0]["x0"], rows[0]["score"]
    ('bus', 10.0, 0.66)
"""

from __future__ import annotations

import colorsys
import csv
import io
import json
from pathlib import Path
from typing import Sequence

import numpy as np

FIELDS = ("image", "label", "score", "x0", "y0", "x1", "y1")


def colour(label: str) -> tuple[int, int, int]:
    """A stable, distinct colour per label."""
    hue = (sum(ord(c) * 131 for c in label) % 360) / 360
    return tuple(int(255 * v) for v in colorsys.hsv_to_rgb(hue, 0.85, 0.95))


def draw_detections(image: np.ndarray, detections: Sequence) -> "Image.Image":
    """``image`` (RGB uint8) with each detection's box and ``label score`` drawn on it."""
    from PIL import Image, ImageDraw, ImageFont

    picture = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(picture)
    width = max(2, round(max(picture.size) / 300))
    font = ImageFont.load_default(size=max(12, round(max(picture.size) / 45)))
    ranked = sorted(detections, key=lambda d: -d.score)
    for found in ranked:
        draw.rectangle(found.box, outline=colour(found.label), width=width)
    placed: list[tuple[float, float, float, float]] = []
    for found in ranked:  # labels of better boxes first; a later label moves down until it covers none
        x0, y0 = found.box[:2]
        text = f"{found.label} {found.score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        w, h = right - left + 2 * width, bottom - top + 2 * width
        y = y0 - h if y0 - h >= 0 else y0
        while any(x0 < a1 and a0 < x0 + w and y < b1 and b0 < y + h for a0, b0, a1, b1 in placed):
            y += h
        placed.append((x0, y, x0 + w, y + h))
        draw.rectangle((x0, y, x0 + w, y + h), fill=colour(found.label))
        draw.text((x0 + width - left, y + width - top), text, fill=(0, 0, 0), font=font)
    return picture


def detection_rows(image: str, detections: Sequence) -> list[dict]:
    return [{"image": image, "label": d.label, "score": round(d.score, 4),
             **{k: round(float(v), 1) for k, v in zip(("x0", "y0", "x1", "y1"), d.box)}} for d in detections]


def write_detections(rows: list[dict], folder: Path) -> tuple[Path, Path]:
    """``detections.json`` and ``detections.csv`` in ``folder``."""
    from ..util import atomic_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_text(folder / "detections.json", json.dumps(rows, indent=1))
    atomic_text(folder / "detections.csv", buffer.getvalue())
    return folder / "detections.json", folder / "detections.csv"
