"""The decision rule: plain argmax, or a class-prior correction for balanced accuracy, fitted on validation.

A classifier trained on imbalanced data predicts ``argmax p(c | x)``, which
favours the frequent classes. The Bayes rule for *balanced* accuracy divides by
the class priors: ``argmax p(c | x) / pi_c ** tau`` (logit adjustment, Menon et
al. 2021, with ``tau = 1``). Here ``tau`` is one number chosen on the validation
split to maximise its balanced accuracy (the class frequencies come from the
training split), and the correction is written into the bias of the model's
last Dense layer (``b_c -= tau * log pi_c``): a stock layer, so evaluate,
predict, export, serve and plain ``keras.models.load_model`` all apply it.

Example:
    >>> import numpy as np
    >>> p = np.array([[0.7, 0.3], [0.6, 0.4], [0.2, 0.8], [0.55, 0.45]])
    >>> fit_tau(p, np.array([0, 1, 1, 1]), [0.75, 0.25])
    (0.5, 0.6666666666666666, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import keras
import numpy as np

from ..evaluation.metrics import balanced_accuracy

TAUS = tuple(np.round(np.arange(0.0, 2.01, 0.25), 2))


@dataclass
class PriorCorrection:
    """What the correction did: ``tau``, the offsets added to the logits, val balanced accuracy before and after."""

    tau: float
    offsets: list[float]
    balanced_before: float
    balanced_after: float

    def describe(self) -> str:
        return (f"decision balanced: class-prior correction tau {self.tau:g} fitted on the validation split "
                f"(its balanced accuracy {self.balanced_before:.1%} -> {self.balanced_after:.1%}); in the last "
                "layer's bias")


def fit_tau(probs: np.ndarray, labels: np.ndarray, priors: Sequence[float],
            taus: Sequence[float] = TAUS) -> tuple[float, float, float]:
    """``(tau, balanced accuracy at tau 0, at tau)``: the ``tau`` maximising balanced accuracy (ties: smallest)."""
    log_p = np.log(np.clip(probs, 1e-12, 1.0))
    log_prior = np.log(np.clip(np.asarray(priors, np.float64), 1e-12, 1.0))
    k = probs.shape[1]
    scores = [balanced_accuracy(labels, np.argmax(log_p - tau * log_prior, axis=1), k) for tau in taus]
    best = int(np.argmax(scores))
    return float(taus[best]), scores[0], scores[best]


def correct_priors(model: keras.Model, val_ds, train_counts: Sequence[int]) -> PriorCorrection:
    """Fit ``tau`` on ``val_ds`` and add ``-tau * log prior`` to the last Dense layer's bias of ``model``."""
    from ..evaluation.predict import probabilities
    from ..models.graph import last_dense

    probs, labels = probabilities(model, val_ds)
    counts = np.asarray(train_counts, np.float64)
    priors = counts / counts.sum()
    tau, before, after = fit_tau(probs, labels, priors)
    last = last_dense(model)
    log_prior = np.log(np.clip(priors, 1e-12, 1.0))
    # one sigmoid unit: its logit is log p1/p0, so the shift is the log prior ratio
    offsets = -tau * (log_prior[1:] - log_prior[:1] if last.units == 1 else log_prior)
    kernel, bias = last.get_weights()
    last.set_weights([kernel, bias + offsets.astype(bias.dtype)])
    return PriorCorrection(tau, offsets.tolist(), before, after)
