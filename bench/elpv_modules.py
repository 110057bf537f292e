"""Detection benchmark data from real images: ELPV solar cells tiled into module pictures with exact boxes.

Each split of ``bench/common.py``'s ELPV split (train / val / test cells) becomes module images of 4 rows x 6
columns of cells: every cell used once in its split, in a seeded shuffle (the last module of a split holds the
remainder), each cell scaled by 0.8-1.2, shifted inside its slot and rotated by up to 3 degrees on a black
backplane. One class, ``defect``: the exact box of every cell whose defect probability is >= 2/3 (ELPV's
``likely defective`` and ``defective``), the axis-aligned box of the rotated cell. Written as
``bench/out/elpv-modules/{train,val,test}.json`` (COCO instances) with the PNGs beside them, so
``finetune train bench/out/elpv-modules --image-size 608`` reads the three splits.

    .venv/bin/python bench/elpv_modules.py          # (make bench-data runs it)
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, elpv_split  # noqa: E402

DEST = OUT / "elpv-modules"
ROWS, COLS = 4, 6
CELL = 140  # a cell's side at scale 1, pixels
PITCH = 176  # slot side: room for the largest cell (1.2 x 140) plus its rotation
DEFECTIVE = ("2_likely_defective", "3_defective")
SEED = 0


def cells_of(split_dir: Path) -> list[tuple[Path, bool]]:
    """``(path, defective)`` of every cell of one split."""
    return [(p, c.name in DEFECTIVE) for c in sorted(split_dir.iterdir()) if c.is_dir() for p in sorted(c.glob("*.png"))]


def module(cells: list[tuple[Path, bool]], rng: np.random.Generator) -> tuple[Image.Image, list[list[float]]]:
    """One module picture of up to ROWS x COLS cells and the ``[x, y, w, h]`` boxes of its defective ones."""
    sheet = Image.new("L", (COLS * PITCH, ROWS * PITCH), 0)
    boxes = []
    for slot, (path, defective) in enumerate(cells):
        row, col = divmod(slot, COLS)
        side = round(CELL * rng.uniform(0.8, 1.2))
        angle = rng.uniform(-3, 3)
        with Image.open(path) as img:
            cell = img.convert("L").resize((side, side), Image.BILINEAR)
        mask = Image.new("L", cell.size, 255).rotate(angle, Image.BILINEAR, expand=True)
        cell = cell.rotate(angle, Image.BILINEAR, expand=True)
        slack_x, slack_y = PITCH - cell.width, PITCH - cell.height
        x = col * PITCH + int(rng.integers(0, max(slack_x, 0) + 1))
        y = row * PITCH + int(rng.integers(0, max(slack_y, 0) + 1))
        sheet.paste(cell, (x, y), mask)
        if defective:
            # the rotated square's corners, exactly: half-diagonal extent along each axis
            c, s = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
            extent = side * (c + s)
            cx, cy = x + cell.width / 2, y + cell.height / 2
            boxes.append([cx - extent / 2, cy - extent / 2, extent, extent])
    return sheet.convert("RGB"), boxes


def write_split(name: str, cells: list[tuple[Path, bool]], dest: Path, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(cells))
    per = ROWS * COLS
    images, annotations = [], []
    for m, at in enumerate(range(0, len(order), per)):
        picture, boxes = module([cells[i] for i in order[at:at + per]], rng)
        file_name = f"{name}/module_{m:03d}.png"
        (dest / name).mkdir(parents=True, exist_ok=True)
        picture.save(dest / file_name)
        images.append({"id": m + 1, "file_name": file_name, "width": picture.width, "height": picture.height})
        for x, y, w, h in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": m + 1, "category_id": 1,
                                "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                                "area": round(w * h, 2), "iscrowd": 0})
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "defect"}]}
    (dest / f"{name}.json").write_text(json.dumps(coco))
    return {"modules": len(images), "cells": len(cells), "defects": len(annotations)}


def build(dest: Path = DEST, seed: int = SEED) -> Path:
    """Write the three splits once (a marker file records completion); return ``dest``."""
    marker = dest / f".complete-{seed}"
    if marker.exists():
        return dest
    split_dir = elpv_split()
    for k, name in enumerate(("train", "val", "test")):
        counts = write_split(name, cells_of(split_dir / name), dest, seed + k)
        print(f"{name}: {counts['modules']} modules of {counts['cells']} cells, {counts['defects']} defect boxes")
    marker.touch()
    return dest


if __name__ == "__main__":
    print("ELPV modules:", build())
