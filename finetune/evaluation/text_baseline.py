"""The bag-of-words baseline of a text task: TF-IDF n-grams + logistic regression, C by cross-validation.

Every text report prints one line of it beside the fine-tuned model's numbers, on the same split, so the
user sees what fine-tuning bought. Features: TF-IDF of word 1-2-grams and of ``char_wb`` 2-5-grams
(character n-grams inside word boundaries), both with sublinear term frequency (``1 + log tf``), fitted on
the training texts only; a scikit-learn ``LogisticRegression`` on the two side by side, its ``C`` chosen
by stratified 5-fold cross-validation (accuracy; folds in the texts' order, as scikit-learn's ``cv=5``)
over ``{0.3, 1, 3, 10, 30, 100}`` (the vectorisers refitted inside each fold, so no held-out fold leaks
into the vocabulary or the IDF weights; ties go to the smaller, more regularised ``C``), then refitted on
all the training texts.

The texts are used as given: normalisation (HTML tags, Unicode) belongs to the caller's input spec, so the
baseline sees what the model sees. scikit-learn is imported only when the baseline runs (``pip install
scikit-learn``); a missing scikit-learn is a :class:`~finetune.errors.ConfigError` that names the command.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np

from ..errors import ConfigError, DataError

__all__ = ["C_GRID", "CV_FOLDS", "TextBaseline", "tfidf_baseline"]

#: The inverse regularisation strengths cross-validation chooses from.
C_GRID: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
#: Folds of the stratified cross-validation that chooses C (fewer when a class has fewer texts).
CV_FOLDS = 5
SKLEARN_HINT = "pip install scikit-learn"
#: The logistic regression's iteration cap: lbfgs needs more than its default 100 at C=100 on TF-IDF.
MAX_ITER = 2000


@dataclass(frozen=True)
class TextBaseline:
    """What :func:`tfidf_baseline` measured.

    ``probabilities`` has one row per test text and one column per class of ``classes`` (the sorted training
    labels). ``accuracy`` and ``balanced_accuracy`` (mean recall over the classes present in the test labels)
    are ``None`` when no test labels were given. ``cv_accuracy`` maps each C of the grid to its mean
    cross-validated accuracy; ``seconds`` is the whole fit, cross-validation and test predictions included.
    """

    probabilities: np.ndarray
    classes: tuple
    C: float
    cv_accuracy: dict[float, float]
    accuracy: float | None
    balanced_accuracy: float | None
    seconds: float
    n_train: int
    folds: int = CV_FOLDS

    @property
    def predictions(self) -> list:
        """The predicted label of each test text (the most probable class)."""
        return [self.classes[i] for i in np.argmax(self.probabilities, axis=1)]

    def describe(self) -> str:
        """One line, as the report prints it."""
        head = f"bag-of-words baseline (TF-IDF + logistic regression, C={self.C:g})"
        if self.accuracy is None:
            return f"{head}: no test labels"
        return f"{head}: accuracy {self.accuracy:.1%}, balanced {self.balanced_accuracy:.1%}"


def _sklearn():
    try:
        import scipy.sparse
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold
    except ImportError as err:
        raise ConfigError(f"the bag-of-words baseline needs scikit-learn ({err}): {SKLEARN_HINT}") from err
    return TfidfVectorizer, LogisticRegression, StratifiedKFold, scipy.sparse


def _texts(values: Sequence[str], what: str) -> list[str]:
    texts = list(values)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(f"{what}: text {i} is a {type(text).__name__} ({text!r:.40}), not a string")
    return texts


def _labels(values: Sequence[Hashable], what: str, n: int) -> list:
    labels = list(values.tolist() if isinstance(values, np.ndarray) else values)
    if len(labels) != n:
        raise DataError(f"{what}: {len(labels):,} labels for {n:,} texts")
    for i, label in enumerate(labels):
        missing = label is None or (isinstance(label, float) and label != label)
        if missing or isinstance(label, (list, tuple, set, np.ndarray)):
            raise DataError(f"{what}: label {i} is {label!r:.40}; the baseline takes one label per text "
                            f"(single-label tasks only)")
    return labels


def _features(TfidfVectorizer, sparse, texts: list[str]):
    """Two fitted vectorisers (word 1-2, char_wb 2-5) and a function from texts to their stacked features."""
    word = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)
    try:
        fitted = sparse.hstack([word.fit_transform(texts), char.fit_transform(texts)]).tocsr()
    except ValueError as err:  # "empty vocabulary": every text is empty or punctuation
        raise DataError(f"training texts: no words to build a vocabulary from ({err})") from err

    def transform(other: list[str]):
        return sparse.hstack([word.transform(other), char.transform(other)]).tocsr()

    return fitted, transform


def tfidf_baseline(train_texts: Sequence[str], train_labels: Sequence[Hashable], test_texts: Sequence[str],
                   test_labels: Sequence[Hashable] | None = None, *, seed: int = 0,
                   shuffle_folds: bool = False) -> TextBaseline:
    """Fit the bag-of-words baseline on the training texts; its probabilities (and metrics) on the test texts.

    Labels are any hashable values (strings or integers), one per text. The cross-validation folds are
    consecutive stratified blocks of the training texts in their given order (scikit-learn's ``cv=5``, as
    ``GridSearchCV`` makes them; the benchmark anchors were measured so), so the result depends on nothing
    but the texts and their order; ``shuffle_folds=True`` shuffles the folds with ``seed`` instead (the fit
    itself is deterministic either way). Raises :class:`~finetune.errors.DataError` for
    texts that are not strings, a label count that differs from the text count, fewer than two classes, a
    class with a single text, or training texts without a word; :class:`~finetune.errors.ConfigError` when
    scikit-learn is missing.

    Example (two topics with their own words, so the baseline separates them):
        >>> import random
        >>> rng = random.Random(0)
        >>> fruit, tools = ["apple", "pear", "plum", "fig"], ["hammer", "saw", "drill", "wrench"]
        >>> def texts(words, n):
        ...     return [" ".join(rng.choice(words) for _ in range(6)) for _ in range(n)]
        >>> train = texts(fruit, 20) + texts(tools, 20)
        >>> result = tfidf_baseline(train, ["fruit"] * 20 + ["tools"] * 20,
        ...                         ["a ripe plum and a fig", "a saw and a drill"], ["fruit", "tools"])
        >>> result.predictions
        ['fruit', 'tools']
        >>> result.accuracy, result.balanced_accuracy
        (1.0, 1.0)
        >>> result.C in (0.3, 1.0, 3.0, 10.0, 30.0, 100.0), result.probabilities.shape
        (True, (2, 2))
        >>> result.describe()  # doctest: +ELLIPSIS
        'bag-of-words baseline (TF-IDF + logistic regression, C=...): accuracy 100.0%, balanced 100.0%'
    """
    start = time.perf_counter()
    train = _texts(train_texts, "training texts")
    labels = _labels(train_labels, "training labels", len(train))
    test = _texts(test_texts, "test texts")
    truth = None if test_labels is None else _labels(test_labels, "test labels", len(test))
    y = _as_array(labels)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise DataError(f"training labels: one class only ({classes[0]!r:.40})" if len(classes)
                        else "training texts: none given")
    if counts.min() < 2:
        rare = [str(c) for c, k in zip(classes, counts) if k < 2]
        raise DataError(f"training labels: {', '.join(rare[:5])} {'has' if len(rare) == 1 else 'have'} a single "
                        f"text; choosing C by cross-validation needs at least 2 texts of every class")
    TfidfVectorizer, LogisticRegression, StratifiedKFold, sparse = _sklearn()
    folds = int(min(CV_FOLDS, counts.min()))
    splitter = StratifiedKFold(n_splits=folds, shuffle=shuffle_folds, random_state=seed if shuffle_folds else None)
    from joblib import Parallel, delayed  # scikit-learn's own dependency

    splits = splitter.split(np.zeros(len(y)), y)
    scores = np.array(Parallel(n_jobs=min(2, folds))(  # the folds in 2 worker processes
        delayed(_fold_scores)([train[i] for i in fit_rows], y[fit_rows], [train[i] for i in held_rows], y[held_rows])
        for fit_rows, held_rows in splits))
    mean = scores.mean(axis=0)
    best = int(np.flatnonzero(mean >= mean.max() - 1e-12)[0])  # ties: the smaller C
    x_train, transform = _features(TfidfVectorizer, sparse, train)
    model = LogisticRegression(C=C_GRID[best], max_iter=MAX_ITER).fit(x_train, y)
    probabilities = model.predict_proba(transform(test)) if test else np.zeros((0, len(model.classes_)))
    classes_out = tuple(c.item() if isinstance(c, np.generic) else c for c in model.classes_)
    accuracy = balanced = None
    if truth is not None and test:
        predicted, expected = model.classes_[np.argmax(probabilities, axis=1)], _as_array(truth)
        if predicted.dtype.kind != expected.dtype.kind:  # say int labels against str labels: compare as text
            predicted, expected = predicted.astype(str), expected.astype(str)
        hits = predicted == expected
        accuracy = float(hits.mean())
        balanced = float(np.mean([hits[expected == c].mean() for c in np.unique(expected)]))
    return TextBaseline(probabilities=probabilities, classes=classes_out, C=C_GRID[best],
                        cv_accuracy={C: float(m) for C, m in zip(C_GRID, mean)}, accuracy=accuracy,
                        balanced_accuracy=balanced, seconds=time.perf_counter() - start, n_train=len(train),
                        folds=folds)


def _fold_scores(fit_texts: list[str], fit_labels: np.ndarray, held_texts: list[str],
                 held_labels: np.ndarray) -> list[float]:
    """One cross-validation fold: the vectorisers fitted on its training part, then each C's held-out accuracy."""
    TfidfVectorizer, LogisticRegression, _, sparse = _sklearn()
    x_fit, transform = _features(TfidfVectorizer, sparse, fit_texts)
    x_held = transform(held_texts)
    return [float(np.mean(LogisticRegression(C=C, max_iter=MAX_ITER).fit(x_fit, fit_labels).predict(x_held)
                          == held_labels)) for C in C_GRID]


def _as_array(labels: list) -> np.ndarray:
    """Labels as a NumPy array that sorts: numbers stay numbers; anything else (mixed types) becomes text."""
    array = np.asarray(labels)
    return array.astype(str) if array.dtype == object else array
