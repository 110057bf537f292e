"""Classification metrics of the report, from labels and class probabilities."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def classification_metrics(labels: Sequence[int], probs: np.ndarray, class_names: Sequence[str],
                           predictions: Sequence[int] | None = None) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class precision/recall/F1/support, confusion matrix.

    ``predictions`` are the decided classes (e.g. by an ordinal rule); argmax of ``probs`` by default.
    """
    labels = np.asarray(labels, dtype=int)
    k = len(class_names)
    if predictions is not None:
        preds = np.asarray(predictions, dtype=int)
    else:
        preds = np.argmax(probs, axis=1) if len(labels) else np.zeros(0, int)
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (labels, preds), 1)
    per_class = {}
    for i, name in enumerate(class_names):
        tp, support, predicted = cm[i, i], cm[i].sum(), cm[:, i].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(support)}
    eps = 1e-7
    nll = -np.log(np.clip(probs[np.arange(len(labels)), labels], eps, 1.0)).mean() if len(labels) else float("nan")
    return {
        "n": int(len(labels)),
        "accuracy": float((preds == labels).mean()) if len(labels) else float("nan"),
        "balanced_accuracy": balanced_accuracy(labels, preds, k),
        "loss": float(nll),
        "macro_f1": float(np.mean([c["f1"] for c in per_class.values()])),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "class_names": list(class_names),
    }


def balanced_accuracy(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> float:
    """Mean recall over the classes present in ``labels``.

    Example:
        >>> balanced_accuracy(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0]), 2)
        0.5
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    recalls = [np.mean(predictions[labels == c] == c) for c in range(num_classes) if np.any(labels == c)]
    return float(np.mean(recalls)) if recalls else float("nan")


def labels_over(probs: Sequence[float], class_names: Sequence[str], thresholds: Sequence[float]) -> list[str]:
    """The labels whose probability reaches their threshold (a multi-label prediction)."""
    return [name for name, p, t in zip(class_names, probs, thresholds) if p >= t]


def choose_thresholds(labels: np.ndarray, probs: np.ndarray, grid: Sequence[float] | None = None) -> list[float]:
    """Per label, the threshold on its sigmoid that maximises F1 on ``(labels, probs)`` (a validation split).

    Ties go to the threshold nearest 0.5; a label without positives there keeps 0.5.

    Example:
        >>> y = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
        >>> p = np.array([[0.3, 0.9], [0.35, 0.8], [0.1, 0.7], [0.05, 0.2]])
        >>> choose_thresholds(y, p)
        [0.3, 0.5]
    """
    labels, probs = np.asarray(labels, bool), np.asarray(probs, np.float64)
    grid = np.round(np.arange(0.05, 0.951, 0.05), 2) if grid is None else np.asarray(grid)
    chosen = []
    for j in range(labels.shape[1]):
        truth = labels[:, j]
        if not truth.any():
            chosen.append(0.5)
            continue
        scores = [_f1(truth, probs[:, j] >= t) for t in grid]
        best = max(scores)
        candidates = [t for t, s in zip(grid, scores) if s >= best - 1e-12]
        chosen.append(float(min(candidates, key=lambda t: (abs(t - 0.5), t))))
    return chosen


def multilabel_metrics(labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str],
                       thresholds: Sequence[float] | None = None) -> dict[str, Any]:
    """Per-label precision/recall/F1/support at ``thresholds`` (0.5 each by default), micro and macro F1,
    exact-match accuracy (``accuracy``: every label of an image right), label accuracy, mean binary cross-entropy.

    Example:
        >>> m = multilabel_metrics(np.array([[1, 0], [1, 1]]), np.array([[0.9, 0.2], [0.8, 0.4]]), ["cat", "dog"])
        >>> m["accuracy"], m["label_accuracy"], m["per_class"]["dog"]["recall"]
        (0.5, 0.75, 0.0)
    """
    labels, probs = np.asarray(labels, bool).reshape(len(labels), -1), np.asarray(probs, np.float64)
    thresholds = [0.5] * len(class_names) if thresholds is None else list(thresholds)
    preds = probs >= np.asarray(thresholds)[None, :] if len(labels) else np.zeros_like(labels)
    per_class = {}
    for j, name in enumerate(class_names):
        truth, pred = labels[:, j], preds[:, j]
        tp = int((truth & pred).sum())
        precision = tp / pred.sum() if pred.sum() else 0.0
        recall = tp / truth.sum() if truth.sum() else 0.0
        per_class[name] = {"precision": float(precision), "recall": float(recall), "f1": _f1(truth, pred),
                           "support": int(truth.sum()), "threshold": float(thresholds[j])}
    eps = 1e-7
    clipped = np.clip(probs, eps, 1 - eps)
    bce = -(labels * np.log(clipped) + (~labels) * np.log(1 - clipped)).mean() if len(labels) else float("nan")
    n = len(labels)
    return {
        "n": int(n), "multi_label": True,
        "accuracy": float((preds == labels).all(axis=1).mean()) if n else float("nan"),
        "label_accuracy": float((preds == labels).mean()) if n else float("nan"),
        "micro_f1": _f1(labels.ravel(), preds.ravel()),
        "macro_f1": float(np.mean([c["f1"] for c in per_class.values()])),
        "loss": float(bce), "per_class": per_class, "thresholds": [float(t) for t in thresholds],
        "class_names": list(class_names),
    }


def _f1(truth: np.ndarray, pred: np.ndarray) -> float:
    tp = float((truth & pred).sum())
    denominator = float(truth.sum() + pred.sum())
    return 2 * tp / denominator if denominator else 0.0
