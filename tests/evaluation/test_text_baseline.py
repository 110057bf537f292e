"""The bag-of-words baseline (finetune/evaluation/text_baseline.py) on small synthetic texts."""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")

from finetune.errors import ConfigError, DataError  # noqa: E402
from finetune.evaluation.text_baseline import C_GRID, TextBaseline, tfidf_baseline  # noqa: E402

FRUIT = ["apple", "pear", "plum", "fig", "cherry", "mango"]
TOOLS = ["hammer", "saw", "drill", "wrench", "chisel", "pliers"]
FILLER = ["the", "a", "and", "with", "of", "my"]


def _texts(words: list[str], n: int, rng: random.Random) -> list[str]:
    return [" ".join(rng.choice(words + FILLER) for _ in range(8)) for _ in range(n)]


@pytest.fixture(scope="module")
def separable() -> tuple[list[str], list[str], list[str], list[str]]:
    rng = random.Random(0)
    train = _texts(FRUIT, 15, rng) + _texts(TOOLS, 15, rng)
    test = _texts(FRUIT, 5, rng) + _texts(TOOLS, 5, rng)
    return train, ["fruit"] * 15 + ["tools"] * 15, test, ["fruit"] * 5 + ["tools"] * 5


@pytest.fixture(scope="module")
def fitted(separable) -> TextBaseline:
    return tfidf_baseline(*separable)


def test_separable_vocabulary_is_learnt_perfectly(fitted: TextBaseline, separable):
    assert fitted.accuracy == 1.0 and fitted.balanced_accuracy == 1.0
    assert fitted.predictions == separable[3]
    assert fitted.classes == ("fruit", "tools")
    assert fitted.probabilities.shape == (10, 2)
    np.testing.assert_allclose(fitted.probabilities.sum(axis=1), 1.0)
    assert fitted.n_train == 30 and fitted.folds == 5 and fitted.seconds > 0


def test_c_is_chosen_from_the_grid_by_cross_validation(fitted: TextBaseline):
    assert fitted.C in C_GRID
    assert list(fitted.cv_accuracy) == list(C_GRID)
    assert all(0.0 <= a <= 1.0 for a in fitted.cv_accuracy.values())
    best = max(fitted.cv_accuracy.values())
    assert fitted.C == min(c for c, a in fitted.cv_accuracy.items() if a == best)  # ties: the smaller C


def test_describe_is_the_report_line(fitted: TextBaseline):
    assert fitted.describe() == (f"bag-of-words baseline (TF-IDF + logistic regression, C={fitted.C:g}): "
                                 f"accuracy 100.0%, balanced 100.0%")


def test_without_test_labels_there_are_no_metrics(separable):
    train, labels, test, _ = separable
    result = tfidf_baseline(train, labels, test)
    assert result.accuracy is None and result.balanced_accuracy is None
    assert result.probabilities.shape == (10, 2)
    assert result.describe().endswith(": no test labels")


def test_deterministic_and_integer_labels(separable):
    train, labels, test, truth = separable
    as_int = [0 if x == "fruit" else 1 for x in labels]
    a = tfidf_baseline(train, as_int, test, [0 if x == "fruit" else 1 for x in truth])
    b = tfidf_baseline(train, np.asarray(as_int), test, np.asarray([0 if x == "fruit" else 1 for x in truth]))
    assert a.classes == (0, 1) and isinstance(a.classes[0], int)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    assert a.accuracy == 1.0
    shuffled = tfidf_baseline(train, labels, test, truth, seed=3, shuffle_folds=True)
    assert shuffled.C in C_GRID and shuffled.accuracy == 1.0


def test_balanced_accuracy_is_the_mean_recall_of_the_test_classes(separable):
    train, labels, test, _ = separable
    wrong = ["fruit"] * 10  # half the texts (the tools) are then mislabelled
    result = tfidf_baseline(train, labels, test, wrong)
    assert result.accuracy == 0.5 and result.balanced_accuracy == 0.5


def test_one_class_is_a_clear_error(separable):
    train, _, test, _ = separable
    with pytest.raises(DataError, match="one class only"):
        tfidf_baseline(train, ["fruit"] * len(train), test)


@pytest.mark.parametrize("texts, labels, match", [
    (["a b", "c d", "e f"], ["x", "y"], "2 labels for 3 texts"),
    (["a b", None, "e f", "g h"], ["x", "y", "x", "y"], "text 1 is a NoneType"),
    (["apple pie", "apple tart", "saw blade"], ["x", "x", "y"], "y has a single text"),
    (["", " ", "!", "?"], ["x", "y", "x", "y"], "no words"),
    ([], [], "none given"),
])
def test_bad_input_is_a_data_error(texts, labels, match):
    with pytest.raises(DataError, match=match):
        tfidf_baseline(texts, labels, ["anything"])


def test_multi_label_targets_are_refused(separable):
    train, labels, test, _ = separable
    with pytest.raises(DataError, match="single-label"):
        tfidf_baseline(train, [[x] for x in labels], test)


def test_missing_scikit_learn_names_the_install_command(separable, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.feature_extraction.text", None)  # import raises ImportError
    with pytest.raises(ConfigError, match="pip install scikit-learn"):
        tfidf_baseline(*separable)
