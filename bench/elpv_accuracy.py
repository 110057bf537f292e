"""ELPV accuracy benchmark: the product's recipe on the protocol of Deitsch et al. (2019).

Protocol (Deitsch et al., "Automatic classification of defective photovoltaic
module cells in electroluminescence images", Solar Energy 185, 2019;
arXiv:1807.02894): the 2,624 ELPV cells are split 75/25 into 1,968 training and
656 test cells, stratified by defect class AND cell type (mono/poly). Here each
seed draws its own such split (largest-remainder allocation per stratum, so the
sizes are exactly 1,968 / 656), then carves a stratified, seeded 10% of the
training cells (197) off as the validation split used for early stopping.
The test cells are never used for any choice.

Labels: defect probability 0, 1/3, 2/3, 1 -> 4 classes (as ``finetune.demo``).
Binary accuracy merges them into functional (probability 0) vs defective
(probability > 0), computed from the 4-class predictions.

Each seed writes a pre-split tree ``WORK/split-<seed>/{train,val,test}/<class>/``
of hard links into the ``elpv-dataset`` package files (copies if linking fails)
and runs the real product path, ``finetune.fine_tune(folder, TrainConfig(...))``
then ``finetune.runs.evaluate_split``, in a child process of its own, so its
peak RSS (``ru_maxrss``) is its own. The feature cache is the user's (warm
after the first run of a configuration); ``--cold`` gives each seed an empty
one, so its wall time includes feature extraction, as a first run's would.

    .venv/bin/python bench/elpv_accuracy.py                         # 3 seeds, TrainConfig defaults
    .venv/bin/python bench/elpv_accuracy.py --quick                 # smoke: 1 seed, 3 head epochs, no phase 2
    .venv/bin/python bench/elpv_accuracy.py --set head_epochs=100 --set hidden=[512] --set tune_epochs=0
    .venv/bin/python bench/elpv_accuracy.py --split val --seeds 0   # recipe search: report the validation split only

Heavy: wrap it as ``flock /tmp/finetune-cpu.lock nice -n 5 .venv/bin/python bench/elpv_accuracy.py``
on a shared machine. The last line printed is the headline, e.g.
``ELPV 4-class test accuracy: 81.3% +- 0.9 (mean of 3 seeds), binary 88.0%``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))  # data readers

TEST_FRACTION = 0.25  # Deitsch et al.: 1,968 train / 656 test
VAL_FRACTION = 0.10   # of the training cells, for early stopping
QUICK = {"head_epochs": 3, "tune_epochs": 0}


# ---------------------------------------------------------------------------- the split


def allocate(sizes: dict, fraction: float) -> dict:
    """Per-stratum counts summing to ``round(fraction * total)`` (largest remainder)."""
    total = round(fraction * sum(sizes.values()))
    exact = {k: fraction * n for k, n in sizes.items()}
    counts = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (counts[k] - exact[k], str(k)))[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


def deitsch_split(seed: int) -> dict[str, list[tuple[Path, str, str]]]:
    """``{"train"|"val"|"test": [(file, class folder, cell type), ...]}`` stratified by class and type."""
    import numpy as np

    from elpv_demo import elpv_class, elpv_records

    strata: dict[tuple[str, str], list[Path]] = {}
    for path, probability, cell_type in elpv_records():
        strata.setdefault((elpv_class(probability), cell_type), []).append(path)
    rng = np.random.default_rng(seed)
    order = {k: [v[i] for i in rng.permutation(len(v))] for k, v in sorted(strata.items())}
    n_test = allocate({k: len(v) for k, v in order.items()}, TEST_FRACTION)
    n_val = allocate({k: len(v) - n_test[k] for k, v in order.items()}, VAL_FRACTION)
    splits: dict[str, list] = {"train": [], "val": [], "test": []}
    for (cls, cell_type), paths in order.items():
        t, v = n_test[(cls, cell_type)], n_val[(cls, cell_type)]
        splits["test"] += [(p, cls, cell_type) for p in paths[:t]]
        splits["val"] += [(p, cls, cell_type) for p in paths[t:t + v]]
        splits["train"] += [(p, cls, cell_type) for p in paths[t + v:]]
    return splits


def write_tree(work: Path, seed: int) -> Path:
    """``work/split-<seed>/{train,val,test}/<class>/<type>_<file>``, hard links; reused when complete."""
    from elpv_demo import place_cell

    dest = work / f"split-{seed}"
    splits = deitsch_split(seed)
    marker = dest / ".complete"
    if marker.exists():
        return dest
    for split, rows in splits.items():
        for path, cls, cell_type in rows:
            place_cell(path, cell_type, dest / split / cls)
    marker.write_text(json.dumps({k: len(v) for k, v in splits.items()}))
    return dest


# ---------------------------------------------------------------------------- one seed (child process)


def binary_accuracy(cm) -> float:
    """0 vs rest: functional (class 0) vs any defect probability (classes 1-3), from a 4-class confusion matrix."""
    import numpy as np

    cm = np.asarray(cm)
    return float((cm[0, 0] + cm[1:, 1:].sum()) / cm.sum())


def deitsch_binary(cm) -> float:
    """Deitsch et al.'s binary task: defect probability > 0.5 is defective ({0, 1/3} vs {2/3, 1}), argmax of 4."""
    import numpy as np

    cm = np.asarray(cm)
    return float((cm[:2, :2].sum() + cm[2:, 2:].sum()) / cm.sum())


def balanced_accuracy(cm) -> float:
    """Mean per-class recall."""
    import numpy as np

    cm = np.asarray(cm, dtype=float)
    return float(np.mean(np.diag(cm) / np.maximum(cm.sum(axis=1), 1)))


def defective_recall(cm) -> float:
    """Recall of the 3_defective class (probability 1)."""
    import numpy as np

    cm = np.asarray(cm, dtype=float)
    return float(cm[3, 3] / max(cm[3].sum(), 1))


def split_metrics(result, items, config, ordinal=None) -> dict:
    """Every reported metric of ``result.model`` on ``items``, overall and per cell type."""
    from finetune.runs import evaluate_split

    by_type = {}
    for cell_type in ("mono", "poly"):
        subset = [it for it in items if os.path.basename(it[0]).startswith(cell_type + "_")]
        by_type[cell_type] = evaluate_split(result.model, subset, result.class_names, result.parts.image_size,
                                            config.batch_size, config.resize, ordinal=ordinal)
    cm = [[a + b for a, b in zip(ra, rb)] for ra, rb in zip(by_type["mono"]["confusion_matrix"],
                                                           by_type["poly"]["confusion_matrix"])]
    n = sum(map(sum, cm))
    return {
        "n": n,
        "accuracy": sum(cm[i][i] for i in range(len(cm))) / n,
        "binary": binary_accuracy(cm),
        "deitsch_binary": deitsch_binary(cm),
        "balanced": balanced_accuracy(cm),
        "defective_recall": defective_recall(cm),
        "mono": by_type["mono"]["accuracy"], "poly": by_type["poly"]["accuracy"],
        "mono_binary": binary_accuracy(by_type["mono"]["confusion_matrix"]),
        "poly_binary": binary_accuracy(by_type["poly"]["confusion_matrix"]),
        "confusion_matrix": cm,
    }


def run_seed(tree: Path, seed: int, overrides: dict, split: str, lean: bool = False) -> dict:
    from finetune.config import TrainConfig
    from finetune.data import scan_folder
    from finetune.training import fine_tune

    start = time.perf_counter()
    config = TrainConfig.from_dict({"data": str(tree), "seed": seed, **overrides})
    folder = scan_folder(tree, seed=seed)
    result = fine_tune(folder, config, verbose=0)
    train_s = time.perf_counter() - start
    out = {"seed": seed, "sizes": {k: len(v) for k, v in folder.splits.items()},
           "timings": {k: round(v, 1) for k, v in result.timings.items()},
           "epochs": {"head": sum(r["phase"] == "head" for r in result.history),
                      "tune": sum(r["phase"] == "tune" for r in result.history)},
           "kept_phase1": result.kept_phase1, "kept": result.kept_reason(), "notes": result.notes,
           "history": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in result.history]}
    names = ("val", "test") if split == "test" else ("val",)
    for name in names:
        out[name] = split_metrics(result, folder.splits[name], config)
    out["wall_s"] = round(time.perf_counter() - start, 1)  # training and the plain evaluation
    from finetune.data import make_dataset
    from finetune.evaluation.predict import probabilities

    datasets = {name: make_dataset(folder.splits[name], result.parts.image_size, batch_size=config.batch_size,
                                   cache=None, resize=config.resize) for name in names}
    for name in names:  # for post-hoc rule checks and ensembles of runs on one split (bench/ensemble_eval.py)
        probs, labels = probabilities(result.model, datasets[name])
        out[f"{name}_probs"] = [[round(float(q), 5) for q in row] for row in probs]
        out[f"{name}_labels"] = [int(v) for v in labels]
    if lean:  # and under test-time augmentation (the views of its training augmentation), for ensembles of TTA
        from finetune.data import load_images
        from finetune.evaluation.diagnostics import tta_options, tta_predict

        for name in names:
            images = load_images([p for p, _ in folder.splits[name]], result.parts.image_size, config.resize)
            probs = tta_predict(result.model, images, batch_size=config.batch_size, **tta_options(config.augment))
            out[f"{name}_tta_probs"] = [[round(float(q), 5) for q in row] for row in probs]
    else:
        measure_on_top(out, result, folder, config, names)
    if config.decision == "accuracy" and not lean:  # the same model under --decision balanced (a correction fitted on val)
        from finetune.training.decision import correct_priors

        correction = correct_priors(result.model, datasets["val"], folder.counts("train"))
        out["prior_correction"] = {"tau": correction.tau, "val_balanced_before": correction.balanced_before,
                                   "val_balanced_after": correction.balanced_after}
        for name in names:
            out[name + "_balanced_decision"] = split_metrics(result, folder.splits[name], config)
    out["train_s"] = round(train_s, 1)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def measure_on_top(out: dict, result, folder, config, names) -> None:
    """The same model under test-time augmentation and under --ordinal (cut points fitted on val)."""
    import numpy as np

    from finetune.training.ordinal import fit_ordinal

    try:  # the views that match its training augmentation
        from finetune.evaluation.diagnostics import evaluate_tta, tta_options

        for name in names:
            tta = evaluate_tta(result.model, folder.splits[name], result.class_names, result.parts.image_size,
                               batch_size=config.batch_size, resize=config.resize, **tta_options(config.augment))
            cm = tta["tta"]["confusion_matrix"]
            out[f"{name}_tta"] = {"accuracy": tta["accuracy_tta"], "balanced": balanced_accuracy(cm),
                                  "deitsch_binary": deitsch_binary(cm), "binary": binary_accuracy(cm),
                                  "confusion_matrix": cm}
    except Exception as err:  # a measurement on top: never lose the seed's run for it
        out["tta_error"] = repr(err)
    if config.ordinal:
        return
    for metric in ("accuracy", "balanced"):
        rule = fit_ordinal(np.array(out["val_probs"]), np.array(out["val_labels"]), metric)
        out[f"ordinal_{metric}_rule"] = rule.to_dict()
        for name in names:
            out[f"{name}_ordinal_{metric}"] = split_metrics(result, folder.splits[name], config, rule)


# ---------------------------------------------------------------------------- driver


def parse_set(pairs: list[str]) -> dict:
    """``key=value`` pairs, values read as YAML (``hidden=[512]``, ``tune_lr=1e-4``, ``class_weight=balanced``)."""
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set {pair!r}: expected key=value")
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):  # YAML reads 1e-4 as a string
            try:
                parsed = float(parsed)
            except ValueError:
                pass
        out[key.strip()] = parsed
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (split and training) [0,1,2]")
    parser.add_argument("--quick", action="store_true", help="smoke mode: seed 0 only, 3 head epochs, no phase 2")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a TrainConfig field, e.g. --set head_epochs=60 --set tune_lr=1e-4 (repeatable)")
    parser.add_argument("--split", choices=("test", "val"), default="test",
                        help="'val' evaluates the validation split only (recipe search); test never touched")
    parser.add_argument("--work", default=None, help="folder for the split trees [$TMPDIR/elpv-accuracy]")
    parser.add_argument("--cold", action="store_true", help="empty feature cache per seed (wall time of a first run)")
    parser.add_argument("--json", default=None, help="also write every seed's result to this JSON file")
    parser.add_argument("--lean", action="store_true", help="skip TTA, ordinal and prior-correction scoring; keep "
                        "val/test probabilities (for bench/ensemble_eval.py)")
    parser.add_argument("--child", nargs=3, metavar=("TREE", "SEED", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    overrides = {**(QUICK if args.quick else {}), **parse_set(args.set)}
    if args.child:
        tree, seed, out = args.child
        result = run_seed(Path(tree), int(seed), overrides, args.split, args.lean)
        Path(out).write_text(json.dumps(result))
        return 0

    from finetune.config import TrainConfig

    TrainConfig.from_dict({"data": "x", **overrides})  # fail on a bad key before any work
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",") if s.strip()]
    work = Path(args.work or Path(tempfile.gettempdir()) / "elpv-accuracy")
    work.mkdir(parents=True, exist_ok=True)
    print(f"ELPV (Deitsch 75/25 split by class and cell type, 10% of train for validation); "
          f"overrides {overrides or 'none (TrainConfig defaults)'}; seeds {seeds}; evaluating {args.split}", flush=True)
    results = []
    for seed in seeds:
        tree = write_tree(work, seed)
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ)
            if args.cold:
                env["FINETUNE_CACHE_DIR"] = os.path.join(tmp, "cache")
            out = os.path.join(tmp, "result.json")
            cmd = [sys.executable, __file__, "--child", str(tree), str(seed), out, "--split", args.split]
            cmd += [x for kv in args.set for x in ("--set", kv)] + (["--quick"] if args.quick else [])
            cmd += ["--lean"] if args.lean else []
            proc = subprocess.run(cmd, env=env)
            if proc.returncode != 0:
                print(f"seed {seed}: failed (exit {proc.returncode})", file=sys.stderr)
                return 1
            r = json.loads(Path(out).read_text())
        results.append(r)
        m = r[args.split]
        print(f"seed {seed}: {args.split} 4-class {m['accuracy']:.2%} (mono {m['mono']:.2%}, poly {m['poly']:.2%}), "
              f"balanced {m['balanced']:.2%}, binary p>0.5 {m['deitsch_binary']:.2%}, 0-vs-rest {m['binary']:.2%}, "
              f"defective recall {m['defective_recall']:.2%}; val 4-class {r['val']['accuracy']:.2%}; epochs {r['epochs']}; "
              f"wall {r['wall_s']:.0f}s ({', '.join(f'{k} {v:.0f}s' for k, v in r['timings'].items())}); "
              f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"overrides": overrides, "split": args.split, "seeds": results}, indent=1))
    acc = mean_std([r[args.split]["accuracy"] * 100 for r in results])
    binary = mean_std([r[args.split]["binary"] * 100 for r in results])
    mono = mean_std([r[args.split]["mono"] * 100 for r in results])
    poly = mean_std([r[args.split]["poly"] * 100 for r in results])
    wall = mean_std([r["wall_s"] for r in results])
    rss = max(r["peak_rss_mb"] for r in results)
    balanced = mean_std([r[args.split]["balanced"] * 100 for r in results])
    deitsch = mean_std([r[args.split]["deitsch_binary"] * 100 for r in results])
    recall = mean_std([r[args.split]["defective_recall"] * 100 for r in results])
    kept = [r.get("kept", "") for r in results]
    for seed, reason in zip(seeds, kept):
        print(f"seed {seed}: {reason}")
    print(f"balanced {balanced[0]:.1f}% +- {balanced[1]:.1f}, defective recall {recall[0]:.1f}% +- {recall[1]:.1f}")
    print(f"mono {mono[0]:.1f}% +- {mono[1]:.1f}, poly {poly[0]:.1f}% +- {poly[1]:.1f}, "
          f"binary {binary[0]:.1f}% +- {binary[1]:.1f}; wall {wall[0]:.0f}s +- {wall[1]:.0f} a seed; "
          f"peak RSS {rss:.0f} MB")
    if all(f"{args.split}_balanced_decision" in r for r in results):
        other = [r[f"{args.split}_balanced_decision"] for r in results]
        b_acc, b_bal = mean_std([m["accuracy"] * 100 for m in other]), mean_std([m["balanced"] * 100 for m in other])
        b_bin = mean_std([m["deitsch_binary"] * 100 for m in other])
        taus = [r["prior_correction"]["tau"] for r in results]
        print(f"same models with --decision balanced (tau {', '.join(f'{t:g}' for t in taus)} fitted on val): "
              f"4-class {b_acc[0]:.1f}% +- {b_acc[1]:.1f}, balanced {b_bal[0]:.1f}% +- {b_bal[1]:.1f}, "
              f"binary p>0.5 {b_bin[0]:.1f}%")
    if all(f"{args.split}_tta" in r for r in results):
        other = [r[f"{args.split}_tta"] for r in results]
        t_acc, t_bal = mean_std([m["accuracy"] * 100 for m in other]), mean_std([m["balanced"] * 100 for m in other])
        t_bin = mean_std([m["deitsch_binary"] * 100 for m in other])
        print(f"same models with --tta: 4-class {t_acc[0]:.1f}% +- {t_acc[1]:.1f}, balanced {t_bal[0]:.1f}% +- "
              f"{t_bal[1]:.1f}, binary p>0.5 {t_bin[0]:.1f}%")
    for metric in ("accuracy", "balanced"):
        key = f"{args.split}_ordinal_{metric}"
        if all(key in r for r in results):
            other = [r[key] for r in results]
            o_acc, o_bal = mean_std([m["accuracy"] * 100 for m in other]), mean_std([m["balanced"] * 100 for m in other])
            o_bin = mean_std([m["deitsch_binary"] * 100 for m in other])
            cuts = ["/".join(f"{c:g}" for c in r[f"ordinal_{metric}_rule"]["cuts"]) for r in results]
            print(f"same models with --ordinal{' --decision balanced' if metric == 'balanced' else ''} (cuts "
                  f"{', '.join(cuts)} fitted on val): 4-class {o_acc[0]:.1f}% +- {o_acc[1]:.1f}, balanced "
                  f"{o_bal[0]:.1f}% +- {o_bal[1]:.1f}, binary p>0.5 {o_bin[0]:.1f}%")
    print(f"ELPV 4-class {args.split} accuracy: {acc[0]:.1f}% +- {acc[1]:.1f} (mean of {len(results)} seed"
          f"{'s' if len(results) > 1 else ''}), balanced {balanced[0]:.1f}%, binary p>0.5 {deitsch[0]:.1f}%, "
          f"0-vs-rest {binary[0]:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
