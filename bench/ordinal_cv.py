"""Is the ordinal rule better than argmax on data it was not fitted on? Cross-validation inside val.

``--ordinal`` fits its cut points on the validation split, so its validation accuracy is optimistic.
This reads the validation probabilities that ``bench/elpv_accuracy.py --json`` stores per seed,
splits each seed's val cells in two halves (stratified, 50 random halvings), fits the rule on one half
and scores it on the other, against plain argmax on the same half. The test split is not read.

    .venv/bin/python bench/ordinal_cv.py bench/out/acc_ls.json [more.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from finetune.evaluation.metrics import balanced_accuracy  # noqa: E402
from finetune.training.ordinal import fit_ordinal  # noqa: E402

HALVINGS = 50


def halves(labels: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    first = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        first += list(idx[: len(idx) // 2])
    mask = np.zeros(len(labels), bool)
    mask[first] = True
    return np.flatnonzero(mask), np.flatnonzero(~mask)


def main(paths: list[str]) -> int:
    rows = []
    for path in paths:
        for seed in json.loads(Path(path).read_text())["seeds"]:
            if "val_probs" not in seed:
                continue
            probs, labels = np.asarray(seed["val_probs"]), np.asarray(seed["val_labels"])
            rng = np.random.default_rng(seed["seed"])
            for metric in ("accuracy", "balanced"):
                gains = []
                for _ in range(HALVINGS):
                    for fit, held in (halves(labels, rng),):
                        for a, b in ((fit, held), (held, fit)):
                            rule = fit_ordinal(probs[a], labels[a], metric)
                            score = (balanced_accuracy if metric == "balanced" else
                                     lambda y, p, k: float(np.mean(y == p)))
                            gains.append(score(labels[b], rule.classes(probs[b]), 4)
                                         - score(labels[b], probs[b].argmax(1), 4))
                rows.append((Path(path).stem, seed["seed"], metric, 100 * np.mean(gains), 100 * np.std(gains)))
    for name, seed, metric, mean, std in rows:
        print(f"{name} seed {seed}: ordinal ({metric}) - argmax on held-out val halves: {mean:+.1f} +- {std:.1f} points")
    for metric in ("accuracy", "balanced"):
        gains = [r[3] for r in rows if r[2] == metric]
        if gains:
            print(f"ordinal rule ({metric}) vs argmax, held-out val halves, mean over {len(gains)} seed runs: "
                  f"{np.mean(gains):+.1f} points ({', '.join(f'{g:+.1f}' for g in gains)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
