"""Seconds per head epoch: the seed 002 recipe (frozen base run live every epoch) against finetune's cached head phase.

Side by side in one run, on the same ELPV split (1,771 train / 197 val at 224x224,
4 classes), the same backbone (offline EfficientNet-Lite0, frozen), the same head
(``HeadConfig(hidden=[256], dropout=0.5)``: dropout, Dense 256, dropout, softmax),
the same optimizer (Adam 1e-3), batch 32 and number of head epochs:

  seed    seed 002 as written, in Keras 3: one ``Sequential`` holding the seed
          augmentation (finetune's ``seed`` preset = its ``ImageDataGenerator``
          ranges), the scaling and the frozen base; ``image_dataset_from_directory``
          (files decoded every epoch, like ``flow_from_directory``); ``model.fit``
          with ``validation_data`` every epoch;
  cached  ``finetune.fine_tune(..., head_epochs=N, tune_epochs=0, cache_features=True)``:
          the base runs once per image (train and val) and the head trains on the
          features; the one-time scan and extraction are reported separately and
          amortized over the N epochs. No augmentation reaches the head unless
          ``--variants K`` (K extra augmented copies of the features).

Each runs in its own subprocess (peak RSS reported). An epoch's seconds include its
validation pass. The per-epoch figure is the median of epochs 2..N (epoch 1 also
traces the graphs); the last line printed is the headline::

    flock /tmp/finetune-cpu.lock nice -n 5 .venv/bin/python bench/seed_recipe.py --epochs 5
    .venv/bin/python bench/seed_recipe.py --quick     # smoke test: 96 train / 64 val images, 2 epochs
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import OUT, WallClock, child_main, elpv_split, in_child, machine, median, subset_folder  # noqa: E402


def run_seed(root: str, epochs: int) -> dict:
    import finetune  # noqa: F401  (quiet TensorFlow import)
    import keras

    from bench.common import seed_datasets, seed_model

    start = time.perf_counter()
    train, val, _ = seed_datasets(root)
    model, _ = seed_model(len(train.class_names))
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    rows: list[dict] = []
    model.fit(train, validation_data=val, epochs=epochs, callbacks=[WallClock(start, rows, "head")], verbose=0)
    return {"rows": rows, "total": time.perf_counter() - start}


def run_cached(root: str, epochs: int, variants: int) -> dict:
    os.environ["FINETUNE_CACHE_DIR"] = tempfile.mkdtemp(prefix="finetune-bench-cache-")  # cold: extraction is measured
    import finetune

    from bench.common import WallClock as Clock

    start = time.perf_counter()
    rows: list[dict] = []
    result = finetune.fine_tune(
        root, head_epochs=epochs, tune_epochs=0, cache_features=True, cache_variants=variants,
        hidden=[256], dropout=0.5, augment="seed", patience=0, verbose=0, callbacks=[Clock(start, rows, "head")],
    )
    return {"rows": rows, "history": result.history, "timings": result.timings, "total": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="head epochs of each method [5]")
    parser.add_argument("--variants", type=int, default=0, help="augmented feature copies for the cached run [0]")
    parser.add_argument("--data", default=None, help="pre-split folder [bench/out/elpv-split, written from elpv-dataset]")
    parser.add_argument("--quick", action="store_true", help="smoke test: 96 train / 64 val images, 2 epochs")
    args = parser.parse_args()

    root = Path(args.data) if args.data else elpv_split()
    if args.quick:
        root = subset_folder(root, OUT / "elpv-quick", {"train": 96, "val": 64})
        args.epochs = 2
    counts = {s: sum(1 for _ in (root / s).rglob("*.png")) for s in ("train", "val")}
    print(f"machine: {machine()}")
    print(f"data: {root} ({counts['train']} train / {counts['val']} val), efficientnet_lite0 224x224, batch 32, "
          f"{args.epochs} head epochs each, Adam 1e-3, head dropout-256-dropout-softmax")

    seed = in_child(__file__, "seed", {"root": str(root), "epochs": args.epochs})
    cached = in_child(__file__, "cached", {"root": str(root), "epochs": args.epochs, "variants": args.variants})

    def steady(rows):  # median of epochs 2..N (epoch 1 traces); all epochs if only one
        return median([r["seconds"] for r in rows[1:]] or [r["seconds"] for r in rows])

    s_epoch, c_epoch = steady(seed["rows"]), steady(cached["rows"])
    timings = cached["timings"]
    one_time = timings.get("features", 0.0)
    c_amortized = (one_time + sum(r["seconds"] for r in cached["rows"])) / len(cached["rows"])
    s_mean = sum(r["seconds"] for r in seed["rows"]) / len(seed["rows"])
    for name, run in (("seed", seed), ("cached", cached)):
        print(f"{name:>7}: " + ", ".join(f"e{r['epoch']} {r['seconds']:.2f}s val {r['val_accuracy']:.3f}" for r in run["rows"])
              + f"  | whole run {run['total']:.1f}s, peak RSS {run['peak_rss_mb']:.0f} MB")
    print(f"cached one-time costs: scan_folder {timings.get('scan', 0):.1f}s (decodes every file once), "
          f"feature extraction {one_time:.1f}s ({counts['train']} train x {1 + args.variants} + {counts['val']} val images)")
    s_val, c_val = seed["rows"][-1]["val_accuracy"], cached["rows"][-1]["val_accuracy"]
    print(f"final val accuracy: seed {s_val:.2%}, cached {c_val:.2%} ({(c_val - s_val) * 100:+.1f} points; "
          f"best seed {max(r['val_accuracy'] for r in seed['rows']):.2%}, best cached "
          f"{max(r['val_accuracy'] for r in cached['rows']):.2%}); cached head saw "
          + ("no augmentation" if not args.variants else f"{args.variants} augmented copies"))
    print(f"per head epoch incl. epoch 1 (mean): seed {s_mean:.2f}s; cached with extraction amortized over "
          f"{len(cached['rows'])} epochs: {c_amortized:.2f}s/epoch -> {s_mean / c_amortized:.1f}x")
    print(f"cached head epoch speed-up: {s_epoch / c_epoch:.0f}x (seed recipe {s_epoch:.1f} s/epoch, cached {c_epoch:.2f} s/epoch)")


if __name__ == "__main__":
    if not child_main({"seed": run_seed, "cached": run_cached}):
        main()
