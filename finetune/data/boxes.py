"""Labelled boxes in the formats people have: COCO JSON, Pascal VOC XML folders, YOLO txt folders.

Every reader returns one :class:`BoxSet`: per image its path, its boxes as pixel corners ``(x0, y0, x1, y1)``
and class indices into ``class_names``. Boxes partly outside their image are clipped to it; boxes fully
outside, of zero area or of an unknown class, and images that are missing, are left out and listed in
``skipped`` (file, what, why), never an error mid-run; images without boxes stay, as negatives.

Example:
    >>> clip_box((-5, 10, 50, 300), 40, 200)
    (0.0, 10.0, 40.0, 200.0)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError


@dataclass
class BoxSet:
    """Images with their boxes: ``items`` are ``(path, boxes (n, 4) float32 pixel corners, labels (n,) int)``."""

    class_names: list[str]
    items: list[tuple[str, np.ndarray, np.ndarray]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (where, why)

    @property
    def box_count(self) -> int:
        return int(sum(len(b) for _, b, _ in self.items))

    def summary(self) -> str:
        negatives = sum(len(b) == 0 for _, b, _ in self.items)
        return (f"{len(self.items)} images ({negatives} without boxes), {self.box_count} boxes, "
                f"{len(self.class_names)} classes; {len(self.skipped)} left out")


def clip_box(box, width: float, height: float) -> tuple[float, float, float, float] | None:
    """``box`` clipped to the image, or ``None`` when nothing of it is inside (or it has no area)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = max(0.0, min(x0, x1)), min(float(width), max(x0, x1))
    y0, y1 = max(0.0, min(y0, y1)), min(float(height), max(y0, y1))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _add(result: BoxSet, path: str, where: str, raw: list[tuple[tuple, int | None, str]], size) -> None:
    """Append one image: ``raw`` holds ``(corners, class index or None, label as written)``."""
    if not os.path.isfile(path):
        result.skipped.append((where, f"image {path} not found; its boxes are left out"))
        return
    if size is None:
        from PIL import Image

        with Image.open(path) as img:
            size = img.size
    boxes, labels = [], []
    for n, (corners, label, written) in enumerate(raw, 1):
        if label is None:
            result.skipped.append((where, f"box {n}: unknown class {written!r}"))
            continue
        clipped = clip_box(corners, *size)
        if clipped is None:
            result.skipped.append((where, f"box {n} {tuple(round(float(v), 1) for v in corners)}: outside the "
                                          f"{size[0]}x{size[1]} image or of zero area"))
            continue
        boxes.append(clipped)
        labels.append(label)
    result.items.append((path, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)))


def read_coco(json_path: str | os.PathLike, images: str | os.PathLike | None = None) -> BoxSet:
    """A COCO ``instances*.json``: ``file_name`` resolved against ``images`` (default: the JSON's folder); category
    ids (any, not contiguous) become indices in the categories' order of id; ``iscrowd`` regions are ignored.

    Raises:
        DataError: not readable JSON, or no ``images`` / ``categories`` in it.
    """
    json_path = Path(json_path)
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
        categories = sorted(data["categories"], key=lambda c: c["id"])
        entries = data["images"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{json_path}: not a COCO instances file ({type(err).__name__}: {err}); it needs "
                        "`images`, `annotations` and `categories`") from None
    index = {c["id"]: i for i, c in enumerate(categories)}
    result = BoxSet([str(c["name"]) for c in categories])
    by_image: dict = {}
    for a in data.get("annotations", []):
        if not a.get("iscrowd"):
            by_image.setdefault(a["image_id"], []).append(a)
    root = Path(images) if images is not None else json_path.parent
    for entry in entries:
        raw = []
        for a in by_image.get(entry["id"], []):
            x, y, w, h = a["bbox"]
            raw.append(((x, y, x + w, y + h), index.get(a["category_id"]), str(a["category_id"])))
        size = (entry["width"], entry["height"]) if "width" in entry and "height" in entry else None
        _add(result, str(root / entry["file_name"]), f"{json_path.name}: {entry['file_name']}", raw, size)
    return result


def read_voc(folder: str | os.PathLike, images: str | os.PathLike | None = None,
             class_names: list[str] | None = None) -> BoxSet:
    """A folder of Pascal VOC ``.xml`` files (each names its image; looked for beside it, in ``images`` or in a
    ``JPEGImages`` folder next to the XML folder); classes: ``class_names`` or every ``<name>`` seen, sorted."""
    import xml.etree.ElementTree as ElementTree

    folder = Path(folder)
    parsed = []
    for xml in sorted(folder.glob("*.xml")):
        try:
            root = ElementTree.parse(xml).getroot()
        except ElementTree.ParseError as err:
            parsed.append((xml, None, f"not readable XML ({err})"))
            continue
        parsed.append((xml, root, ""))
    names = class_names or sorted({o.findtext("name", "").strip() for _, r, _ in parsed if r is not None
                                   for o in r.iter("object")} - {""})
    result = BoxSet(list(names))
    for xml, root, why in parsed:
        if root is None:
            result.skipped.append((xml.name, why))
            continue
        file_name = root.findtext("filename", xml.stem + ".jpg").strip()
        candidates = [Path(images) / file_name] if images else []
        candidates += [xml.parent / file_name, xml.parent.parent / "JPEGImages" / file_name]
        path = next((p for p in candidates if p.is_file()), candidates[0])
        raw = []
        for o in root.iter("object"):
            b = o.find("bndbox")
            corners = tuple(float(b.findtext(k, "0")) for k in ("xmin", "ymin", "xmax", "ymax")) if b is not None \
                else (0, 0, 0, 0)
            label = o.findtext("name", "").strip()
            raw.append((corners, names.index(label) if label in names else None, label))
        size_node = root.find("size")
        size = None
        if size_node is not None and size_node.findtext("width"):
            size = (int(float(size_node.findtext("width"))), int(float(size_node.findtext("height"))))
        _add(result, str(path), xml.name, raw, size)
    return result


def read_yolo(folder: str | os.PathLike) -> BoxSet:
    """A YOLO folder: ``images/`` and ``labels/`` (one ``.txt`` per image: ``class cx cy w h`` in fractions), or
    both side by side; classes from ``classes.txt`` (one per line) or ``data.yaml`` (``names``). An image without a
    label file is a negative.

    Raises:
        DataError: neither ``classes.txt`` nor ``data.yaml`` names the classes.
    """
    from PIL import Image

    folder = Path(folder)
    if (folder / "classes.txt").is_file():
        names = [n.strip() for n in (folder / "classes.txt").read_text(encoding="utf-8").splitlines() if n.strip()]
    elif (folder / "data.yaml").is_file():
        import yaml

        declared = (yaml.safe_load((folder / "data.yaml").read_text(encoding="utf-8")) or {}).get("names", [])
        names = [declared[k] for k in sorted(declared)] if isinstance(declared, dict) else list(declared)
    else:
        raise DataError(f"{folder}: no classes.txt or data.yaml naming the classes (one name per line, in class-id "
                        "order)")
    image_dir = folder / "images" if (folder / "images").is_dir() else folder
    label_dir = folder / "labels" if (folder / "labels").is_dir() else folder
    result = BoxSet([str(n) for n in names])
    for path in sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp")):
        with Image.open(path) as img:
            width, height = img.size
        raw = []
        label_file = label_dir / f"{path.stem}.txt"
        lines = label_file.read_text(encoding="utf-8").splitlines() if label_file.is_file() else []
        for line in lines:
            parts = line.split()
            if len(parts) != 5:
                continue
            c, cx, cy, w, h = int(float(parts[0])), *(float(v) for v in parts[1:])
            corners = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
            raw.append((corners, c if 0 <= c < len(names) else None, parts[0]))
        _add(result, str(path), path.name, raw, (width, height))
    return result


# -- what ``finetune train`` reads as boxes ------------------------------------------------------------------------

SPLIT_FILES = ("train", "val", "test")


def is_box_data(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds boxes: a ``.json`` file, or a folder with ``train.json``, Pascal VOC ``.xml`` files
    (or an ``Annotations/`` folder of them) or a YOLO ``classes.txt`` / ``data.yaml``."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() == ".json"
    if not path.is_dir():
        return False
    return ((path / "train.json").is_file() or (path / "classes.txt").is_file() or (path / "data.yaml").is_file()
            or any(path.glob("*.xml")) or (path / "Annotations").is_dir())


def read_boxes(path: str | os.PathLike, images: str | os.PathLike | None = None) -> dict[str, BoxSet]:
    """The boxes at ``path`` (see :func:`is_box_data`) by split: ``{"all": BoxSet}`` to be split by the run, or
    ``{"train", "val"[, "test"]}`` for a folder of ``train.json``, ``val.json``, ``test.json``.

    Raises:
        DataError: ``path`` holds no boxes finetune reads, or split files disagree on the classes.
    """
    path = Path(path)
    if path.is_file():
        return {"all": read_coco(path, images)}
    if (path / "train.json").is_file():
        splits = {s: read_coco(path / f"{s}.json", images) for s in SPLIT_FILES if (path / f"{s}.json").is_file()}
        names = splits["train"].class_names
        for split, boxes in splits.items():
            if boxes.class_names != names:
                raise DataError(f"{path / (split + '.json')}: its categories {boxes.class_names} differ from "
                                f"train.json's {names}; give every split the same categories")
        return splits
    if (path / "classes.txt").is_file() or (path / "data.yaml").is_file():
        return {"all": read_yolo(path)}
    xml_folder = path / "Annotations" if (path / "Annotations").is_dir() else path
    if any(xml_folder.glob("*.xml")):
        return {"all": read_voc(xml_folder, images)}
    raise DataError(f"{path}: no boxes found; give a COCO instances .json, a folder with train.json [val.json "
                    "test.json], a Pascal VOC folder of .xml files, or a YOLO folder with classes.txt or data.yaml")


def split_boxes(boxes: dict[str, BoxSet], val_split: float, test_split: float, seed: int) -> dict[str, BoxSet]:
    """``{"train", "val", "test"}``: an ``"all"`` set is split by image in a seeded shuffle (``val_split`` and
    ``test_split`` fractions, each at least one image when above 0); given splits are kept (a missing val is
    carved from train)."""
    if "all" in boxes:
        whole = boxes["all"]
        order = np.random.default_rng(seed).permutation(len(whole.items))
        n_val = max(1, round(val_split * len(order))) if val_split > 0 else 0
        n_test = max(1, round(test_split * len(order))) if test_split > 0 else 0
        if n_val + n_test >= len(order):
            raise DataError(f"{len(order)} image(s) cannot be split into train, {n_val} val and {n_test} test: "
                            "add images or lower --val-split / --test-split")
        parts = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
        return {name: BoxSet(whole.class_names, [whole.items[i] for i in sorted(idx)],
                             whole.skipped if name == "train" else []) for name, idx in parts.items()}
    result = dict(boxes)
    if "val" not in result:
        carved = split_boxes({"all": result["train"]}, val_split, 0.0, seed)
        result["train"], result["val"] = carved["train"], carved["val"]
    result.setdefault("test", BoxSet(result["train"].class_names))
    return result


@dataclass
class BoxSplit:
    """One split decoded at the input size: images ``(N, S, S, 3)`` uint8, boxes as pixel corners at that size."""

    paths: list[str]
    images: np.ndarray
    boxes: list[np.ndarray]
    labels: list[np.ndarray]
    sizes: list[tuple[int, int]]  # each image's own (width, height)

    def __len__(self) -> int:
        return len(self.paths)

    def original_boxes(self, i: int) -> np.ndarray:
        """Image ``i``'s boxes in its own pixels."""
        side = self.images.shape[1]
        w, h = self.sizes[i]
        return self.boxes[i] * np.array([w / side, h / side, w / side, h / side], np.float32)


def decode_boxes(boxes: BoxSet, size: int) -> BoxSplit:
    """Every image of ``boxes`` plainly resized to ``size`` x ``size`` (as the cfg trains), boxes scaled with it.

    Raises:
        DataError: an image cannot be decoded (names the file).
    """
    from .images import load_image, resize_plain

    images, scaled, sizes = [], [], []
    for path, corners, _ in boxes.items:
        try:
            image = load_image(path)
        except Exception as err:  # noqa: BLE001 - any decoder error is the file's
            raise DataError(f"{path}: cannot be decoded as an image ({err}); remove it from the annotations") from None
        h, w = image.shape[:2]
        images.append(resize_plain(image, size).astype(np.uint8))
        scaled.append(np.asarray(corners, np.float32).reshape(-1, 4) * np.array([size / w, size / h] * 2, np.float32))
        sizes.append((w, h))
    stacked = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return BoxSplit([p for p, _, _ in boxes.items], stacked, scaled, [lab for _, _, lab in boxes.items], sizes)
