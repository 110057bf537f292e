"""Phase 2 on live images vs on cached activations at the unfreeze point, side by side.

ELPV benchmark split (bench/common.py), offline EfficientNet-Lite0 at 224, batch 32,
phase 1 on cached features (20 epochs), then phase 2 from ``block6a`` and from
``block5a`` (tune lr 1e-4, no early stopping), each run in its own child process:

  live      phase 2 on images, the default ``light`` augmentation (today's default);
  cached    phase 2 on cached activations with K augmented copies (``--variants``, one
            copy per epoch), same augmentation preset;
  ceiling   the unfrozen top alone, fit on random activations of the cut's shape
            already in memory (no cache look-ups, no validation): the most a cache can give.

Reported per cut: seconds per phase-2 epoch (median of epochs 2..N, train step
and validation), the one-time cost of building the activation cache, the final
val accuracy and loss, and peak RSS. The headline (last line) is the per-epoch
speed-up of cached over live from block6a (goal >= 4x; ceiling about 4.5x)::

    flock /tmp/finetune-cpu.lock nice -n 5 .venv/bin/python bench/phase2.py
    .venv/bin/python bench/phase2.py --quick    # smoke: 160 train images, 2 epochs, block6a only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import child_main, elpv_split, in_child, machine, median, subset_folder  # noqa: E402

CUTS = {"block6a": "block6a_expand_conv", "block5a": "block5a_expand_conv"}


def run_phase2(data: str, cut: str, inputs: str, epochs: int, variants: int, seed: int, dtype: str) -> dict:
    import finetune

    result = finetune.fine_tune(
        data, head_epochs=20, tune_epochs=epochs, tune_lr=1e-4, patience=0, unfreeze_from=cut, seed=seed,
        augment="light", tune_inputs=inputs, cache_variants=variants if inputs == "activations" else 0,
        cache_dtype=dtype, verbose=0,
    )
    tune = [r for r in result.history if r["phase"] == "tune"]
    return {"epoch_s": [r["seconds"] for r in tune], "val_accuracy": tune[-1]["val_accuracy"],
            "val_loss": tune[-1]["val_loss"], "cache_s": result.timings.get("activations", 0.0),
            "tune_s": result.timings["tune"], "kept": result.kept_phase}


def run_ceiling(cut: str, n: int, epochs: int) -> dict:
    import keras
    import numpy as np

    import finetune
    from finetune.models.split import split_base

    parts = finetune.build_model("efficientnet_lite0", 4, augment="none", seed=0)
    finetune.UnfreezePolicy(from_layer=cut).apply(parts.base)
    split = split_base(parts.base, cut)
    inputs = [keras.Input(s) for s in split.shapes]
    top = keras.Model(inputs, parts.classifier(parts.pool(split.top(inputs[0] if len(inputs) == 1 else inputs,
                                                                     training=False))))
    top.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy", metrics=["accuracy"])
    import tensorflow as tf

    x = [tf.constant(np.random.rand(n, *s).astype("float32")) for s in split.shapes]
    y = tf.constant(np.random.randint(0, 4, n))
    def gather(indices):  # whole batches from tensors already in memory, as the cached phase reads them
        taken = [tf.gather(t, indices) for t in x]
        return (taken[0] if len(taken) == 1 else tuple(taken)), tf.gather(y, indices)

    data = tf.data.Dataset.range(n).batch(32).map(gather).cache()

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.start)

    seconds: list[float] = []
    top.fit(data, epochs=epochs, verbose=0, callbacks=[Clock()])
    return {"epoch_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="phase-2 epochs per run [4]")
    parser.add_argument("--variants", type=int, default=2, help="augmented copies in the activation cache [2]")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per configuration [1]")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--cuts", default=",".join(CUTS), help="which cuts [block6a,block5a]")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()

    root = elpv_split()
    cuts = {k: CUTS[k] for k in args.cuts.split(",")}
    if args.quick:
        root = subset_folder(root, root.parent / "elpv-phase2-quick", {"train": 160, "val": 40, "test": 40})
        cuts, args.epochs = {"block6a": CUTS["block6a"]}, 2
    print(f"# phase 2: live vs cached activations ({machine()}); data {root}")
    print(f"# {args.epochs} phase-2 epochs, {args.variants} cached copies, {args.seeds} seed(s), dtype {args.dtype}")
    n_train = sum(1 for _ in (root / "train").rglob("*.png"))
    speedups = {}
    for short, cut in cuts.items():
        rows = {}
        for inputs in ("images", "activations"):
            runs = [in_child(__file__, "phase2", dict(data=str(root), cut=cut, inputs=inputs, epochs=args.epochs,
                                                      variants=args.variants, seed=s, dtype=args.dtype))
                    for s in range(args.seeds)]
            per_epoch = median([e for r in runs for e in (r["epoch_s"][1:] or r["epoch_s"])])
            rows[inputs] = per_epoch
            accs = ", ".join(f"{r['val_accuracy']:.3f}" for r in runs)
            losses = ", ".join(f"{r['val_loss']:.3f}" for r in runs)
            print(f"{short:8s} {'live' if inputs == 'images' else 'cached':7s} epoch {per_epoch:6.1f} s  "
                  f"cache build {median([r['cache_s'] for r in runs]):6.1f} s  val acc {accs}  val loss {losses}  "
                  f"kept {', '.join(r['kept'] for r in runs)}  peak RSS {max(r['peak_rss_mb'] for r in runs):.0f} MB",
                  flush=True)
        ceiling = in_child(__file__, "ceiling", dict(cut=cut, n=n_train, epochs=max(2, args.epochs)))
        ceiling_s = median(ceiling["epoch_s"][1:])
        speedups[short] = rows["images"] / rows["activations"]
        print(f"{short:8s} ceiling epoch {ceiling_s:6.1f} s (top alone, in memory): at most "
              f"{rows['images'] / ceiling_s:.1f}x; cached reaches {speedups[short]:.1f}x", flush=True)
    first = next(iter(speedups))
    print(f"phase-2 epoch speed-up: {speedups[first]:.1f}x from {first} (cached activations vs live, "
          + ", ".join(f"{k} {v:.1f}x" for k, v in speedups.items()) + "; goal >= 4x from block6a)")


if __name__ == "__main__":
    if not child_main({"phase2": run_phase2, "ceiling": run_ceiling}):
        main()
