"""Ensembles of ELPV runs on the same splits: is the average of several seeds' probabilities better than one?

Each JSON comes from ``bench/elpv_accuracy.py`` (which keeps every seed's val and test probabilities) run
with the same ``--seeds`` (the splits) and another training seed, e.g.::

    .venv/bin/python bench/elpv_accuracy.py --lean --set augment=flips --set seed=100 --json bench/out/ens_100.json
    .venv/bin/python bench/elpv_accuracy.py --lean --set augment=flips --set seed=200 --json bench/out/ens_200.json
    .venv/bin/python bench/elpv_accuracy.py --lean --set augment=flips --set seed=300 --json bench/out/ens_300.json
    .venv/bin/python bench/ensemble_eval.py bench/out/ens_100.json bench/out/ens_200.json bench/out/ens_300.json

The verdict reads validation (ensemble minus the mean of its members, paired per split); test is reported.
The headline is the last line.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def scores(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """4-class, balanced, binary p > 0.5 (classes {0, 1} vs {2, 3}: Deitsch's) and 0-vs-rest accuracy, in %."""
    pred = probs.argmax(1)
    recalls = [np.mean(pred[labels == k] == k) for k in np.unique(labels)]
    return {"4-class": 100 * np.mean(pred == labels), "balanced": 100 * np.mean(recalls),
            "binary p>0.5": 100 * np.mean((pred >= 2) == (labels >= 2)),
            "0-vs-rest": 100 * np.mean((pred > 0) == (labels > 0))}


def main(paths: list[str]) -> int:
    runs = [json.load(open(p))["seeds"] for p in paths]
    if len(runs) < 2:
        print("give at least 2 JSON files of runs on the same splits")
        return 2
    tta = all("val_tta_probs" in r for seeds in runs for r in seeds)
    kinds = ("", "tta_") if tta else ("",)
    table = {f"{split}{' tta' if kind else ''}": [] for kind in kinds for split in ("val", "test")}
    for per_split in zip(*runs):  # the same split seed in every file
        for kind in kinds:
            for split in ("val", "test"):
                key = f"{split}_{kind}probs"
                if key not in per_split[0]:
                    continue
                labels = np.array(per_split[0][f"{split}_labels"])
                if any(r[f"{split}_labels"] != per_split[0][f"{split}_labels"] for r in per_split):
                    raise SystemExit(f"{split} labels differ between files: not the same split")
                members = [scores(np.array(r[key]), labels) for r in per_split]
                both = scores(np.mean([np.array(r[key]) for r in per_split], axis=0), labels)
                table[f"{split}{' tta' if kind else ''}"].append((members, both))
    for split, rows in table.items():
        if not rows:
            continue
        for metric in ("4-class", "balanced", "binary p>0.5", "0-vs-rest"):
            single = [np.mean([m[metric] for m in members]) for members, _ in rows]
            ens = [both[metric] for _, both in rows]
            diff = np.array(ens) - np.array(single)
            print(f"{split:8s} {metric:12s} members {np.mean(single):5.1f}  ensemble of {len(runs)} {np.mean(ens):5.1f}  "
                  f"paired {diff.mean():+.1f} +- {diff.std(ddof=1) if len(diff) > 1 else 0:.1f}  "
                  f"(per split: {', '.join(f'{e:.1f}' for e in ens)})")
    if tta:  # TTA of each member vs the plain members, val, paired per split
        gain = [np.mean([m["4-class"] for m in t[0]]) - np.mean([m["4-class"] for m in p[0]])
                for t, p in zip(table["val tta"], table["val"])]
        print(f"val: TTA of one member {np.mean(gain):+.1f} over the plain member")
    test = table["test tta"] if tta else table["test"]
    if test:
        ens = {m: np.mean([both[m] for _, both in test]) for m in ("4-class", "balanced", "binary p>0.5")}
        val = table["val tta"] if tta else table["val"]
        val_gain = np.mean([both["4-class"] - np.mean([m["4-class"] for m in members]) for members, both in val])
        print(f"ELPV ensemble of {len(runs)} seeds{' with TTA' if tta else ''}, test: 4-class {ens['4-class']:.1f}%, balanced {ens['balanced']:.1f}%, "
              f"binary p>0.5 {ens['binary p>0.5']:.1f}% (mean of {len(test)} splits; val {val_gain:+.1f} over one member)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
