"""Image folders -> checked file lists -> ``tf.data`` pipelines.

Two layouts are accepted, as with ``flow_from_directory``::

    DATA/cat/*.jpg  DATA/dog/*.jpg                    (split here: stratified, seeded)
    DATA/train/cat/...  DATA/val/cat/...  [DATA/test/cat/...]   (already split)

Every file is decoded once by :func:`scan_folder` before training; unreadable
files are skipped and listed with their reason, so one bad file never crashes
an epoch. Data code builds no networks.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})
SPLIT_NAMES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
MAX_IMAGE_PIXELS = 64_000_000  # larger images are refused as likely decompression bombs


class DataError(ValueError):
    """A problem with the user's image folder, phrased so they can fix it."""


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
        splits: ``{"train"|"val"|"test": [(path, label), ...]}``.
        skipped: Files that could not be used, with reasons.
        presplit: Whether the folder came already split into train/val[/test].
    """

    root: str
    class_names: list[str]
    splits: dict[str, list[tuple[str, int]]]
    skipped: list[Skipped] = field(default_factory=list)
    presplit: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def binary(self) -> bool:
        return self.num_classes == 2

    def counts(self, split: str) -> list[int]:
        """Images per class in ``split``."""
        counts = [0] * self.num_classes
        for _, label in self.splits.get(split, []):
            counts[label] += 1
        return counts

    def summary(self) -> str:
        parts = [f"{len(v)} {k}" for k, v in self.splits.items() if v]
        text = f"{self.num_classes} classes ({', '.join(self.class_names)}); " + ", ".join(parts)
        if self.skipped:
            text += f"; {len(self.skipped)} file(s) skipped"
        return text


def load_image(path: str | os.PathLike, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Decode one image to RGB ``uint8`` (H, W, 3), honouring EXIF rotation.

    Grayscale, palette, CMYK, 16-bit and RGBA images are converted to RGB
    (transparency is composited on white); animated GIFs give their first frame.
    ``size`` resizes (bilinear) to a square or ``(height, width)``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise DataError(
                    f"{img.width}x{img.height} pixels exceeds the {MAX_IMAGE_PIXELS:,}-pixel limit "
                    "(possible decompression bomb); downscale the file"
                )
            img.seek(0)
            img = ImageOps.exif_transpose(img)
            img = _to_rgb(img)
            if size is not None:
                h, w = (size, size) if isinstance(size, int) else size
                if img.size != (w, h):
                    img = img.resize((w, h), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        return Image.fromarray((arr / top * 255).round().astype(np.uint8)).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        return background
    return img.convert("RGB")


def check_image(path: str) -> str | None:
    """Decode ``path`` fully; return ``None`` if usable, else the reason it is not."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
        load_image(path)
        return None
    except DataError as err:
        return str(err)
    except Exception as err:  # PIL raises many types for corrupt data
        return f"cannot decode: {type(err).__name__}: {err}"


def _list_class_files(class_dir: Path, skipped: list[Skipped]) -> list[str]:
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if name.startswith("."):
                continue  # .DS_Store and friends
            if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append(Skipped(path, f"not an image extension ({', '.join(sorted(IMAGE_EXTENSIONS))})"))
                continue
            if not os.path.isfile(path):
                skipped.append(Skipped(path, "broken link or not a regular file"))
                continue
            files.append(path)
    return files


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
        for split, folder in presplit.items():
            extra = sorted({p.name for p in _class_dirs(folder)} - set(class_names))
            if extra:
                raise DataError(
                    f"{folder} has class folder(s) {extra} that {presplit['train']} lacks; every split must use the training classes"
                )
    else:
        class_names = [p.name for p in _class_dirs(root)]
        listed = {"all": {name: _list_class_files(root / name, skipped) for name in class_names}}
    _check_classes(root, class_names, listed)

    all_files = [f for per_class in listed.values() for files in per_class.values() for f in files]
    bad = dict(_check_all(all_files, workers, progress))
    skipped.extend(Skipped(path, reason) for path, reason in bad.items())
    good = {
        split: {name: [f for f in files if f not in bad] for name, files in per_class.items()}
        for split, per_class in listed.items()
    }
    first = "train" if presplit else "all"
    for name in class_names:
        if not good[first][name]:
            raise DataError(
                f"class folder {str(root / ('train' if presplit else '') / name)!r} has no readable image "
                f"({len(listed[first][name])} file(s) failed to decode); fix or remove it"
            )
    if presplit:
        splits = {
            split: [(f, i) for i, name in enumerate(class_names) for f in good[split][name]] for split in ("train", "val", "test")
            if split in good
        }
        splits.setdefault("test", [])
    else:
        splits = _stratified_split(root, class_names, good["all"], val_split, test_split, seed)
    return ImageFolder(str(root), class_names, splits, skipped, presplit=bool(presplit))


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
                f"class folder {str(root / ('train' if first == 'train' else '') / name)!r} has no image files "
                f"({', '.join(sorted(IMAGE_EXTENSIONS))}); add images or remove the folder"
            )


def _check_all(files: list[str], workers: int, progress: Callable[[int, int], None] | None):
    total = len(files)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, (path, reason) in enumerate(zip(files, pool.map(check_image, files)), start=1):
            if progress is not None:
                progress(done, total)
            if reason is not None:
                yield path, reason


def _stratified_split(
    root: Path, class_names: list[str], files: dict[str, list[str]], val: float, test: float, seed: int
) -> dict[str, list[tuple[str, int]]]:
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise DataError(f"val_split={val} and test_split={test} must be in [0, 1) and sum to less than 1")
    need = 1 + (val > 0) + (test > 0)
    rng = np.random.default_rng(seed)
    splits: dict[str, list[tuple[str, int]]] = {"train": [], "val": [], "test": []}
    for label, name in enumerate(class_names):
        paths = files[name]
        if len(paths) < need:
            raise DataError(
                f"class {name!r} has {len(paths)} readable image(s), too few to split into train/val/test "
                f"(needs {need}); add images to {str(root / name)!r} or pre-split the folder into train/ val/ test/"
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


def balanced_class_weights(counts: Sequence[int]) -> list[float]:
    """``n / (k * n_c)`` per class, as scikit-learn's ``class_weight="balanced"``."""
    counts = np.asarray(counts, dtype=np.float64)
    weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
    return weights.tolist()


def make_dataset(
    items: Sequence[tuple[str, int]],
    image_size: int,
    *,
    batch_size: int = 32,
    binary: bool = False,
    shuffle: bool = False,
    seed: int = 0,
    class_weights: Sequence[float] | None = None,
    cache: str | None = "memory",
    repeat: bool = False,
):
    """A batched ``tf.data.Dataset`` of ``(images, labels[, sample_weights])``.

    Images are RGB float32 in [0, 255] at ``image_size``; decoding runs in
    parallel and is cached (``"memory"``, a file path, or ``None``) so later
    epochs skip it. Labels are float 0/1 for ``binary``, else integers. Class
    weights become per-sample weights, which ``model.fit`` honours with tf.data.
    A file that fails to decode mid-run is dropped, never raised.
    """
    import tensorflow as tf

    paths = [p for p, _ in items]
    labels = np.asarray([label for _, label in items], dtype=np.float32 if binary else np.int32)
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))

    def decode(path, label):
        image = tf.numpy_function(
            lambda p: load_image(p.decode("utf-8"), image_size), [path], tf.uint8, stateful=False
        )
        image.set_shape((image_size, image_size, 3))
        return image, label

    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
    if cache == "memory":
        ds = ds.cache()
    elif cache:
        ds = ds.cache(str(cache))
    if shuffle:
        ds = ds.shuffle(min(len(paths), 10_000), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    if class_weights is not None:
        table = tf.constant(np.asarray(class_weights, np.float32))

        def to_float(image, label):
            weight = tf.gather(table, tf.cast(label, tf.int32))
            return tf.cast(image, tf.float32), label, weight
    else:
        def to_float(image, label):
            return tf.cast(image, tf.float32), label

    ds = ds.batch(batch_size).map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def load_images(paths: Sequence[str], image_size: int) -> np.ndarray:
    """Decode a list of files to a float32 batch (for ``predict``)."""
    return np.stack([load_image(p, image_size) for p in paths]).astype(np.float32)
