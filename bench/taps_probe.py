"""Which frozen Lite0 features carry ELPV's classes best: the top alone, or earlier blocks pooled beside it,
from one view or averaged over the 8 flips/90-degree rotations (EL cells have no orientation)?

A linear probe (scikit-learn's LogisticRegression on standardised features, C chosen by inner CV) scored by
5-fold cross-validation on each seed's 1,968 training+validation cells of the Deitsch split
(``bench/elpv_accuracy.py``); the 656 test cells are never read. One feature pass per view over all
2,624 cells (about a minute each on 2 cores), cached in ``bench/out/taps_features.npz``.

    .venv/bin/python bench/taps_probe.py                # 3 seeds; the headline is the last line
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "examples"))

import numpy as np  # noqa: E402

TAPS = {"top": "top_activation", "b7": "block7a_project_bn", "b6": "block6d_add", "b5": "block5c_add",
        "b4": "block4c_add"}
VIEWS = 8
CACHE = ROOT / "bench" / "out" / "taps_features.npz"
CONFIGS = {
    "top, 1 view": (["top"], 1),
    "top + b5, 1 view": (["top", "b5"], 1),
    "top + b6 + b5, 1 view": (["top", "b6", "b5"], 1),
    "top, 4 flips": (["top"], 4),
    "top, 8 views": (["top"], 8),
    "top + b5, 4 flips": (["top", "b5"], 4),
    "top + b5, 8 views": (["top", "b5"], 8),
    "top + b6 + b5, 8 views": (["top", "b6", "b5"], 8),
    "top + b7 + b6 + b5 + b4, 8 views": (["top", "b7", "b6", "b5", "b4"], 8),
}


def view(x, k: int):
    """The k-th of the 8 dihedral views (k < 4: identity, h-flip, v-flip, both; k >= 4: the same, transposed)."""
    import tensorflow as tf

    if k >= 4:
        x = tf.transpose(x, [0, 2, 1, 3])
    if k % 4 in (1, 3):
        x = x[:, :, ::-1]
    if k % 4 in (2, 3):
        x = x[:, ::-1]
    return x


def extract(paths: list[str]) -> dict[str, np.ndarray]:
    import keras

    from finetune.data import make_dataset
    from finetune.models import get_backbone, preprocessing_layer

    spec = get_backbone("efficientnet_lite0")
    base = spec.build((224, 224, 3), spec.resolve_weights("imagenet"))
    pre = preprocessing_layer(spec.preprocessing)
    outs = [keras.layers.GlobalAveragePooling2D()(base.get_layer(name).output) for name in TAPS.values()]
    tapped = keras.Model(base.input, outs)
    ds = make_dataset([(p, 0) for p in paths], 224, batch_size=64, resize="crop", cache=None)
    feats = {name: np.zeros((VIEWS, len(paths), int(o.shape[-1])), np.float32) for name, o in zip(TAPS, outs)}
    for k in range(VIEWS):
        start, row = time.perf_counter(), 0
        for x, *_ in ds:
            got = tapped(pre(view(x, k)), training=False)
            for name, value in zip(TAPS, got):
                feats[name][k, row:row + len(x)] = value.numpy()
            row += len(x)
        print(f"view {k}: {time.perf_counter() - start:.0f} s", flush=True)
    return feats


def cv_accuracy(x: np.ndarray, y: np.ndarray, seed: int) -> float:
    """5-fold CV accuracy at the best C of a small grid (the same optimism for every configuration)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    return max(float(np.mean(cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=500)),
                                             x, y, cv=folds, n_jobs=2))) for c in (0.003, 0.01, 0.03))


def views_test_time(feats: dict, index: dict, seeds: list[int]) -> None:
    """Where the view gain comes from: a probe trained on views as augmentation, scored on one view or with
    its probabilities averaged over views at test time (the 4 flips it was trained on, or all 8)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    from elpv_accuracy import deitsch_split

    for trained_on in (8, 4):
        acc: dict[str, list[float]] = {"1 view": [], "4 flips averaged": [], "8 views averaged": []}
        for seed in seeds:
            splits = deitsch_split(seed)
            rows = splits["train"] + splits["val"]
            idx = np.array([index[str(p)] for p, _, _ in rows])
            y = np.array([int(cls[0]) for _, cls, _ in rows])
            f = feats["top"][:, idx]
            for tr, te in StratifiedKFold(5, shuffle=True, random_state=seed).split(idx, y):
                train_x = f[:trained_on, tr].reshape(-1, f.shape[2])
                scaler = StandardScaler().fit(train_x)
                probe = LogisticRegression(C=0.01, max_iter=500).fit(scaler.transform(train_x), np.tile(y[tr], trained_on))
                probs = [probe.predict_proba(scaler.transform(f[v, te])) for v in range(VIEWS)]
                acc["1 view"].append(np.mean(probs[0].argmax(1) == y[te]))
                acc["4 flips averaged"].append(np.mean(np.mean(probs[:4], 0).argmax(1) == y[te]))
                acc["8 views averaged"].append(np.mean(np.mean(probs, 0).argmax(1) == y[te]))
        print(f"top, trained on {trained_on} views as augmentation: "
              + ", ".join(f"{k} {100 * np.mean(v):.1f}%" for k, v in acc.items()), flush=True)


def main() -> int:
    from elpv_accuracy import deitsch_split

    seeds = [0, 1, 2]
    everything = sorted({str(p) for rows in deitsch_split(0).values() for p, _, _ in rows})
    if CACHE.exists():
        feats = dict(np.load(CACHE))
    else:
        feats = extract(everything)
        np.savez(CACHE, **feats)
    index = {p: i for i, p in enumerate(everything)}
    results: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for seed in seeds:
        splits = deitsch_split(seed)
        rows = splits["train"] + splits["val"]  # never the test cells
        idx = np.array([index[str(p)] for p, _, _ in rows])
        y = np.array([int(cls[0]) for _, cls, _ in rows])
        for name, (taps, views) in CONFIGS.items():
            x = np.concatenate([feats[t][:views, idx].mean(0) for t in taps], axis=1)
            results[name].append(cv_accuracy(x, y, seed))
            print(f"seed {seed}  {name:34s} 5-fold CV accuracy {100 * results[name][-1]:.1f}%", flush=True)
    base = np.array(results["top, 1 view"])
    for name, accs in results.items():
        diff = 100 * (np.array(accs) - base)
        print(f"{name:34s} {100 * np.mean(accs):.1f}%  paired vs top/1 view {diff.mean():+.1f} +- {diff.std(ddof=1):.1f}")
    views_test_time(feats, index, seeds)
    best = max(results, key=lambda n: np.mean(results[n]))
    gain = 100 * (np.mean(results[best]) - base.mean())
    print(f"ELPV linear probe, 5-fold CV on train+val, 3 seeds: best '{best}' {100 * np.mean(results[best]):.1f}% "
          f"({gain:+.1f} over the top alone, one view)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
