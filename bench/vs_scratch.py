"""finetune's defaults against a small CNN trained from scratch, on the same Fashion-MNIST subset.

Data (``make bench-data``): 5,000 Fashion-MNIST training images written once as class-folder PNGs,
``bench/out/fashion-5k/{train,val,test}/<class>/`` (4,000 / 500 / 500, stratified, seeded). For each
seed, in a child process of its own:

  finetune   ``finetune.fine_tune(folder)`` with its defaults (then test accuracy);
  scratch    three conv blocks (32-64-128 filters, BatchNorm, max-pool), global pooling, dropout 0.3,
             Dense(10); random flip/translation; Adam 1e-3, early stopping on val loss (patience 8,
             best weights), up to 60 epochs; the same train/val/test files.

The headline (last line) gives both accuracies and the wall-time ratio; the goal is finetune more
accurate on every seed, in at most 2x the scratch CNN's time::

    .venv/bin/python bench/vs_scratch.py              # 3 seeds
    .venv/bin/python bench/vs_scratch.py --quick      # 1 seed, small epochs (smoke)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

from bench.common import child_main, in_child, machine  # noqa: E402

DATA = ROOT / "bench" / "out" / "fashion-5k"
SIZES = {"train": 4000, "val": 500, "test": 500}


def write_folder(dest: Path = DATA) -> Path:
    """Write (once) the stratified 4,000 / 500 / 500 PNG subset of Fashion-MNIST's training set."""
    import numpy as np
    from PIL import Image

    from fashion_data import CLASS_NAMES, load_fashion_mnist

    marker = dest / ".complete"
    if marker.exists():
        return dest
    (x, y), _ = load_fashion_mnist()
    rng = np.random.default_rng(0)
    per_class = {split: n // 10 for split, n in SIZES.items()}
    for label, name in enumerate(CLASS_NAMES):
        picked = rng.permutation(np.flatnonzero(y == label))
        start = 0
        for split, n in per_class.items():
            folder = dest / split / f"{label}_{name.replace('/', '-').replace(' ', '_')}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in picked[start:start + n]:
                Image.fromarray(x[i]).save(folder / f"{i}.png")
            start += n
    marker.write_text("ok")
    return dest


def run_finetune(data: str, seed: int, quick: bool) -> dict:
    import finetune
    from finetune.runs import evaluate_split

    start = time.perf_counter()
    extra = {"head_epochs": 3, "tune_epochs": 1} if quick else {}
    result = finetune.fine_tune(data, seed=seed, verbose=0, **extra)
    metrics = evaluate_split(result.model, result.folder.splits["test"], result.class_names, result.parts.image_size,
                             resize=result.config.resize)
    return {"accuracy": metrics["accuracy"], "seconds": time.perf_counter() - start, "kept": result.kept_reason(),
            "notes": result.notes, "image_size": result.config.image_size}


def run_scratch(data: str, seed: int, quick: bool) -> dict:
    import keras
    import numpy as np

    from finetune.data import load_images, scan_folder

    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    folder = scan_folder(data, seed=seed)
    arrays = {s: (load_images([p for p, _ in items], 28)[..., :1], np.array([l for _, l in items]))
              for s, items in folder.splits.items()}
    layers = [keras.Input((28, 28, 1)), keras.layers.Rescaling(1 / 255), keras.layers.RandomFlip("horizontal"),
              keras.layers.RandomTranslation(0.1, 0.1)]
    for filters in (32, 64, 128):
        layers += [keras.layers.Conv2D(filters, 3, padding="same", use_bias=False), keras.layers.BatchNormalization(),
                   keras.layers.ReLU(), keras.layers.Conv2D(filters, 3, padding="same", activation="relu"),
                   keras.layers.MaxPooling2D()]
    layers += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dropout(0.3), keras.layers.Dense(10, "softmax")]
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(patience=8, restore_best_weights=True)
    model.fit(*arrays["train"], validation_data=arrays["val"], epochs=2 if quick else 60, batch_size=64,
              callbacks=[stop], verbose=0)
    accuracy = model.evaluate(*arrays["test"], verbose=0)[1]
    return {"accuracy": float(accuracy), "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    data = write_folder()
    print(f"# finetune defaults vs a CNN from scratch, Fashion-MNIST 4,000/500/500 ({machine()})", flush=True)
    rows = []
    for seed in seeds:
        ours = in_child(__file__, "finetune", dict(data=str(data), seed=seed, quick=args.quick))
        scratch = in_child(__file__, "scratch", dict(data=str(data), seed=seed, quick=args.quick))
        rows.append((ours, scratch))
        print(f"seed {seed}: finetune {ours['accuracy']:.2%} in {ours['seconds']:.0f} s (input {ours['image_size']}px; "
              f"{ours['kept']}) | scratch {scratch['accuracy']:.2%} in {scratch['seconds']:.0f} s", flush=True)
    wins = sum(o["accuracy"] > s["accuracy"] for o, s in rows)
    ratio = statistics.mean(o["seconds"] for o, _ in rows) / statistics.mean(s["seconds"] for _, s in rows)
    print(f"vs scratch: finetune {statistics.mean(o['accuracy'] for o, _ in rows):.2%} vs scratch "
          f"{statistics.mean(s['accuracy'] for _, s in rows):.2%} (mean of {len(rows)} seeds; finetune better on "
          f"{wins}/{len(rows)}), time ratio {ratio:.2f}x (goal: better on every seed, <= 2x)")


if __name__ == "__main__":
    if not child_main({"finetune": run_finetune, "scratch": run_scratch}):
        main()
