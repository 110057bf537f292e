"""Images/s through finetune's real input pipeline against the same compute on tensors already in memory.

Offline EfficientNet-Lite0 at 224x224 on ELPV images (the benchmark split), four
measurements, each in its own subprocess (peak RSS reported):

  fit_pipeline    phase-2 training: base unfrozen from its top unfreeze point
                  (BatchNormalization frozen), default ``light`` augmentation,
                  Adam 1e-5, ``model.fit`` on ``make_dataset(files, shuffle=True)``
                  (decoded once, then cached in memory, as phase 2 runs);
  fit_memory      the same model and ``model.fit``, on a ``from_tensor_slices``
                  dataset of images preloaded as float32 arrays;
  predict_pipeline  ``model.predict`` on ``make_dataset(files, cache=None)``, the
                  path ``finetune evaluate`` / ``predict`` take (decode every call);
  predict_command the ``finetune predict RUN FILES --csv OUT`` command end to end
                  (files in, CSV out; model load included, and timed on its own);
  predict_bare    ``model(x, training=False)`` in a ``tf.function`` over in-memory
                  float32 batches of 32.

One warm-up pass each (tracing, cache fill), then ``--repeats`` timed passes; on a
shared machine other jobs only add time, so the best pass counts (the median is
printed too). Goals: input-pipeline overhead of training < 20%; predict through
finetune >= 0.9x the bare forward pass. The last line printed holds both ratios::

    flock /tmp/finetune-cpu.lock nice -n 5 .venv/bin/python bench/throughput.py
    .venv/bin/python bench/throughput.py --quick      # smoke test: 64 images, 1 timed pass
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import child_main, elpv_split, in_child, machine, median  # noqa: E402

BATCH = 32


def _model(train: bool):
    import finetune
    import keras

    parts = finetune.build_model("efficientnet_lite0", 4, seed=0)
    if train:
        spec = parts.backbone
        finetune.UnfreezePolicy(from_layer=spec.default_unfreeze, block_pattern=spec.block_pattern).apply(parts.base)
        parts.model.compile(keras.optimizers.Adam(1e-5), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return parts.model


def _items(root: str, split: str, n: int):
    from bench.common import split_items

    items, _ = split_items(root, split, n)
    return items


def _timed_fit(model, dataset, n_images: int, repeats: int) -> dict:
    times = []
    model.fit(dataset, epochs=1, verbose=0)  # warm-up: tracing, optimizer build, decode + cache fill
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(dataset, epochs=1, verbose=0)
        times.append(time.perf_counter() - start)
    return {"images": n_images, "times": times, "best_ips": n_images / min(times), "median_ips": n_images / median(times)}


def fit_pipeline(root: str, n: int, repeats: int) -> dict:
    import finetune

    items = _items(root, "train", n)
    model = _model(train=True)
    dataset = finetune.make_dataset(items, 224, batch_size=BATCH, shuffle=True, seed=0)
    return _timed_fit(model, dataset, len(items), repeats)


def fit_memory(root: str, n: int, repeats: int) -> dict:
    import finetune
    import numpy as np
    import tensorflow as tf

    items = _items(root, "train", n)
    model = _model(train=True)
    x = finetune.data.load_images([p for p, _ in items], 224)
    y = np.asarray([label for _, label in items], np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0).batch(BATCH).prefetch(tf.data.AUTOTUNE)
    return _timed_fit(model, dataset, len(items), repeats)


def predict_pipeline(root: str, n: int, repeats: int) -> dict:
    import finetune

    items = _items(root, "test", n)
    model = _model(train=False)
    dataset = finetune.make_dataset(items, 224, batch_size=BATCH, cache=None)
    model.predict(dataset, verbose=0)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict(dataset, verbose=0)
        times.append(time.perf_counter() - start)
    return {"images": len(items), "times": times, "best_ips": len(items) / min(times), "median_ips": len(items) / median(times)}


def predict_command(root: str, n: int, repeats: int) -> dict:
    import tempfile

    from click.testing import CliRunner

    from finetune import TrainConfig
    from finetune.cli import main as cli
    from finetune.runs import load_run
    from finetune.util import yaml_text

    items = _items(root, "test", n)
    run = Path(tempfile.mkdtemp()) / "run"
    run.mkdir()
    _model(train=False).save(run / "model.keras")
    (run / "config.yaml").write_text(yaml_text(TrainConfig(data=root, image_size=224).to_dict()))
    (run / "labels.txt").write_text("a\nb\nc\nd\n")
    args = ["predict", str(run), *[p for p, _ in items], "--csv", str(run / "out.csv")]
    times, loads = [], []
    for attempt in range(repeats + 1):  # the first pass warms up (file cache, imports)
        start = time.perf_counter()
        result = CliRunner().invoke(cli, args)
        elapsed = time.perf_counter() - start
        assert result.exit_code == 0, result.output
        start = time.perf_counter()
        load_run(run)
        if attempt:
            times.append(elapsed)
            loads.append(time.perf_counter() - start)
    best = min(times)
    return {"images": len(items), "times": times, "best_ips": len(items) / best, "median_ips": len(items) / median(times),
            "load_s": min(loads), "best_ips_without_load": len(items) / (best - min(loads))}


def predict_bare(root: str, n: int, repeats: int) -> dict:
    import finetune
    import tensorflow as tf

    items = _items(root, "test", n)
    model = _model(train=False)
    x = finetune.data.load_images([p for p, _ in items], 224)
    batches = [tf.constant(x[i:i + BATCH]) for i in range(0, len(x), BATCH)]
    forward = tf.function(lambda b: model(b, training=False), reduce_retracing=True)
    for b in batches:  # warm-up: both batch shapes traced
        forward(b).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for b in batches:
            forward(b).numpy()
        times.append(time.perf_counter() - start)
    return {"images": len(items), "times": times, "best_ips": len(items) / min(times), "median_ips": len(items) / median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-images", type=int, default=320, help="training images per timed pass [320]")
    parser.add_argument("--predict-images", type=int, default=656, help="images per predict pass [656, the test split]")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per measurement [3]")
    parser.add_argument("--data", default=None, help="pre-split folder [bench/out/elpv-split, written from elpv-dataset]")
    parser.add_argument("--quick", action="store_true", help="smoke test: 64 images, 1 timed pass")
    args = parser.parse_args()
    if args.quick:
        args.train_images, args.predict_images, args.repeats = 64, 64, 1
    root = str(Path(args.data) if args.data else elpv_split())
    print(f"machine: {machine()}")
    print(f"efficientnet_lite0 224x224, batch {BATCH}, {args.repeats} timed passes (best counts); "
          f"train {args.train_images} images, predict {args.predict_images} images, from {root}")

    runs = {}
    for name, n in (("fit_pipeline", args.train_images), ("fit_memory", args.train_images),
                    ("predict_pipeline", args.predict_images), ("predict_command", args.predict_images),
                    ("predict_bare", args.predict_images)):
        runs[name] = in_child(__file__, name, {"root": root, "n": n, "repeats": args.repeats})
        r = runs[name]
        print(f"{name:>16}: best {r['best_ips']:.1f} img/s, median {r['median_ips']:.1f} img/s "
              f"(passes {', '.join(f'{t:.1f}s' for t in r['times'])}; {r['images']} images), peak RSS {r['peak_rss_mb']:.0f} MB")
    overhead = runs["fit_memory"]["best_ips"] / runs["fit_pipeline"]["best_ips"] - 1
    predict = runs["predict_pipeline"]["best_ips"] / runs["predict_bare"]["best_ips"]
    med_overhead = runs["fit_memory"]["median_ips"] / runs["fit_pipeline"]["median_ips"] - 1
    med_predict = runs["predict_pipeline"]["median_ips"] / runs["predict_bare"]["median_ips"]
    command = runs["predict_command"]["best_ips"] / runs["predict_bare"]["best_ips"]
    command_run = runs["predict_command"]["best_ips_without_load"] / runs["predict_bare"]["best_ips"]
    print(f"medians: training input overhead {med_overhead:+.1%}, predict {med_predict:.2f}x bare")
    print(f"predict command: {command:.2f}x bare end to end, {command_run:.2f}x without its "
          f"{runs['predict_command']['load_s']:.1f} s model load")
    print(f"training input-pipeline overhead: {overhead:+.1%} (goal < 20%); "
          f"predict through finetune: pipeline {predict:.2f}x, command {command:.2f}x "
          f"({command_run:.2f}x without the model load) bare model(x) (goal >= 0.9x)")


if __name__ == "__main__":
    if not child_main({"fit_pipeline": fit_pipeline, "fit_memory": fit_memory,
                       "predict_pipeline": predict_pipeline, "predict_command": predict_command,
                       "predict_bare": predict_bare}):
        main()
