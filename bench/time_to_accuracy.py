"""Wall time to the seed recipe's accuracy: seed 002 (10 frozen + 5 unfrozen epochs) against finetune's defaults.

On the same ELPV split (1,771 train / 197 val / 656 test, 4 classes, 224x224),
offline EfficientNet-Lite0, each in its own subprocess:

  seed      seed 002 as written, in Keras 3 (see ``bench/common.seed_model``):
            the seed augmentation and the frozen base inside one ``Sequential``,
            files decoded every epoch, ``model.fit`` 10 epochs at Adam 1e-3; then
            the base unfrozen from the backbone's top unfreeze point
            (``block6a_expand_conv``, the Lite0 counterpart of ``block5_conv1``),
            recompiled at Adam 1e-5, 5 more epochs;
  finetune  ``finetune.fine_tune(folder)`` with every ``TrainConfig`` default
            (20 head epochs on cached features, up to 5 unfrozen epochs at lr/100,
            early stopping with best weights restored), cold feature cache.

The target is the seed recipe's final val accuracy. finetune's time to it is the
wall time from the ``fine_tune`` call (scan, model build, feature extraction
included) to the end of the first epoch whose val accuracy reaches it. Test
accuracy of each final model is reported too (evaluation time not counted). The
last line printed is the headline ratio::

    flock /tmp/finetune-cpu.lock nice -n 5 .venv/bin/python bench/time_to_accuracy.py
    .venv/bin/python bench/time_to_accuracy.py --quick     # smoke test: tiny subset, 1+1 / 2+1 epochs
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import OUT, WallClock, child_main, elpv_split, in_child, machine, subset_folder  # noqa: E402

#: Measured by hand before on this split (not re-run here).
FASTAI = {"test_accuracy": 0.723, "seconds": 1194}
BY_HAND = {"seed_seconds": 544, "seed_test_accuracy": 0.721}


def run_seed(root: str, frozen_epochs: int, tune_epochs: int) -> dict:
    import finetune
    import keras
    import numpy as np

    from bench.common import seed_datasets, seed_model, unfreeze_as_seed

    start = time.perf_counter()
    train, val, test = seed_datasets(root)
    model, base = seed_model(len(train.class_names))
    rows: list[dict] = []
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train, validation_data=val, epochs=frozen_epochs, callbacks=[WallClock(start, rows, "head")], verbose=0)
    first = finetune.get_backbone("efficientnet_lite0").default_unfreeze
    trainable = unfreeze_as_seed(base, first)
    model.compile(keras.optimizers.Adam(1e-5), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train, validation_data=val, epochs=tune_epochs, callbacks=[WallClock(start, rows, "tune")], verbose=0)
    total = time.perf_counter() - start
    t = time.perf_counter()
    labels = np.concatenate([y.numpy() for _, y in test])
    probs = model.predict(test, verbose=0)
    test_acc = float(np.mean(np.argmax(probs, axis=1) == labels))
    return {"rows": rows, "total": total, "test_accuracy": test_acc, "eval_seconds": time.perf_counter() - t,
            "unfrozen_from": first, "unfrozen_layers": trainable}


def run_finetune(root: str, overrides: dict) -> dict:
    os.environ["FINETUNE_CACHE_DIR"] = tempfile.mkdtemp(prefix="finetune-bench-cache-")  # cold: extraction is measured
    import finetune

    start = time.perf_counter()
    rows: list[dict] = []
    result = finetune.fine_tune(root, verbose=0, callbacks=[WallClock(start, rows)], **overrides)
    total = time.perf_counter() - start
    for row, logged in zip(rows, result.history):
        row["phase"] = logged["phase"]
    t = time.perf_counter()
    metrics = finetune.evaluate_split(result.model, result.folder.splits["test"], result.class_names, result.parts.image_size)
    return {"rows": rows, "total": total, "timings": result.timings, "test_accuracy": metrics["accuracy"],
            "eval_seconds": time.perf_counter() - t, "kept_phase1": result.kept_phase1,
            "config": {k: v for k, v in result.config.to_dict().items() if k in ("head_epochs", "tune_epochs", "augment", "patience", "unfreeze_from", "lr")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="pre-split folder [bench/out/elpv-split, written from elpv-dataset]")
    parser.add_argument("--quick", action="store_true", help="smoke test: 96/64/64 images, seed 1+1, finetune 2+1 epochs")
    args = parser.parse_args()

    root = Path(args.data) if args.data else elpv_split()
    seed_epochs, overrides = (10, 5), {}
    if args.quick:
        root = subset_folder(root, OUT / "elpv-quick", {"train": 96, "val": 64, "test": 64})
        seed_epochs, overrides = (1, 1), {"head_epochs": 2, "tune_epochs": 1}
    counts = {s: sum(1 for _ in (root / s).rglob("*.png")) for s in ("train", "val", "test")}
    print(f"machine: {machine()}")
    print(f"data: {root} ({counts['train']} train / {counts['val']} val / {counts['test']} test), efficientnet_lite0 224x224")

    seed = in_child(__file__, "seed", {"root": str(root), "frozen_epochs": seed_epochs[0], "tune_epochs": seed_epochs[1]})
    ft = in_child(__file__, "finetune", {"root": str(root), "overrides": overrides})

    def show(name, run):
        print(f"{name:>8}: " + ", ".join(f"{r['phase'][0]}{r['epoch']} {r['val_accuracy']:.3f}@{r['wall']:.0f}s" for r in run["rows"]))
        print(f"{'':>8}  total {run['total']:.0f}s, test accuracy {run['test_accuracy']:.2%} "
              f"(evaluation {run['eval_seconds']:.0f}s, not counted), peak RSS {run['peak_rss_mb']:.0f} MB")

    show("seed", seed)
    show("finetune", ft)
    t = ft["timings"]
    print(f"finetune timings: scan {t.get('scan', 0):.0f}s, features {t.get('features', 0):.0f}s, "
          f"head phase {t.get('head', 0):.0f}s (features included), tune phase {t.get('tune', 0):.0f}s; "
          f"config {ft['config']}; phase 1 kept: {ft['kept_phase1']}")
    target = seed["rows"][-1]["val_accuracy"]
    hit = next((r for r in ft["rows"] if r["val_accuracy"] >= target - 1e-9), None)
    print(f"seed recipe: {seed['total']:.0f}s to val {target:.2%} (test {seed['test_accuracy']:.2%}); "
          f"by hand before: {BY_HAND['seed_seconds']}s, test {BY_HAND['seed_test_accuracy']:.1%}")
    print(f"fastai fine_tune (by hand, not re-run): {FASTAI['seconds']}s, test {FASTAI['test_accuracy']:.1%}; "
          f"finetune default: {ft['total']:.0f}s, test {ft['test_accuracy']:.2%}")
    if hit is None:
        best = max(ft["rows"], key=lambda r: r["val_accuracy"])
        print(f"finetune never reached val {target:.2%} (best {best['val_accuracy']:.2%} at {best['wall']:.0f}s)")
        print(f"time to the seed recipe's accuracy: not reached (finetune whole run {ft['total'] / seed['total']:.2f}x the seed's time)")
        return
    print(f"finetune reached val {hit['val_accuracy']:.2%} >= {target:.2%} after {hit['phase']} epoch {hit['epoch']}, "
          f"at {hit['wall']:.0f}s")
    print(f"time to the seed recipe's accuracy: {hit['wall'] / seed['total']:.3f}x "
          f"(finetune {hit['wall']:.0f}s, seed recipe {seed['total']:.0f}s, val {target:.2%})")


if __name__ == "__main__":
    if not child_main({"seed": run_seed, "finetune": run_finetune}):
        main()
