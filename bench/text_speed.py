"""finetune's text recipe against keras-hub's own ``BertTextClassifier`` on the same weights and sequence cap.

Both train on draw 0 of N = 1,000 Fine Foods reviews (``bench/text_accuracy.py``'s draw), the same 85% /
15% train / validation split (finetune's own, seed 0), and are scored on the official 1,000-review test set.

- ``kerashub``: ``keras_hub.models.BertTextClassifier.from_preset(<the MiniLM folder>, num_classes=2)`` with a
  ``BertTextClassifierPreprocessor`` at finetune's sequence cap, every layer trainable, keras-hub's compile
  defaults (Adam 5e-5, its loss and metric), batch 32, ``EPOCHS`` epochs on the training split (the BERT paper's
  2-4; Keras's own ``fit`` default is 1), validation data given for its logs only. Wall time from the child's
  start to the test set predicted.
- ``finetune``: ``finetune train reviews.csv`` with its defaults (``bench/text_accuracy.py``'s ``measure_finetune``).
- Predict speed: texts/s over the 1,000 test reviews, each model warmed up first (one batch), at the same cap.

Goals (issue 23): keras-hub's accuracy reached in <= 0.5x its wall time; predict >= 1.5x its texts/s.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/text_speed.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

_START = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import child_main, in_child, machine  # noqa: E402
from bench.text_accuracy import _data, measure_finetune  # noqa: E402
from bench.text_data import DEST  # noqa: E402

N, DRAW, EPOCHS, BATCH = 1000, 0, 3, 32


def _split(texts: list[str], labels: list[str]) -> tuple[list[int], list[int]]:
    """finetune's own train / val split of the N reviews (val 15%, stratified, seed 0)."""
    from finetune.data import as_image_folder

    folder = as_image_folder((texts, labels), val_split=0.15, test_split=0.0, seed=0)
    index = {t: i for i, t in enumerate(texts)}
    return [index[t] for t, _ in folder.splits["train"]], [index[t] for t, _ in folder.splits["val"]]


def measure_kerashub(sequence_length: int, data: str = str(DEST)) -> dict[str, Any]:
    import keras_hub
    import numpy as np

    from finetune.data.text import checkpoint_source

    texts, labels, test_texts, test_labels = _data(N, DRAW, data)
    train_rows, val_rows = _split(texts, labels)
    names = sorted(set(labels))
    y = np.asarray([names.index(label) for label in labels])
    folder = checkpoint_source("minilm_l6")
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor.from_preset(folder, sequence_length=sequence_length)
    classifier = keras_hub.models.BertTextClassifier.from_preset(folder, num_classes=len(names),
                                                                preprocessor=preprocessor)
    fit_start = time.perf_counter()
    history = classifier.fit(x=[texts[i] for i in train_rows], y=y[train_rows], batch_size=BATCH, epochs=EPOCHS,
                             validation_data=([texts[i] for i in val_rows], y[val_rows]), verbose=2)
    fit_s = time.perf_counter() - fit_start
    classifier.predict(test_texts[:BATCH], batch_size=BATCH, verbose=0)  # warm-up
    start = time.perf_counter()
    logits = classifier.predict(test_texts, batch_size=BATCH, verbose=0)
    predict_s = time.perf_counter() - start
    truth = np.asarray([names.index(label) for label in test_labels])
    hits = logits.argmax(1) == truth
    return {"accuracy": float(hits.mean()), "balanced": float(np.mean([hits[truth == c].mean() for c in range(len(names))])),
            "fit_s": fit_s, "wall_s": time.perf_counter() - _START, "texts_per_s": len(test_texts) / predict_s,
            "val_accuracy": [round(float(v), 4) for v in history.history.get("val_sparse_categorical_accuracy", [])]}


def measure_finetune_speed(data: str = str(DEST)) -> dict[str, Any]:
    result = measure_finetune(N, DRAW, data)
    from finetune import load_run

    _, _, test_texts, _ = _data(N, DRAW, data)
    run = load_run(result.pop("run_dir"))
    run.predict(test_texts[:BATCH], batch_size=BATCH)  # warm-up
    start = time.perf_counter()
    run.predict(test_texts, batch_size=BATCH)
    result["texts_per_s"] = len(test_texts) / (time.perf_counter() - start)
    result["sequence_length"] = run.spec.sequence_length
    return result


def main() -> None:
    print(f"machine: {machine()}")
    print(f"data: draw {DRAW} of N={N:,} Fine Foods reviews (85% train / 15% val), official 1,000-review test set",
          flush=True)
    ours = in_child(__file__, "finetune", {})
    print(f"  finetune: accuracy {ours['accuracy']:.1%} / balanced {ours['balanced']:.1%}, wall {ours['wall_s']:.0f} s, "
          f"predict {ours['texts_per_s']:.1f} texts/s ({ours['detail']})", flush=True)
    theirs = in_child(__file__, "kerashub", {"sequence_length": ours["sequence_length"]})
    print(f"  keras-hub BertTextClassifier ({EPOCHS} epochs, all layers): accuracy {theirs['accuracy']:.1%} / balanced "
          f"{theirs['balanced']:.1%}, wall {theirs['wall_s']:.0f} s (fit {theirs['fit_s']:.0f} s), predict "
          f"{theirs['texts_per_s']:.1f} texts/s; val accuracy by epoch {theirs['val_accuracy']}", flush=True)
    reached = ours["accuracy"] >= theirs["accuracy"]
    print(json.dumps({"finetune": ours, "kerashub": theirs}))
    print(f"finetune vs keras-hub BertTextClassifier at {ours['sequence_length']} tokens, N={N:,}: accuracy "
          f"{ours['accuracy']:.1%} vs {theirs['accuracy']:.1%} ({'reached' if reached else 'NOT reached'}), wall "
          f"{ours['wall_s'] / theirs['wall_s']:.2f}x (goal <= 0.5x), predict {ours['texts_per_s'] / theirs['texts_per_s']:.2f}x "
          f"texts/s (goal >= 1.5x)")


if __name__ == "__main__":
    if not child_main({"kerashub": measure_kerashub, "finetune": measure_finetune_speed}):
        main()
