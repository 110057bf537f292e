"""Classification metrics of the report, from labels and class probabilities."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def classification_metrics(labels: Sequence[int], probs: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class precision/recall/F1/support, confusion matrix."""
    labels = np.asarray(labels, dtype=int)
    k = len(class_names)
    preds = np.argmax(probs, axis=1) if len(labels) else np.zeros(0, int)
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (labels, preds), 1)
    per_class = {}
    recalls = []
    for i, name in enumerate(class_names):
        tp, support, predicted = cm[i, i], cm[i].sum(), cm[:, i].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(support)}
        if support:
            recalls.append(recall)
    eps = 1e-7
    nll = -np.log(np.clip(probs[np.arange(len(labels)), labels], eps, 1.0)).mean() if len(labels) else float("nan")
    return {
        "n": int(len(labels)),
        "accuracy": float((preds == labels).mean()) if len(labels) else float("nan"),
        "balanced_accuracy": float(np.mean(recalls)) if recalls else float("nan"),
        "loss": float(nll),
        "macro_f1": float(np.mean([c["f1"] for c in per_class.values()])),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "class_names": list(class_names),
    }
