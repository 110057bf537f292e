"""The last step of a text run: fit a bag-of-n-grams model on the training texts and blend it in, half and half.

:func:`fit_token_bag` fits :class:`~finetune.models.token_bag.TokenBag`'s weights: TF-IDF of the training
texts' token 1-2-grams and the tokens' character 2-5-grams (IDF from the training texts), scikit-learn's
``LogisticRegressionCV`` with ``C`` chosen by stratified 5-fold cross-validation on log loss (the blend averages
probabilities, so they must be calibrated; each fold walks the C grid warm-started). The network and the
bag get equal shares (:data:`BLEND_SHARE`): a share picked on the validation split was tried first and was
noise at these sizes (45 val reviews of 300 picked the bag alone on one draw), while on held-out training
reviews the blend's accuracy is flat for shares 0.4-0.6 (bench/README.md, Text). :func:`log_losses` says on
val what each part and the blend score.

Example:
    >>> p_net = np.array([[0.9, 0.1], [0.9, 0.1]]); p_bag = np.array([[0.1, 0.9], [0.1, 0.9]])
    >>> {k: round(v, 3) for k, v in log_losses(p_net, p_bag, np.array([0, 1])).items()}  # each right once
    {'network': 1.204, 'bag': 1.204, 'blend': 0.693}
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..evaluation.text_baseline import C_GRID  # the report's TF-IDF baseline's grid
from ..models.token_bag import BIGRAM_BINS, CHAR_BINS, TokenBag, bag_keys, char_gram_table

__all__ = ["BLEND_SHARE", "FittedBag", "fit_token_bag", "log_losses"]

#: The network's share of the blended probabilities (the bag has the rest).
BLEND_SHARE = 0.5


@dataclass
class FittedBag:
    """A fitted :class:`TokenBag`: the layer and how it was chosen."""

    layer: TokenBag
    C: float
    cv_log_loss: float
    seconds: float


def _counts(inputs: dict, vocabulary_size: int, bins: int, chars: np.ndarray | None = None, char_bins: int = 0):
    from scipy import sparse

    n = len(inputs["token_ids"])
    rows, features = bag_keys(inputs["token_ids"], inputs["padding_mask"], vocabulary_size, bins, chars)
    matrix = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, features)),
                               shape=(n, vocabulary_size + bins + char_bins))
    matrix.sum_duplicates()
    return matrix


def _tfidf(counts, idf: np.ndarray):
    from sklearn.preprocessing import normalize

    x = counts.copy()
    x.data = 1.0 + np.log(x.data)
    return normalize(x.multiply(idf[None, :]).tocsr())


def fit_token_bag(inputs: dict, labels: np.ndarray, num_classes: int, vocabulary_size: int, *,
                  bigram_bins: int = BIGRAM_BINS, tokens: list[str] | None = None, char_bins: int = CHAR_BINS,
                  seed: int = 0) -> FittedBag:
    """A :class:`TokenBag` fitted on the tokenized training texts ``inputs`` (``token_ids``, ``padding_mask``) and
    their class indices ``labels`` (every class among them); with the string of every token id (``tokens``)
    the tokens' character n-grams are features too."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    start = time.perf_counter()
    labels = np.asarray(labels).astype(int)
    chars = char_gram_table(list(tokens)[:vocabulary_size] + [""] * (vocabulary_size - len(tokens)), char_bins) \
        if tokens is not None else None
    char_bins = char_bins if chars is not None else 0
    counts = _counts(inputs, vocabulary_size, bigram_bins, chars, char_bins)
    df = np.bincount(counts.indices, minlength=counts.shape[1])
    idf = (np.log((1.0 + counts.shape[0]) / (1.0 + df)) + 1.0).astype(np.float32)  # scikit-learn's smooth idf
    x = _tfidf(counts, idf)
    folds = max(2, min(5, int(np.bincount(labels, minlength=num_classes).min())))
    # Each fold fits the grid's C values in turn, warm-started from the last: half the time of separate fits.
    model = LogisticRegressionCV(Cs=list(C_GRID), cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                                 scoring="neg_log_loss", max_iter=2000, n_jobs=2, **_plain_l2()).fit(x, labels)
    units = 1 if num_classes == 2 else num_classes
    layer = TokenBag(vocabulary_size, units, bigram_bins, char_bins, chars.shape[1] if chars is not None else 0,
                     name="token_bag")
    kernel = model.coef_.T.astype(np.float32)
    layer.set_weights([idf, kernel, model.intercept_.astype(np.float32)] + ([chars] if chars is not None else []))
    scores = model.scores_
    scores = np.asarray(next(iter(scores.values())) if isinstance(scores, dict) else scores)  # one entry per class
    cv_loss = -scores.reshape(folds, -1).mean(axis=0)  # per C, over the folds
    return FittedBag(layer, float(np.ravel(model.C_)[0]), float(cv_loss.min()), time.perf_counter() - start)


def _plain_l2() -> dict:
    """The arguments that ask scikit-learn >= 1.8's ``LogisticRegressionCV`` for its plain L2 fit and its new
    fitted attributes without a FutureWarning (older versions take neither)."""
    import inspect

    from sklearn.linear_model import LogisticRegressionCV

    known = inspect.signature(LogisticRegressionCV).parameters
    return {k: v for k, v in (("l1_ratios", (0.0,)), ("use_legacy_attributes", False)) if k in known}


def log_losses(p_net: np.ndarray, p_bag: np.ndarray, labels: np.ndarray,
               share: float = BLEND_SHARE) -> dict[str, float]:
    """Mean log loss of the network, the bag and their blend (``share`` on the network) on class indices
    ``labels`` (probabilities as class columns)."""
    labels = np.asarray(labels).astype(int)

    def loss(p):
        return float(-np.mean(np.log(np.clip(p[np.arange(len(labels)), labels], 1e-7, 1.0))))

    return {"network": loss(p_net), "bag": loss(p_bag), "blend": loss(share * p_net + (1 - share) * p_bag)}
