"""A tiny YOLOv4-tiny-shaped Darknet cfg and synthetic box data (bright squares on noise) for detection tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def _conv(filters, size=3, stride=1, activation="leaky"):
    return f"[convolutional]\nbatch_normalize=1\nfilters={filters}\nsize={size}\nstride={stride}\npad=1\nactivation={activation}\n"


def _csp(filters):
    return (_conv(filters) + "[route]\nlayers=-1\ngroups=2\ngroup_id=1\n" + _conv(filters // 2) + _conv(filters // 2)
            + "[route]\nlayers=-1,-2\n" + _conv(filters, 1) + "[route]\nlayers=-6,-1\n[maxpool]\nsize=2\nstride=2\n")


def tiny_cfg(size: int = 96, f: int = 4) -> str:
    """YOLOv4-tiny's layer pattern with ``f``/32 of its filters: the same sections, so the same cut (23 and 25)."""
    yolo = ("[yolo]\nmask={mask}\nanchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319\nclasses=80\nnum=6\n"
            "scale_x_y=1.05\n")
    return (f"[net]\nwidth={size}\nheight={size}\nchannels=3\n" + _conv(f, 3, 2) + _conv(2 * f, 3, 2)
            + _csp(2 * f)[:-len("[maxpool]\nsize=2\nstride=2\n")] + "[maxpool]\nsize=2\nstride=2\n"
            + _csp(4 * f) + _csp(8 * f) + _conv(16 * f) + _conv(8 * f, 1) + _conv(16 * f)
            + "[convolutional]\nsize=1\nstride=1\npad=1\nfilters=255\nactivation=linear\n" + yolo.format(mask="3,4,5")
            + "[route]\nlayers=-4\n" + _conv(4 * f, 1) + "[upsample]\nstride=2\n[route]\nlayers=-1, 23\n" + _conv(8 * f)
            + "[convolutional]\nsize=1\nstride=1\npad=1\nfilters=255\nactivation=linear\n" + yolo.format(mask="1,2,3"))


def square_images(folder: Path, count: int = 24, size: int = 96, seed: int = 0) -> list[dict]:
    """``count`` PNGs of noise with 1-2 bright squares (class 0) or discs (class 1); returns COCO-style entries."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(count):
        image = rng.integers(0, 90, (size, size, 3)).astype(np.uint8)
        boxes = []
        for _ in range(int(rng.integers(1, 3))):
            side = int(rng.integers(size // 5, size // 3))
            x, y = (int(v) for v in rng.integers(0, size - side, 2))
            kind = int(rng.integers(0, 2))
            if kind == 0:
                image[y:y + side, x:x + side] = (240, 240, 60)
            else:
                yy, xx = np.mgrid[:side, :side]
                disc = (yy - side / 2) ** 2 + (xx - side / 2) ** 2 <= (side / 2) ** 2
                image[y:y + side, x:x + side][disc] = (60, 200, 240)
            boxes.append((x, y, side, side, kind))
        name = f"img{i:03d}.png"
        Image.fromarray(image).save(folder / name)
        entries.append({"file_name": name, "width": size, "height": size, "boxes": boxes})
    return entries


def coco_json(path: Path, entries: list[dict], category_ids=(7, 3)) -> Path:
    """A COCO instances file for ``entries`` (sparse category ids, in a shuffled order, as real files have)."""
    images, annotations = [], []
    for i, e in enumerate(entries, 1):
        images.append({"id": i, "file_name": e["file_name"], "width": e["width"], "height": e["height"]})
        for x, y, w, h, kind in e["boxes"]:
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": category_ids[kind],
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    categories = [{"id": category_ids[1], "name": "disc"}, {"id": category_ids[0], "name": "square"}]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path
