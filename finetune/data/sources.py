"""Data from other sources than a class-folder tree: a CSV of file names and labels, NumPy arrays, a ``tf.data`` dataset.

Each becomes an :class:`~finetune.data.scan.ImageFolder` (the same checks, bad-file
reporting and stratified split as a folder), so training, evaluation and the
run folder work the same way. Arrays and datasets are written once as PNG files
under finetune's cache dir (keyed by a checksum of the pixels and labels), so
every image goes through the same decoding and resize policy as files do.

Pixel values are 0-255 everywhere, as in the rest of finetune: uint8 arrays, or
float arrays in [0, 255]. ``(N, H, W)`` grayscale and ``(N, H, W, 1)`` are accepted.

Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).integers(0, 255, (20, 8, 8), dtype=np.uint8)
    >>> folder = from_arrays(x, np.arange(20) % 2, val_split=0.2, test_split=0)   # PNGs under $FINETUNE_CACHE_DIR
    >>> folder.class_names, len(folder.splits["train"]), len(folder.splits["val"])
    (['0', '1'], 16, 4)
"""

from __future__ import annotations

import csv
import hashlib
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .images import DataError
from .scan import ImageFolder, Skipped, _check_all, _stratified_split, check_fractions

LABEL_SEPARATORS = (";", " ")


def from_csv(path: str | os.PathLike, *, val_split: float = 0.1, test_split: float = 0.1, seed: int = 0,
             workers: int = 4) -> ImageFolder:
    """Scan a CSV with columns ``path,label`` (and optionally ``split``: train/val/test).

    Paths are relative to the CSV's folder (or absolute). Rows whose file is
    missing or unreadable are skipped with the reason, as in a folder scan.

    **Multi-label**: when a label cell holds several labels the task is
    multi-label (an image may carry any number of them, each predicted by its own
    sigmoid). Labels are separated by ``;`` when any cell has one (so names may
    hold spaces), else by spaces. Rows without a ``split`` are then split at random
    (seeded) rather than stratified by class.

    Raises:
        DataError: no ``path``/``label`` header, an unknown split name, fewer than two classes.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV file {str(path)!r} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        if "path" not in columns or "label" not in columns:
            raise DataError(f"{path}: the first line must name the columns path,label[,split]; found {columns or 'none'}")
        rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    records, skipped = [], []
    for line, row in enumerate(rows, start=2):
        label, split = row["label"], row.get("split", "").lower()
        if not row["path"] or not label:
            skipped.append(Skipped(f"{path}:{line}", "empty path or label"))
            continue
        if split and split not in ("train", "val", "test"):
            raise DataError(f"{path}:{line}: split {split!r} must be train, val or test (or empty)")
        file_path = Path(row["path"]) if Path(row["path"]).is_absolute() else path.parent / row["path"]
        if not file_path.is_file():
            skipped.append(Skipped(str(file_path), f"listed on line {line} of {path.name} but not found"))
            continue
        records.append((str(file_path), label, split))
    bad = dict(_check_all([r[0] for r in records], workers, None))
    skipped += [Skipped(p, reason) for p, reason in bad.items()]
    good = [r for r in records if r[0] not in bad]
    separator = label_separator([label for _, label, _ in good])
    if separator == " ":
        warnings.warn(f"{path.name}: labels hold spaces and no ';', so they are read as several labels per image "
                      "(multi-label); if a label name has spaces, separate the labels of a cell with ';'",
                      UserWarning, stacklevel=2)
    if separator is not None:
        return _multi_label_folder(str(path), good, skipped, separator, val_split, test_split, seed)
    return _folder(str(path), good, skipped, val_split, test_split, seed)


def label_separator(labels: Sequence[str]) -> str | None:
    """``";"`` if any label cell holds one, else ``" "`` if any holds a space, else ``None`` (one label per image).

    Example:
        >>> label_separator(["cat", "cat;dog"]), label_separator(["cat dog", "dog"]), label_separator(["cat"])
        (';', ' ', None)
    """
    for sep in LABEL_SEPARATORS:
        if any(sep in label for label in labels):
            return sep
    return None


def _multi_label_folder(root: str, records: list[tuple[str, str, str]], skipped: list[Skipped], separator: str,
                        val_split: float, test_split: float, seed: int) -> ImageFolder:
    sets = [sorted({part.strip() for part in label.split(separator) if part.strip()}) for _, label, _ in records]
    class_names = sorted({name for names in sets for name in names})
    if len(class_names) < 2:
        raise DataError(f"{root}: {len(class_names)} label(s) in all; a multi-label task needs at least two")
    flags = [tuple(int(name in names) for name in class_names) for names in sets]
    splits: dict[str, list] = {"train": [], "val": [], "test": []}
    rest = []
    for (file, _, split), label in zip(records, flags):
        (splits[split] if split else rest).append((file, label))
    check_fractions(val_split, test_split)
    order = np.random.default_rng(seed).permutation(len(rest))
    n_val = 0 if splits["val"] else round(len(rest) * val_split)
    n_test = 0 if splits["test"] else round(len(rest) * test_split)
    picked = [rest[i] for i in order]
    splits["test"] += picked[:n_test]
    splits["val"] += picked[n_test:n_test + n_val]
    splits["train"] += picked[n_test + n_val:]
    if not splits["train"]:
        raise DataError(f"{root}: no training images (every row is marked val or test)")
    missing = [name for name, count in zip(class_names, np.sum([l for _, l in splits["train"]], axis=0)) if not count]
    if missing:
        raise DataError(f"{root}: label(s) {', '.join(missing)} never occur in the training split; add images "
                        "carrying them or drop the label")
    presplit = bool(any(split for _, _, split in records))
    return ImageFolder(root, class_names, splits, skipped, presplit=presplit, multi_label=True)


def from_arrays(x: Any, y: Sequence, *, validation_data: tuple | None = None, val_split: float = 0.1,
                test_split: float = 0.1, seed: int = 0, class_names: Sequence[str] | None = None) -> ImageFolder:
    """Images ``x`` (N, H, W[, C], pixels 0-255) and labels ``y`` as an :class:`ImageFolder`.

    With ``validation_data=(x_val, y_val)`` (as ``model.fit``) that is the
    validation split and only ``test_split`` is carved from ``x``.
    """
    from ..cache import cache_root

    x, y = _checked(x, y, "x")
    parts = [("fit", x, y)]
    if validation_data is not None:
        xv, yv = _checked(*validation_data, "validation_data")
        parts.append(("val", xv, yv))
    digest = hashlib.sha256()
    for _, images, labels in parts:
        digest.update(np.ascontiguousarray(images).tobytes())
        digest.update(np.asarray(labels).astype(str).tobytes())
    root = cache_root() / "arrays" / digest.hexdigest()[:24]
    records = []
    for name, images, labels in parts:
        for i, (image, label) in enumerate(zip(images, labels)):
            label = class_names[int(label)] if class_names is not None else str(label)
            file = root / name / f"{i:06d}.png"
            if not file.exists():
                _write_png(file, image)
            records.append((str(file), label, "val" if name == "val" else ""))
    return _folder(str(root), records, [], 0 if validation_data is not None else val_split, test_split, seed)


def from_dataset(dataset: Any, *, validation_data: Any = None, **kwargs: Any) -> ImageFolder:
    """A ``tf.data.Dataset`` of ``(image, label)`` pairs (batched or not) as an :class:`ImageFolder`."""
    def arrays(ds):
        xs, ys = [], []
        for image, label in ds.as_numpy_iterator():
            batched = np.ndim(label) > 0
            xs.extend(image if batched else [image])
            ys.extend(label if batched else [label])
        return np.stack(xs), np.asarray(ys)

    val = arrays(validation_data) if validation_data is not None else None
    return from_arrays(*arrays(dataset), validation_data=val, **kwargs)


def _checked(x: Any, y: Sequence, name: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (3, 4)):
        raise DataError(f"{name}: images must be (N, H, W) grayscale or (N, H, W, 1|3|4); got shape {x.shape}")
    if len(x) != len(y):
        raise DataError(f"{name}: {len(x)} images but {len(y)} labels")
    if y.ndim != 1:
        raise DataError(f"{name}: labels must be one per image (shape (N,)); got {y.shape} (one-hot? use argmax)")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
            raise DataError(f"{name}: pixel type {x.dtype} is not a number")
        low, high = float(np.min(x)), float(np.max(x))
        if low < 0 or high > 255:
            raise DataError(f"{name}: pixels span {low:g}..{high:g}; finetune expects 0-255 (as uint8 images)")
        if high <= 1.0:
            raise DataError(f"{name}: pixels span {low:g}..{high:g}, which looks like 0-1; finetune expects 0-255: "
                            "pass x * 255")
        x = np.round(x).astype(np.uint8)
    return x, y


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    from ..util import atomic_write

    atomic_write(path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))


def _folder(root: str, records: list[tuple[str, str, str]], skipped: list[Skipped], val_split: float,
            test_split: float, seed: int) -> ImageFolder:
    class_names = sorted({label for _, label, _ in records})
    if len(class_names) < 2:
        raise DataError(f"{root}: {len(class_names)} class(es) with readable images; a classifier needs at least two")
    index = {name: i for i, name in enumerate(class_names)}
    given = {split: [(p, index[l]) for p, l, s in records if s == split] for split in ("train", "val", "test")}
    rest = {name: [p for p, l, s in records if not s and l == name] for name in class_names}
    has_rest = any(rest.values())
    splits = _stratified_split(Path(root), class_names, rest, 0 if given["val"] else val_split,
                               0 if given["test"] else test_split, seed) if has_rest else {"train": [], "val": [],
                                                                                          "test": []}
    for split in ("train", "val", "test"):
        splits[split] = given[split] + splits.get(split, [])
    if not splits["train"]:
        raise DataError(f"{root}: no training images (every row is marked val or test)")
    return ImageFolder(root, class_names, splits, skipped, presplit=bool(given["val"] or given["test"]))


def as_image_folder(data: Any, *, val_split: float = 0.1, test_split: float = 0.1, seed: int = 0,
                    validation_data: Any = None) -> ImageFolder:
    """Whatever ``fine_tune`` was given, as an :class:`ImageFolder`: a folder, a ``.csv``, ``(x, y)`` arrays,
    a ``tf.data.Dataset``, or an ``ImageFolder`` already."""
    from .scan import scan_folder

    split = dict(val_split=val_split, test_split=test_split, seed=seed)
    if isinstance(data, ImageFolder):
        return data
    if isinstance(data, (str, os.PathLike)):
        from .text_sources import from_text_csv, from_text_folder, is_text_csv, is_text_folder

        if str(data).lower().endswith(".csv"):
            return from_text_csv(data, **split) if is_text_csv(data) else from_csv(data, **split)
        return from_text_folder(data, **split) if is_text_folder(data) else scan_folder(data, **split)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        if _are_texts(data[0]):
            from .text_sources import from_texts

            return from_texts(*data, validation_data=validation_data, **split)
        return from_arrays(*data, validation_data=validation_data, **split)
    if hasattr(data, "as_numpy_iterator"):
        return from_dataset(data, validation_data=validation_data, **split)
    raise DataError(f"data of type {type(data).__name__}: give a folder, a .csv file, (x, y) arrays, (texts, labels) "
                    "or a tf.data.Dataset of (image, label)")


def _are_texts(x: Any) -> bool:
    """Whether ``x`` (a list, NumPy or pandas column) holds strings rather than pixels."""
    if hasattr(x, "to_numpy"):
        x = x.to_numpy()
    if isinstance(x, np.ndarray):
        return x.dtype.kind in "OUS" and x.ndim == 1
    return isinstance(x, (list, tuple)) and bool(x) and isinstance(x[0], (str, bytes))
