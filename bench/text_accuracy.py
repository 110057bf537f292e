"""Text accuracy on Amazon Fine Foods reviews: methods x training sizes x draws, on the official test set.

Data: ``data/finefoods/{train,test}.csv`` (``make bench-data``, bench/text_data.py): 4,000 training reviews
(great 2,600 / other 1,400) and the official 1,000-review test set (658 / 342). For each size N, draw d
takes ``train_test_split(stratify=label, random_state=d)`` of the 4,000 (N = 4,000 is all of them, the same
for every draw); each method trains on those N and is scored on the 1,000 test reviews.

Methods (one function each, ``measure_<name>(n, draw) -> dict``, run in a child process of its own so its
wall time and peak RSS are its own; add a later method to ``METHODS``):

- ``tfidf``: the bag-of-words baseline, ``finetune.evaluation.text_baseline.tfidf_baseline`` (TF-IDF word
  1-2-grams + char_wb 2-5-grams, sublinear tf; logistic regression, C by 5-fold stratified CV over
  {0.3, 1, 3, 10, 30, 100}). Deterministic given its training texts, so at N = 4,000 draw 0 stands for all.

Issue 23's anchors (TF-IDF, draw 0): 73.2% / 77.7% / 81.0% accuracy, balanced 63.9 / 72.0 / 76.7%, at
300 / 1,000 / 4,000 reviews. ``fit s`` is the baseline's own time (cross-validation, refit, test
predictions); ``wall s`` the child process from start to its result (Python and library imports, CSV read).

    flock /tmp/finetune-cpu.lock nice -n 5 .venv/bin/python bench/text_accuracy.py             # 3 draws
    .venv/bin/python bench/text_accuracy.py --draws 1                                          # the anchors
    .venv/bin/python bench/text_accuracy.py --quick                                            # 300, 1 draw
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

_START = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import child_main, in_child  # noqa: E402
from bench.text_data import DEST, SPLITS, read_split  # noqa: E402

SIZES = (300, 1000, 4000)
DRAWS = 3
FULL = sum(SPLITS["train"][1].values())  # 4,000: every training review
#: Issue 23's single-draw anchors (draw 0): N -> (accuracy, balanced accuracy), TF-IDF + LR.
ANCHORS = {"tfidf": {300: (0.732, 0.639), 1000: (0.777, 0.720), 4000: (0.810, 0.767)}}


def draw_subset(labels: list[str], n: int, draw: int) -> list[int]:
    """Indices of draw ``draw``'s N training reviews: ``train_test_split(stratify=labels, random_state=draw)``,
    in the order it returns them; all of them (in file order) when N is the whole set."""
    if n >= len(labels):
        return list(range(len(labels)))
    from sklearn.model_selection import train_test_split

    picked, _ = train_test_split(list(range(len(labels))), train_size=n, stratify=labels, random_state=draw)
    return [int(i) for i in picked]


def _data(n: int, draw: int, data: str) -> tuple[list[str], list[str], list[str], list[str]]:
    texts, labels = read_split("train", data)
    test_texts, test_labels = read_split("test", data)
    rows = draw_subset(labels, n, draw)
    return [texts[i] for i in rows], [labels[i] for i in rows], test_texts, test_labels


# ---------------------------------------------------------------------------- methods (each in a child)


def measure_tfidf(n: int, draw: int, data: str = str(DEST)) -> dict[str, Any]:
    """The bag-of-words baseline on draw ``draw`` of N reviews."""
    from finetune.evaluation.text_baseline import tfidf_baseline

    train_texts, train_labels, test_texts, test_labels = _data(n, draw, data)
    result = tfidf_baseline(train_texts, train_labels, test_texts, test_labels)
    return {"accuracy": result.accuracy, "balanced": result.balanced_accuracy, "fit_s": result.seconds,
            "wall_s": time.perf_counter() - _START, "detail": f"C={result.C:g}", "describe": result.describe(),
            "cv_accuracy": {f"{c:g}": a for c, a in result.cv_accuracy.items()}}


def train_and_predict(train_texts, train_labels, texts, draw: int, overrides: dict, prefix: str = "text-bench-"):
    """``finetune train`` on the texts (15% val carved from them, seed ``draw``, a fresh feature cache), then the
    run folder's model on ``texts``: ``(class probabilities, class names, run_dir, result)``."""
    import csv
    import os
    import tempfile

    from finetune import TrainConfig, load_run, train
    from finetune.evaluation.predict import as_class_probs

    folder = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["FINETUNE_CACHE_DIR"] = str(folder / "cache")  # every run computes its features: no earlier run helps
    with open(folder / "train.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label"])
        writer.writerows(zip(train_texts, train_labels))
    config = TrainConfig(data=str(folder / "train.csv"), val_split=0.15, test_split=0.0, seed=draw,
                         output=str(folder / "runs"), name="run", **overrides)
    run_dir, result, _ = train(config, verbose=0)
    run = load_run(run_dir)
    return as_class_probs(run.predict(texts, batch_size=64)), list(run.classes), run_dir, result


def measure_finetune(n: int, draw: int, data: str = str(DEST), overrides: str = "{}") -> dict[str, Any]:
    """finetune's default text recipe (``finetune train reviews.csv``) on draw ``draw`` of N reviews: it carves its
    validation split (15%) from the same N; scored on the official test set. Wall time: from the child's start
    (imports included) to the run folder written and the test set predicted."""
    from finetune.evaluation.metrics import classification_metrics

    train_texts, train_labels, test_texts, test_labels = _data(n, draw, data)
    probs, names, run_dir, result = train_and_predict(train_texts, train_labels, test_texts, draw,
                                                      json.loads(overrides))
    metrics = classification_metrics([names.index(label) for label in test_labels], probs, names)
    return {"accuracy": metrics["accuracy"], "balanced": metrics["balanced_accuracy"],
            "fit_s": sum(result.timings.get(k, 0.0) for k in ("head", "tune", "bag")),  # head includes features
            "wall_s": time.perf_counter() - _START, "kept": result.kept_phase, "run_dir": str(run_dir),
            "detail": f"kept {result.kept_phase}, {result.spec.sequence_length} tokens"}


def measure_glove(n: int, draw: int, data: str = str(DEST)) -> dict[str, Any]:
    """finetune's GloVe recipe (``finetune train reviews.csv --backbone glove_6b_50d``), as ``finetune``."""
    return measure_finetune(n, draw, data, overrides=json.dumps({"backbone": "glove_6b_50d"}))


#: name -> (measure function, whether its result depends only on the training texts: then the whole set is
#: measured once, draw 0, and stands for every draw)
METHODS: dict[str, tuple[Callable[..., dict[str, Any]], bool]] = {
    "tfidf": (measure_tfidf, True),
    "finetune": (measure_finetune, False),
    "glove": (measure_glove, False),
}
LABELS = {"tfidf": "TF-IDF + LR", "finetune": "finetune", "glove": "GloVe recipe"}


# ---------------------------------------------------------------------------- the table


def run(methods: list[str], sizes: list[int], draws: int, data: str,
        earlier: list[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """Every (method, N, draw) cell; a cell found in ``earlier`` (an earlier ``--json``) is taken, not rerun."""
    done = {(r["method"], r["n"], r["draw"]): r for r in earlier}
    rows = []
    for method in methods:
        _, deterministic = METHODS[method]
        for n in sizes:
            for draw in range(draws):
                if deterministic and n >= FULL and draw > 0:
                    rows.append({**rows[-1], "draw": draw, "reused": True})
                    continue
                if (method, n, draw) in done:
                    row = {**done[method, n, draw], "earlier": True}
                else:
                    result = in_child(__file__, method, {"n": n, "draw": draw, "data": data})
                    row = {"method": method, "n": n, "draw": draw, **result}
                rows.append(row)
                print(f"  {LABELS[method]:<12} N={n:>5,} draw {draw}{' (earlier run)' if row.get('earlier') else ''}: "
                      f"accuracy {row['accuracy']:.1%}, balanced "
                      f"{row['balanced']:.1%} ({row['detail']}), fit {row['fit_s']:.1f} s, wall {row['wall_s']:.1f} s",
                      flush=True)
    return rows


def _spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.1%}" + (f" +- {statistics.stdev(values):.1%}" if len(values) > 1 else "")


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| method | N | draw 0: accuracy / balanced | mean over draws: accuracy / balanced | draws | "
             "issue 23 (draw 0) | fit s (draw 0) | wall s (draw 0) |",
             "|---|---:|---|---|---:|---|---:|---:|"]
    for method in dict.fromkeys(r["method"] for r in rows):
        for n in dict.fromkeys(r["n"] for r in rows if r["method"] == method):
            group = [r for r in rows if r["method"] == method and r["n"] == n]
            first = group[0]
            anchor = ANCHORS.get(method, {}).get(n)
            reused = " (one set: every draw)" if any(r.get("reused") for r in group) else ""
            lines.append(
                f"| {LABELS[method]} | {n:,} | {first['accuracy']:.1%} / {first['balanced']:.1%} ({first['detail']}) | "
                f"{_spread([r['accuracy'] for r in group])} / {_spread([r['balanced'] for r in group])}{reused} | "
                f"{len(group)} | {f'{anchor[0]:.1%} / {anchor[1]:.1%}' if anchor else '-'} | "
                f"{first['fit_s']:.1f} | {first['wall_s']:.1f} |")
    return "\n".join(lines)


def _paired(rows: list[dict[str, Any]], method: str) -> str:
    """``method`` minus TF-IDF on the same draw, mean +- stdev over draws, per N; '' unless every N has 2+ draws."""
    tfidf = {(r["n"], r["draw"]): r for r in rows if r["method"] == "tfidf"}
    sizes = sorted({r["n"] for r in rows if r["method"] == method})
    if not sizes:
        return ""
    cells, pairs = [], []
    for n in sizes:
        pairs = [(r, tfidf[n, r["draw"]]) for r in rows if r["method"] == method and r["n"] == n
                 and (n, r["draw"]) in tfidf]
        if len(pairs) < 2:
            return ""
        gaps = [a["accuracy"] - b["accuracy"] for a, b in pairs]
        balanced = [a["balanced"] - b["balanced"] for a, b in pairs]
        walls = [a["wall_s"] for a, _ in pairs]
        cells.append(f"{statistics.fmean(gaps):+.1%} +- {statistics.stdev(gaps):.1%} "
                     f"({statistics.fmean(balanced):+.1%} +- {statistics.stdev(balanced):.1%} balanced, "
                     f"wall {min(walls):.0f}-{max(walls):.0f} s)")
    return (f"{LABELS[method]} minus TF-IDF, paired over {len(pairs)} draws, at "
            f"{' / '.join(f'{n:,}' for n in sizes)} reviews: {' / '.join(cells)}")


def headline(rows: list[dict[str, Any]]) -> str:
    first = {r["n"]: r for r in rows if r["method"] == "tfidf" and r["draw"] == 0}
    if not first:
        return "no TF-IDF rows"
    sizes = sorted(first)
    anchors = ANCHORS["tfidf"]
    issue = " / ".join(f"{anchors[n][0]:.1%}" for n in sizes if n in anchors)
    issue_bal = " / ".join(f"{anchors[n][1]:.1%}" for n in sizes if n in anchors)
    accuracy = " / ".join(f"{first[n]['accuracy']:.1%}" for n in sizes)
    balanced = " / ".join(f"{first[n]['balanced']:.1%}" for n in sizes)
    fits = " / ".join(f"{first[n]['fit_s']:.0f}" for n in sizes)
    line = (f"TF-IDF + LR on the official 1,000-review test set, draw 0: {accuracy} (balanced {balanced}) at "
            f"{' / '.join(f'{n:,}' for n in sizes)} reviews; issue 23: {issue} (balanced {issue_bal}); fits {fits} s")
    parts = []
    for method in ("finetune", "glove"):
        paired = _paired(rows, method)
        if paired:
            parts.append(paired)
            continue
        tuned = {r["n"]: r for r in rows if r["method"] == method and r["draw"] == 0}
        if tuned:
            gaps = " / ".join(f"{tuned[n]['accuracy'] - first[n]['accuracy']:+.1%} ({tuned[n]['balanced'] - first[n]['balanced']:+.1%}"
                              f" balanced, {tuned[n]['wall_s']:.0f} s)" for n in sizes if n in tuned)
            parts.append(f"{LABELS[method]} minus TF-IDF, draw 0, at "
                         f"{' / '.join(f'{n:,}' for n in sizes if n in tuned)} reviews: {gaps}")
    return "; ".join(parts) or line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="training sizes (300 1000 4000)")
    parser.add_argument("--draws", type=int, default=DRAWS, help="stratified draws per size (3; draw 0 = anchors)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--data", default=str(DEST), help="folder of train.csv and test.csv (data/finefoods)")
    parser.add_argument("--quick", action="store_true", help="smoke: N=300, one draw")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--table", type=Path, help="print the table and headline of rows a --json run wrote")
    parser.add_argument("--reuse", type=Path, help="take the cells an earlier --json run measured instead of rerunning them")
    args = parser.parse_args()
    if args.table:
        rows = json.loads(args.table.read_text())
        print(table(rows))
        print(headline(rows))
        return
    if args.quick:
        args.sizes, args.draws = [300], 1
    if any(n > FULL or n < 10 for n in args.sizes):
        parser.error(f"--sizes: each between 10 and {FULL:,}")
    read_split("train", args.data), read_split("test", args.data)  # a missing CSV: one line naming make bench-data
    from bench.common import machine

    print(f"machine: {machine()}")
    print(f"data: {args.data} (train {FULL:,} reviews, official test 1,000); sizes {args.sizes}, "
          f"{args.draws} draw(s) (train_test_split(stratify=label, random_state=draw))", flush=True)
    start = time.perf_counter()
    earlier = json.loads(args.reuse.read_text()) if args.reuse else []
    rows = run(args.methods, args.sizes, args.draws, args.data, earlier)
    print()
    print(table(rows))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
        print(f"rows: {args.json}")
    print(headline(rows))


if __name__ == "__main__":
    if not child_main({name: fn for name, (fn, _) in METHODS.items()}):
        main()
