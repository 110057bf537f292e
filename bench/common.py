"""Shared helpers of the speed benchmarks: the ELPV split, the seed-002 port, timing, RSS, child processes.

The ELPV images (PyPI ``elpv-dataset``, 2,624 solar cells) are written once as a
pre-split folder ``train/ val/ test/<class>/`` of hard links to the package's
files (stratified, seeded): about 1,771 train / 197 val / 656 test. Every
benchmark reads the same split, so their numbers compare.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))  # the ELPV and Fashion-MNIST data readers
OUT = ROOT / "bench" / "out"  # git-ignored
SPLIT_DIR = OUT / "elpv-split"
TEST_FRACTION, VAL_FRACTION = 0.25, 0.10  # test: 25% of each class; val: 10% of the rest


# ---------------------------------------------------------------------------- data


def elpv_split(dest: str | Path = SPLIT_DIR, seed: int = 0) -> Path:
    """Write (once) the stratified ELPV split as ``dest/{train,val,test}/<class>/`` hard links; return ``dest``."""
    import numpy as np

    from elpv_demo import elpv_class, elpv_records, place_cell

    dest = Path(dest)
    records = elpv_records()
    marker = dest / f".complete-{len(records)}-{seed}"
    if marker.exists():
        return dest
    by_class: dict[str, list] = {}
    for path, probability, cell_type in records:
        by_class.setdefault(elpv_class(probability), []).append((path, cell_type))
    rng = np.random.default_rng(seed)
    for name in sorted(by_class):
        files = sorted(by_class[name])
        order = rng.permutation(len(files))
        n_test = round(len(files) * TEST_FRACTION)
        n_val = round((len(files) - n_test) * VAL_FRACTION)
        for rank, index in enumerate(order):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            path, cell_type = files[index]
            place_cell(path, cell_type, dest / split / name)
    marker.touch()
    return dest


def split_items(root: str | Path, split: str, limit: int | None = None) -> tuple[list[tuple[str, int]], list[str]]:
    """``([(path, label), ...], class_names)`` of one split, optionally the first ``limit`` of a seeded shuffle."""
    import numpy as np

    root = Path(root) / split
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    items = [(str(f), i) for i, n in enumerate(names) for f in sorted((root / n).glob("*.png"))]
    if limit is not None and limit < len(items):  # stratified: every class keeps at least one image
        rng, kept = np.random.default_rng(0), []
        for label in range(len(names)):
            mine = [item for item in items if item[1] == label]
            k = max(1, round(limit * len(mine) / len(items)))
            kept += [mine[i] for i in sorted(rng.permutation(len(mine))[:k])]
        items = kept
    return items, names


def subset_folder(root: str | Path, dest: str | Path, per_split: dict[str, int]) -> Path:
    """A smaller pre-split folder (hard links) with at most ``per_split[split]`` images per split (for --quick)."""
    dest = Path(dest)
    for split, limit in per_split.items():
        items, names = split_items(root, split, limit)
        for path, label in items:
            folder = dest / split / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / Path(path).name
            if not target.exists():
                os.link(path, target)
    return dest


# ---------------------------------------------------------------------------- the seed 002 recipe, in Keras 3


def seed_model(num_classes: int, image_size: int = 224, backbone: str = "efficientnet_lite0", seed: int = 0):
    """Seed 002 ported to Keras 3: one ``Sequential`` with the seed augmentation and the frozen base inside.

    ``ImageDataGenerator(rotation_range=40, ...)`` becomes finetune's ``seed``
    augmentation preset (the same ranges, as Keras layers); ``rescale=1/255``
    becomes the backbone's own scaling layer; VGG16 becomes the offline
    EfficientNet-Lite0 (no VGG16 weights offline). The head is finetune's
    default builder with ``hidden=[256], dropout=0.5`` (the same head as the
    cached runs it is compared with). The base is called as the seed calls it:
    no ``training=False``, so once unfrozen its BatchNormalization layers train.
    Returns ``(model, base)``.
    """
    import keras

    from finetune.data.augment import augmentation
    from finetune.models.backbones import get_backbone, preprocessing_layer
    from finetune.models.heads import HeadConfig, build_classifier

    keras.utils.set_random_seed(seed)
    spec = get_backbone(backbone)
    base = spec.build((image_size, image_size, 3), spec.resolve_weights("imagenet"))
    base.trainable = False  # conv_base.trainable = False
    layers = [keras.Input((image_size, image_size, 3)), augmentation("seed", seed=seed)]
    prep = preprocessing_layer(spec.preprocessing)
    if prep is not None:
        layers.append(prep)
    head = build_classifier(int(base.output.shape[-1]), num_classes, HeadConfig(hidden=[256], dropout=0.5))
    layers += [base, keras.layers.GlobalAveragePooling2D(), head]
    return keras.Sequential(layers, name="seed002"), base


def seed_datasets(root: str | Path, image_size: int = 224, batch_size: int = 32, seed: int = 0):
    """``flow_from_directory`` in Keras 3: files decoded every epoch, shuffled train, ordered val/test."""
    import keras

    def folder(split, shuffle):
        return keras.utils.image_dataset_from_directory(
            Path(root) / split, image_size=(image_size, image_size), batch_size=batch_size,
            label_mode="int", color_mode="rgb", shuffle=shuffle, seed=seed, verbose=False,
        )

    return folder("train", True), folder("val", False), (folder("test", False) if (Path(root) / "test").exists() else None)


def unfreeze_as_seed(base, first_layer: str) -> int:
    """``conv_base.trainable = True``, then every layer before ``first_layer`` frozen again; returns the count trainable."""
    base.trainable = True
    found = False
    for layer in base.layers:
        found = found or layer.name == first_layer
        layer.trainable = found
    if not found:
        raise ValueError(f"no layer {first_layer!r} in {base.name}")
    return sum(1 for layer in base.layers if layer.trainable and layer.weights)


# ---------------------------------------------------------------------------- timing, memory, machine


class WallClock:
    """A Keras callback recording, per epoch, its seconds and the wall time since ``start``, with the logs."""

    def __new__(cls, start: float, rows: list[dict[str, Any]], phase: str = ""):
        import keras

        class _WallClock(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                now = time.perf_counter()
                row = {"phase": phase, "epoch": len(rows) + 1, "seconds": now - self._t, "wall": now - start}
                row.update({k: float(v) for k, v in (logs or {}).items()})
                rows.append(row)

        return _WallClock()


def rss_mb(field: str = "VmRSS") -> float:
    """Current (``VmRSS``) or peak (``VmHWM``) resident memory of this process, in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def machine() -> str:
    """One line: CPU, cores, GPU or not, versions, date."""
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return (f"{cpu}, {os.cpu_count()} cores, {'GPU: ' + str(len(gpus)) if gpus else 'no GPU'}; "
            f"Keras {keras.__version__} / TensorFlow {tf.__version__}, Python {platform.python_version()}; "
            f"{datetime.date.today().isoformat()}")


def median(values: list[float]) -> float:
    import statistics

    return statistics.median(values) if values else float("nan")


def in_child(script: str, name: str, args: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
    """Run ``script --child NAME --child-args JSON`` in a fresh interpreter; return the JSON it prints last."""
    cmd = [sys.executable, script, "--child", name, "--child-args", json.dumps(args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise RuntimeError(f"child {name} failed (exit {proc.returncode})")
    return json.loads(lines[-1])


def child_main(measurements: dict[str, Callable[..., dict[str, Any]]]) -> bool:
    """If this process is a ``--child``, run the measurement, print its JSON and return True."""
    if "--child" not in sys.argv:
        return False
    name = sys.argv[sys.argv.index("--child") + 1]
    args = json.loads(sys.argv[sys.argv.index("--child-args") + 1])
    result = measurements[name](**args)
    result["peak_rss_mb"] = rss_mb("VmHWM")
    print(json.dumps(result), flush=True)
    return True
