"""Step time of `finetune.training.loop.Trainer` against `model.fit`, side by side.

Same small CNN (64x64x3 inputs), same in-memory data, same optimizer; each
method trains its own copy. After one warm-up epoch each (tracing excluded),
epochs alternate fit / Trainer / fit / ... and the median step time of each is
compared. On a shared machine other processes only ever add time, so the
headline ratio (the last line printed) compares the best epoch of each method;
the ratio of medians is printed too::

    nice -n 10 .venv/bin/python bench/loop.py --steps 50 --repeats 16
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from finetune.training.loop import Trainer  # noqa: E402


def small_cnn(seed: int = 0) -> keras.Model:
    """A few conv blocks and a dense head, about 25k parameters."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((64, 64, 3)),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ])


def compiled(seed: int = 0) -> keras.Model:
    model = small_cnn(seed)
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def seconds_per_step(train_one_epoch, steps: int) -> float:
    start = time.perf_counter()
    train_one_epoch()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="steps per timed epoch")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=16, help="timed epochs per method")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    n = args.steps * args.batch
    x = rng.uniform(0, 1, (n, 64, 64, 3)).astype("float32")
    y = rng.integers(0, 10, n).astype("int32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch).prefetch(2)

    fit_model, loop_model = compiled(), compiled()
    trainer = Trainer(loop_model)
    methods = {
        "fit": lambda: fit_model.fit(dataset, epochs=1, verbose=0),
        "trainer": lambda: trainer.fit(dataset, epochs=1, verbose=0),
    }
    for run in methods.values():  # warm-up: tracing, optimizer build, caches
        run()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for repeat in range(args.repeats):
        order = list(methods) if repeat % 2 == 0 else list(reversed(methods))
        for name in order:
            times[name].append(seconds_per_step(methods[name], args.steps))

    medians = {name: statistics.median(ts) for name, ts in times.items()}
    best = {name: min(ts) for name, ts in times.items()}
    print(f"{args.steps} steps x {args.repeats} repeats, batch {args.batch}, "
          f"small CNN 64x64x3, {tf.config.threading.get_inter_op_parallelism_threads() or 'auto'} "
          "inter-op threads")
    for name, ts in times.items():
        spread = ", ".join(f"{t * 1e3:.2f}" for t in ts)
        print(f"{name:>8}: best {best[name] * 1e3:.2f}, median {medians[name] * 1e3:.2f} ms/step"
              f"  (runs: {spread})")
    print(f"median trainer/fit ratio: {medians['trainer'] / medians['fit']:.3f}x")
    print(f"trainer/fit step-time ratio: {best['trainer'] / best['fit']:.3f}x")


if __name__ == "__main__":
    main()
