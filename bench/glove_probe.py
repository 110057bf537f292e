"""The GloVe recipe's word dropout on validation only: best val loss and time at each value.

Trains ``--backbone glove_6b_50d`` on all 4,000 Fine Foods training reviews with a 15% validation split and no
test split (the official test set is never read), once per ``WORD_DROPOUT`` value, each in a child process.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/glove_probe.py 0 0.3 0.5
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import child_main, in_child  # noqa: E402
from bench.text_data import DEST, read_split  # noqa: E402


def measure(dropout: float) -> dict:
    import finetune.models.glove as glove
    from finetune import fine_tune

    glove.WORD_DROPOUT = dropout
    texts, labels = read_split("train", str(DEST))
    start = time.perf_counter()
    result = fine_tune((texts, labels), backbone="glove_6b_50d", val_split=0.15, test_split=0.0, verbose=0)
    best = min(r["val_loss"] for r in result.history)
    accuracy = next(r["val_accuracy"] for r in result.history if r["val_loss"] == best)
    return {"dropout": dropout, "best_val_loss": round(best, 4), "val_accuracy_at_best": round(accuracy, 4),
            "seconds": round(time.perf_counter() - start, 1), "kept": result.kept_phase}


if __name__ == "__main__":
    if not child_main({"measure": measure}):
        for value in [float(v) for v in sys.argv[1:]] or [0.0, 0.3, 0.5]:
            print(json.dumps(in_child(__file__, "measure", {"dropout": value})), flush=True)
