"""Image folders -> checked, stratified file lists.

Two layouts are accepted, as with ``flow_from_directory``::

    DATA/cat/*.jpg  DATA/dog/*.jpg                    (split here: stratified, seeded)
    DATA/train/cat/...  DATA/val/cat/...  [DATA/test/cat/...]   (already split)

Every file is decoded once by :func:`scan_folder` before training; unreadable
files are skipped and listed with their reason, so one bad file never crashes
an epoch. Data code builds no networks.

What happens to unusual input:

* used (converted to RGB): grayscale, palette (transparency on white), RGBA,
  CMYK, 16-bit, animated GIF (first frame), EXIF-rotated JPEG (rotated
  upright), tiny images, symlinks to images, images in nested subfolders of a
  class folder, unicode and spaces in names;
* skipped with a reason (``ImageFolder.skipped``): empty, truncated or corrupt
  files (including a PNG chunk with a bad CRC), text named ``.jpg``, images
  over :data:`MAX_IMAGE_PIXELS` (decompression bombs, refused before decoding),
  other extensions, broken or looping links, symlinked folders (not followed);
* ignored: hidden files and folders (``.DS_Store``);
* :class:`DataError` before training: a missing or empty class folder, a single
  class, a class too small to split, a pre-split folder whose ``val/`` or
  ``test/`` lacks a training class or has an extra one.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .images import IMAGE_EXTENSIONS, DataError, check_image

SPLIT_NAMES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


@dataclass(frozen=True)
class Skipped:
    """A file left out of training, and why."""

    path: str
    reason: str


@dataclass
class ImageFolder:
    """The result of scanning a dataset folder.

    Attributes:
        root: The folder that was scanned.
        class_names: Sorted class folder names; label ``i`` is ``class_names[i]``.
        splits: ``{"train"|"val"|"test": [(path, label), ...]}``; a label is a class
            index, or for ``multi_label`` a tuple of 0/1 flags, one per class.
        skipped: Files that could not be used, with reasons.
        presplit: Whether the folder came already split into train/val[/test].
        multi_label: Whether an image may carry several labels (a CSV with several in a cell).
        kind: ``"image"`` (sources are files) or ``"text"`` (sources are the texts themselves).
    """

    root: str
    class_names: list[str]
    splits: dict[str, list[tuple[str, Any]]]
    skipped: list[Skipped] = field(default_factory=list)
    presplit: bool = False
    multi_label: bool = False
    kind: str = "image"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def binary(self) -> bool:
        """Two mutually exclusive classes (one sigmoid unit); a 2-label multi-label task is not binary."""
        return self.num_classes == 2 and not self.multi_label

    def counts(self, split: str) -> list[int]:
        """Images per class in ``split`` (for multi-label: images carrying each label)."""
        counts = [0] * self.num_classes
        for _, label in self.splits.get(split, []):
            if self.multi_label:
                counts = [c + int(flag) for c, flag in zip(counts, label)]
            else:
                counts[label] += 1
        return counts

    def summary(self) -> str:
        parts = [f"{len(v)} {k}" for k, v in self.splits.items() if v]
        kind = f"labels, several per {self.kind}" if self.multi_label else "classes"
        text = f"{self.num_classes} {kind} ({', '.join(self.class_names)}); " + ", ".join(parts)
        if self.skipped:
            text += f"; {len(self.skipped)} file(s) skipped"
        return text


def _list_class_files(class_dir: Path, skipped: list[Skipped]) -> list[str]:
    """Image files under ``class_dir``, nested subfolders included; linked folders are not followed."""
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            skipped.append(Skipped(os.path.join(dirpath, name), "symlinked folder, not followed (avoids link loops)"))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if name.startswith("."):
                continue  # .DS_Store and friends
            if not _utf8(path):
                skipped.append(Skipped(path.encode("utf-8", "replace").decode("utf-8"),
                                       "file name is not valid UTF-8; rename the file"))
                continue
            if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append(Skipped(path, f"not an image extension ({', '.join(sorted(IMAGE_EXTENSIONS))})"))
                continue
            if not os.path.isfile(path):
                skipped.append(Skipped(path, "broken link or not a regular file"))
                continue
            files.append(path)
    return files


def _utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _find_presplit(root: Path) -> dict[str, Path] | None:
    subdirs = {p.name.lower(): p for p in _class_dirs(root)}
    found = {}
    for split, aliases in SPLIT_NAMES.items():
        for alias in aliases:
            if alias in subdirs:
                found[split] = subdirs[alias]
                break
    if "train" in found and "val" in found:
        return found
    return None


def scan_folder(
    root: str | os.PathLike,
    *,
    val_split: float = 0.1,
    test_split: float = 0.1,
    seed: int = 0,
    workers: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> ImageFolder:
    """Scan, check and split an image folder.

    Args:
        root: A folder with one subfolder per class, or with ``train/`` and
            ``val/`` (and optionally ``test/``) subfolders that each hold class folders.
        val_split, test_split: Fractions per class for a folder that is not pre-split.
        seed: Seed of the stratified split.
        workers: Threads decoding images during the check.
        progress: Called as ``progress(done, total)`` while files are checked.

    Raises:
        DataError: missing or empty folder, fewer than two classes, a class with
            no readable image, or too few images to split.

    Example:
        >>> folder = scan_folder("flowers/")            # doctest: +SKIP
        >>> folder.class_names, len(folder.splits["train"])  # doctest: +SKIP
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"data folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise DataError(f"{str(root)!r} is a file; pass a folder with one subfolder per class")
    presplit = _find_presplit(root)
    skipped: list[Skipped] = []
    if presplit:
        class_names = [p.name for p in _class_dirs(presplit["train"])]
        listed = {
            split: {name: _list_class_files(folder / name, skipped) if (folder / name).is_dir() else [] for name in class_names}
            for split, folder in presplit.items()
        }
    else:
        class_names = [p.name for p in _class_dirs(root)]
        listed = {"all": {name: _list_class_files(root / name, skipped) for name in class_names}}
        skipped.extend(
            Skipped(str(p), "image outside any class folder; move it into a class subfolder")
            for p in sorted(root.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
    _check_classes(presplit["train"] if presplit else root, class_names, listed)
    if presplit:
        _check_split_classes(presplit, class_names)

    all_files = [f for per_class in listed.values() for files in per_class.values() for f in files]
    bad = dict(_check_all(all_files, workers, progress))
    skipped.extend(Skipped(path, reason) for path, reason in bad.items())
    good = {
        split: {name: [f for f in files if f not in bad] for name, files in per_class.items()}
        for split, per_class in listed.items()
    }
    for split, per_class in listed.items():
        for name in class_names:
            _require_readable(Path(presplit[split] if presplit else root) / name, per_class[name], bad)
    if presplit:
        splits = {
            split: [(f, i) for i, name in enumerate(class_names) for f in good[split][name]] for split in ("train", "val", "test")
            if split in good
        }
        splits.setdefault("test", [])
    else:
        splits = _stratified_split(root, class_names, good["all"], val_split, test_split, seed)
    return ImageFolder(str(root), class_names, splits, skipped, presplit=bool(presplit))


def _require_readable(class_dir: Path, files: list[str], bad: dict[str, str]) -> None:
    """Raise unless at least one of a class folder's files decoded."""
    if not files:
        raise DataError(
            f"class folder {str(class_dir)!r} has no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
            "add images or remove the folder"
        )
    if all(f in bad for f in files):
        raise DataError(
            f"class folder {str(class_dir)!r} has no readable image ({len(files)} file(s) failed to decode, "
            f"e.g. {os.path.basename(files[0])}: {bad[files[0]]}); fix or remove it"
        )


def _check_split_classes(presplit: dict[str, Path], class_names: list[str]) -> None:
    """Every split of a pre-split folder must hold exactly the training classes."""
    train = presplit["train"]
    for split, folder in presplit.items():
        found = {p.name for p in _class_dirs(folder)}
        extra = sorted(found - set(class_names))
        missing = sorted(set(class_names) - found)
        if extra:
            raise DataError(
                f"{folder} has class folder(s) {extra} that {train} lacks; every split must use the training classes"
            )
        if missing:
            raise DataError(
                f"{folder} lacks class folder(s) {missing} that {train} has; every split needs images of every "
                f"class: move some into {folder / missing[0]}/"
            )


def _check_classes(root: Path, class_names: list[str], listed: dict) -> None:
    if not class_names:
        raise DataError(
            f"{str(root)!r} has no class subfolders; put images in one subfolder per class, e.g. {root}/cats/1.jpg"
        )
    if len(class_names) < 2:
        raise DataError(
            f"{str(root)!r} has a single class ({class_names[0]!r}); a classifier needs at least two class folders"
        )
    first = "train" if "train" in listed else "all"
    for name in class_names:
        if not listed[first][name]:
            raise DataError(
                f"class folder {str(root / name)!r} has no image files "
                f"({', '.join(sorted(IMAGE_EXTENSIONS))}); add images or remove the folder"
            )


def _check_all(files: list[str], workers: int, progress: Callable[[int, int], None] | None, chunk: int = 512):
    """Yield ``(path, reason)`` for unusable files; at most ``chunk`` checks are queued at once."""
    total = len(files)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, total, chunk):
            part = files[start:start + chunk]
            for done, (path, reason) in enumerate(zip(part, pool.map(check_image, part)), start=start + 1):
                if progress is not None:
                    progress(done, total)
                if reason is not None:
                    yield path, reason


def check_fractions(val: float, test: float) -> None:
    """Raise :class:`DataError` unless the validation and test fractions are in [0, 1) and sum to less than 1."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise DataError(f"val_split={val} and test_split={test} must be in [0, 1) and sum to less than 1")


def _stratified_split(
    root: Path, class_names: list[str], files: dict[str, list[str]], val: float, test: float, seed: int
) -> dict[str, list[tuple[str, int]]]:
    check_fractions(val, test)
    need = 1 + (val > 0) + (test > 0)
    rng = np.random.default_rng(seed)
    splits: dict[str, list[tuple[str, int]]] = {"train": [], "val": [], "test": []}
    for label, name in enumerate(class_names):
        paths = files[name]
        if len(paths) < need:
            raise DataError(
                f"class {name!r} has {len(paths)} readable image(s), too few to split into train/val/test "
                f"(needs {need}); add images to {str(root / name)!r}, pre-split the folder into train/ val/ test/, "
                "or set val_split and test_split to 0 (--val-split 0 --test-split 0)"
            )
        order = rng.permutation(len(paths))
        n_val = max(1, round(len(paths) * val)) if val > 0 else 0
        n_test = max(1, round(len(paths) * test)) if test > 0 else 0
        n_val, n_test = min(n_val, len(paths) - need + 1), min(n_test, len(paths) - n_val - 1)
        picked = [paths[i] for i in order]
        splits["test"] += [(p, label) for p in picked[:n_test]]
        splits["val"] += [(p, label) for p in picked[n_test:n_test + n_val]]
        splits["train"] += [(p, label) for p in picked[n_test + n_val:]]
    return splits
