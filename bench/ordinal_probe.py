"""Is an ordinal *loss* worth building? CORAL (Cao et al. 2020: one shared score, K-1 cut biases, a binary
cross-entropy per cut) against a softmax, both as linear probes on the frozen Lite0 features that
``bench/taps_probe.py`` cached (top, one view), scored by 5-fold CV on each split's train+val (never test).

    .venv/bin/python bench/taps_probe.py        # once: writes bench/out/taps_features.npz
    .venv/bin/python bench/ordinal_probe.py     # the headline is the last line
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "examples")]

import numpy as np  # noqa: E402

K = 4
L2 = float(os.environ.get("PROBE_L2", "1e-2"))  # softmax probe: 70-73% at 1e-3, 74-76% at 1e-2 (sklearn's: 76%)


def _cuts_layer():
    import keras

    class Cuts(keras.layers.Layer):
        """K-1 biases added to one shared score: logit of P(grade > k)."""

        def build(self, input_shape):
            self.b = self.add_weight(shape=(K - 1,), initializer=keras.initializers.Constant(np.linspace(1, -1, K - 1)))

        def call(self, score):
            return score + self.b

    return Cuts


def fit_predict(kind: str, x: np.ndarray, y: np.ndarray, test: np.ndarray, seed: int) -> np.ndarray:
    """Classes predicted for ``test`` by a linear probe trained full-batch (Adam, L2 ``L2``, 300 steps)."""
    import keras

    Cuts = _cuts_layer()
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((x.shape[1],))
    reg = keras.regularizers.L2(L2)
    if kind == "softmax":
        model = keras.Model(inputs, keras.layers.Dense(K, activation="softmax", kernel_regularizer=reg)(inputs))
        model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=300, batch_size=len(x), verbose=0)
        return model.predict(test, verbose=0).argmax(1)
    score = keras.layers.Dense(1, use_bias=False, kernel_regularizer=reg)(inputs)
    model = keras.Model(inputs, keras.layers.Activation("sigmoid")(Cuts()(score)))
    levels = (y[:, None] > np.arange(K - 1)[None]).astype("float32")
    model.compile(keras.optimizers.Adam(0.01), "binary_crossentropy")
    model.fit(x, levels, epochs=300, batch_size=len(x), verbose=0)
    return (model.predict(test, verbose=0) > 0.5).sum(1)


def scores(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {"4-class": 100 * np.mean(pred == y),
            "balanced": 100 * np.mean([np.mean(pred[y == k] == k) for k in range(K)]),
            "binary p>0.5": 100 * np.mean((pred >= 2) == (y >= 2))}


def main() -> int:
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    from elpv_accuracy import deitsch_split

    feats = np.load(ROOT / "bench" / "out" / "taps_features.npz")["top"][0]
    everything = sorted({str(p) for rows in deitsch_split(0).values() for p, _, _ in rows})
    index = {p: i for i, p in enumerate(everything)}
    results: dict[str, list[dict]] = {"softmax": [], "coral": []}
    for seed in (0, 1, 2):
        splits = deitsch_split(seed)
        rows = splits["train"] + splits["val"]
        idx = np.array([index[str(p)] for p, _, _ in rows])
        y = np.array([int(cls[0]) for _, cls, _ in rows])
        x = feats[idx]
        preds = {kind: np.zeros_like(y) for kind in results}
        for tr, te in StratifiedKFold(5, shuffle=True, random_state=seed).split(x, y):
            scaler = StandardScaler().fit(x[tr])
            for kind in results:
                preds[kind][te] = fit_predict(kind, scaler.transform(x[tr]), y[tr], scaler.transform(x[te]), seed)
        for kind in results:
            results[kind].append(scores(preds[kind], y))
            print(f"split {seed} {kind:8s} " + ", ".join(f"{k} {v:.1f}%" for k, v in results[kind][-1].items()),
                  flush=True)
    mean = {kind: {k: np.mean([r[k] for r in rs]) for k in rs[0]} for kind, rs in results.items()}
    diff = {k: mean["coral"][k] - mean["softmax"][k] for k in mean["coral"]}
    print("ELPV linear probe, CORAL - softmax (5-fold CV on train+val, 3 splits): "
          + ", ".join(f"{k} {v:+.1f}" for k, v in diff.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
