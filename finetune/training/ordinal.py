"""The ordinal decision rule: predict the expected grade and cut it at thresholds fitted on validation.

For ordered classes (defect severity, ratings, grades) the class indices are
grades ``0 .. K-1``. The model's softmax gives the expected grade
``E = sum_k k * p_k``, a regression of the grade as Deitsch et al. (2019)
regress the defect probability; the rule predicts the number of cut points
below ``E``. The ``K - 1`` cut points start at the midpoints ``0.5, 1.5, ...``
(plain rounding) and are moved, one at a time, to the value that maximises the
validation split's accuracy (or balanced accuracy); a move must gain on
validation, so with no gain the rule stays plain rounding. Training does not
change: the rule is applied to the model's probabilities by evaluate, predict,
the report and ``serve`` from the run's ``ordinal.json``.

Example:
    >>> import numpy as np
    >>> rule = OrdinalRule([0.5, 1.5, 2.5])
    >>> probs = np.array([[0.6, 0.1, 0.1, 0.2], [0.1, 0.2, 0.3, 0.4]])
    >>> expected_grade(probs).round(2).tolist(), rule.classes(probs).tolist()
    ([0.9, 2.0], [1, 2])
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..evaluation.metrics import balanced_accuracy

STEP = 0.05  # the grid the cut points move on, in grades
SWEEPS = 3


def expected_grade(probs: np.ndarray) -> np.ndarray:
    """``sum_k k * p_k`` for each row of class probabilities."""
    probs = np.asarray(probs, np.float64)
    return probs @ np.arange(probs.shape[1], dtype=np.float64)


def _cut(grades: np.ndarray, cuts) -> np.ndarray:
    """How many of ``cuts`` lie below each grade: the decided class."""
    return (grades[:, None] > np.asarray(cuts)[None, :]).sum(axis=1)


@dataclass
class OrdinalRule:
    """Cut points on the expected grade; class = how many cut points lie below it.

    Args:
        cuts: ``K - 1`` increasing cut points.
        metric: what they were fitted to maximise on validation (``accuracy`` or ``balanced``).
        val_before: that metric on validation under plain argmax.
        val_after: the same under this rule.
    """

    cuts: list[float]
    metric: str = "accuracy"
    val_before: float | None = None
    val_after: float | None = None
    fitted_on: int = 0

    def classes(self, probs: np.ndarray) -> np.ndarray:
        """The decided class index of each row of ``probs`` (none for no rows)."""
        if len(probs) == 0:
            return np.zeros(0, int)
        return _cut(expected_grade(probs), self.cuts)

    def describe(self) -> str:
        text = ("ordinal: the expected grade cut at " + ", ".join(f"{c:g}" for c in self.cuts))
        if self.val_before is not None:
            name = "balanced accuracy" if self.metric == "balanced" else "accuracy"
            text += (f", fitted on {self.fitted_on} validation images to maximise {name} "
                     f"({self.val_before:.1%} under argmax -> {self.val_after:.1%})")
        return text

    def to_dict(self) -> dict:
        return {"cuts": self.cuts, "metric": self.metric, "val_before": self.val_before,
                "val_after": self.val_after, "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, data: dict) -> "OrdinalRule":
        return cls([float(c) for c in data["cuts"]], data.get("metric", "accuracy"), data.get("val_before"),
                   data.get("val_after"), int(data.get("fitted_on", 0)))

    def save(self, path: str | Path) -> None:
        from ..util import atomic_text

        atomic_text(Path(path), json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "OrdinalRule":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _score(labels: np.ndarray, predictions: np.ndarray, k: int, metric: str) -> float:
    if metric == "balanced":
        return balanced_accuracy(labels, predictions, k)
    return float(np.mean(predictions == labels))


def fit_ordinal(probs: np.ndarray, labels: Sequence[int], metric: str = "accuracy") -> OrdinalRule:
    """Cut points maximising ``metric`` on ``(probs, labels)``: coordinate ascent from the midpoints.

    Each cut point in turn moves, on a 0.05 grid strictly between its neighbours, to
    the value with the best score (of equally good values, the nearest to where it
    was); it moves only when that beats the current score, so without a gain the
    rule is plain rounding of the expected grade.

    Example:
        >>> import numpy as np
        >>> p = np.array([[0.9, 0.1, 0.0], [0.5, 0.5, 0.0], [0.4, 0.6, 0.0], [0.0, 0.3, 0.7]])
        >>> fit_ordinal(p, [0, 1, 1, 2]).cuts
        [0.45, 1.5]
    """
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels, int)
    k = probs.shape[1]
    if k < 3:
        raise ValueError("an ordinal rule needs at least 3 ordered classes; with 2 classes use the probability")
    grades = expected_grade(probs)
    cuts = [i + 0.5 for i in range(k - 1)]
    before = _score(labels, np.argmax(probs, axis=1), k, metric)
    best = _score(labels, _cut(grades, cuts), k, metric)
    for _ in range(SWEEPS):
        moved = False
        for j in range(k - 1):
            low = cuts[j - 1] if j else 0.0
            high = cuts[j + 1] if j < k - 2 else k - 1.0
            values = np.round(np.arange(low + STEP, high - STEP / 2, STEP), 4)
            scores = np.array([_score(labels, _cut(grades, cuts[:j] + [float(v)] + cuts[j + 1:]), k, metric)
                               for v in values])
            if len(values) and scores.max() > best + 1e-12:
                tied = values[scores >= scores.max() - 1e-12]
                cuts[j] = float(tied[np.argmin(np.abs(tied - cuts[j]))])  # the best value nearest the old cut
                best, moved = float(scores.max()), True
        if not moved:
            break
    return OrdinalRule([round(c, 4) for c in cuts], metric, before, best, len(labels))
