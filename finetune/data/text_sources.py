"""Labelled texts from a CSV (``text,label[,split]``), a folder of ``.txt`` files per class, or Python lists.

Each becomes the same :class:`~finetune.data.scan.ImageFolder` value as images do
(``kind="text"``; an example's source is its text), so splits, class counts,
multi-label tasks, the run folder and the report work unchanged. Bytes that are
not UTF-8 are decoded with replacement characters and counted; empty texts are
skipped with their row or file named.

Example:
    >>> data = from_texts(["good tea", "bad tea", "great tea", "awful tea"] * 5, ["pos", "neg"] * 10,
    ...                   val_split=0.2, test_split=0)
    >>> data.kind, data.class_names, len(data.splits["train"]), len(data.splits["val"])
    ('text', ['neg', 'pos'], 16, 4)
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DataError
from .scan import ImageFolder, Skipped
from .sources import _folder, _multi_label_folder, label_separator
from .text import check_texts


def is_text_csv(path: str | os.PathLike) -> bool:
    """Whether a CSV's header names a ``text`` column (a text task) rather than ``path`` (images)."""
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as file:
            header = next(csv.reader(file), [])
    except OSError:
        return False
    return "text" in [c.strip().lower() for c in header]


def is_text_folder(path: str | os.PathLike) -> bool:
    """Whether a folder's class subfolders hold ``.txt`` files (``keras.utils.text_dataset_from_directory``)."""
    root = Path(path)
    if not root.is_dir():
        return False
    return any(f.suffix.lower() == ".txt" for d in root.iterdir() if d.is_dir() for f in d.iterdir())


def _decode(raw: bytes) -> tuple[str, int]:
    text = raw.decode("utf-8", errors="replace")
    return text, text.count("\ufffd") - raw.decode("utf-8", errors="ignore").count("\ufffd")


def from_text_csv(path: str | os.PathLike, *, val_split: float = 0.1, test_split: float = 0.1,
                  seed: int = 0) -> ImageFolder:
    """A CSV with columns ``text,label`` (and optionally ``split``); several labels in a cell make a multi-label task.

    Raises:
        DataError: no ``text``/``label`` header, an unknown split, fewer than two classes, no usable text.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV file {str(path)!r} does not exist")
    text, replaced = _decode(path.read_bytes())
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    columns = [c.strip().lower() for c in reader.fieldnames or []]
    if "text" not in columns or "label" not in columns:
        raise DataError(f"{path}: the first line must name the columns text,label[,split]; found {columns or 'none'}")
    rows = [{k.strip().lower(): (v or "") for k, v in row.items() if k} for row in reader]
    if replaced:
        warnings.warn(f"{path.name}: {replaced} byte sequence(s) are not UTF-8 and were read as U+FFFD; save the file "
                      "as UTF-8 to keep those characters", UserWarning, stacklevel=2)
    records, skipped = [], []
    texts, bad = check_texts([row["text"] for row in rows], str(path))
    unusable = dict(bad)
    for line, (row, body) in enumerate(zip(rows, texts), start=2):
        label, split = row["label"].strip(), row.get("split", "").strip().lower()
        if line - 2 in unusable or not label:
            skipped.append(Skipped(f"{path}:{line}", unusable.get(line - 2, "empty label")))
            continue
        if split and split not in ("train", "val", "test"):
            raise DataError(f"{path}:{line}: split {split!r} must be train, val or test (or empty)")
        records.append((body, label, split))
    return _labelled(str(path), records, skipped, val_split, test_split, seed)


def from_text_folder(root: str | os.PathLike, *, val_split: float = 0.1, test_split: float = 0.1,
                     seed: int = 0) -> ImageFolder:
    """``root/<class>/*.txt``, one text per file (the layout of ``keras.utils.text_dataset_from_directory``)."""
    root = Path(root)
    records, skipped, replaced = [], [], 0
    for class_dir in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        for file in sorted(class_dir.rglob("*.txt")):
            body, bad_bytes = _decode(file.read_bytes())
            replaced += bad_bytes
            if not body.strip():
                skipped.append(Skipped(str(file), "empty text"))
                continue
            records.append((body, class_dir.name, ""))
    if replaced:
        warnings.warn(f"{root}: {replaced} byte sequence(s) are not UTF-8 and were read as U+FFFD", UserWarning,
                      stacklevel=2)
    return _labelled(str(root), records, skipped, val_split, test_split, seed)


def from_texts(texts: Any, labels: Any, *, validation_data: tuple | None = None, val_split: float = 0.1,
               test_split: float = 0.1, seed: int = 0) -> ImageFolder:
    """Texts (a list, a NumPy or pandas column) and their labels; ``validation_data=(texts, labels)`` as ``fit``."""
    parts = [("", texts, labels)] + ([("val", *validation_data)] if validation_data is not None else [])
    records, skipped = [], []
    for split, xs, ys in parts:
        xs, ys = list(_column(xs)), [str(y) for y in _column(ys)]
        if len(xs) != len(ys):
            raise DataError(f"{len(xs)} texts but {len(ys)} labels")
        good, bad = check_texts(xs, "texts")
        unusable = dict(bad)
        for i, (body, label) in enumerate(zip(good, ys)):
            if i in unusable:
                skipped.append(Skipped(f"{split or 'texts'}[{i}]", unusable[i]))
            else:
                records.append((body, label, split))
    return _labelled("texts", records, skipped, 0 if validation_data is not None else val_split, test_split, seed)


def _column(values: Any) -> Sequence:
    if hasattr(values, "to_numpy"):
        values = values.to_numpy()
    values = np.asarray(values, dtype=object) if not isinstance(values, list) else values
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values]


def _labelled(root: str, records, skipped, val_split, test_split, seed) -> ImageFolder:
    separator = label_separator([label for _, label, _ in records])
    if separator == ";":
        data = _multi_label_folder(root, records, skipped, separator, val_split, test_split, seed)
    else:  # a space in a text's label is part of its name: only ';' separates several labels
        data = _folder(root, records, skipped, val_split, test_split, seed)
    data.kind = "text"
    return data
