"""classification_metrics against numbers worked out by hand."""

import math

import numpy as np
import pytest

from finetune.evaluation.metrics import classification_metrics
from finetune.evaluation.predict import as_class_probs

NAMES = ["cat", "dog", "fox"]


def one_hot_probs(preds, k, hit=0.8):
    """Probabilities putting ``hit`` on the predicted class and the rest evenly on the others."""
    probs = np.full((len(preds), k), (1 - hit) / (k - 1))
    probs[np.arange(len(preds)), preds] = hit
    return probs


@pytest.fixture
def imbalanced():
    # 6 cats, 2 dogs, 1 fox.
    labels = [0, 0, 0, 0, 0, 0, 1, 1, 2]
    preds = [0, 0, 0, 0, 1, 2, 1, 0, 2]
    return labels, one_hot_probs(preds, 3)


def test_confusion_matrix_has_true_classes_as_rows(imbalanced):
    m = classification_metrics(*imbalanced, NAMES)
    assert m["confusion_matrix"] == [[4, 1, 1],
                                     [1, 1, 0],
                                     [0, 0, 1]]
    assert m["class_names"] == NAMES and m["n"] == 9


def test_per_class_precision_recall_f1_support(imbalanced):
    m = classification_metrics(*imbalanced, NAMES)["per_class"]
    # cat: 4 of 5 "cat" predictions right, 4 of 6 cats found
    assert m["cat"]["precision"] == pytest.approx(4 / 5)
    assert m["cat"]["recall"] == pytest.approx(4 / 6)
    assert m["cat"]["f1"] == pytest.approx(8 / 11)  # 2 * 0.8 * 2/3 / (0.8 + 2/3)
    # dog: 1 of 2 "dog" predictions right, 1 of 2 dogs found
    assert (m["dog"]["precision"], m["dog"]["recall"], m["dog"]["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    # fox: 1 of 2 "fox" predictions right, the one fox found
    assert (m["fox"]["precision"], m["fox"]["recall"], m["fox"]["f1"]) == pytest.approx((0.5, 1.0, 2 / 3))
    assert [m[name]["support"] for name in NAMES] == [6, 2, 1]


def test_accuracy_balanced_accuracy_macro_f1_and_loss(imbalanced):
    m = classification_metrics(*imbalanced, NAMES)
    assert m["accuracy"] == pytest.approx(6 / 9)
    assert m["balanced_accuracy"] == pytest.approx((4 / 6 + 1 / 2 + 1) / 3)  # 13/18, above plain accuracy
    assert m["macro_f1"] == pytest.approx((8 / 11 + 1 / 2 + 2 / 3) / 3)
    assert m["loss"] == pytest.approx(-(6 * math.log(0.8) + 3 * math.log(0.1)) / 9)


def test_always_predicting_the_majority_class():
    labels = [0] * 8 + [1] * 2
    m = classification_metrics(labels, one_hot_probs([0] * 10, 2), ["ok", "defect"])
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["per_class"]["defect"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert m["per_class"]["ok"]["precision"] == pytest.approx(0.8)


def test_class_without_test_images_is_left_out_of_balanced_accuracy():
    m = classification_metrics([0, 0, 1, 1], one_hot_probs([0, 2, 1, 1], 3), NAMES)
    assert m["confusion_matrix"] == [[1, 0, 1], [0, 2, 0], [0, 0, 0]]
    assert m["per_class"]["fox"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 1) / 2)  # not (1/2 + 1 + 0) / 3


def test_binary_sigmoid_outputs_as_two_class_columns():
    sigmoid = np.array([[0.1], [0.7], [0.4], [0.9], [0.2]])
    labels = [0, 0, 1, 1, 1]
    m = classification_metrics(labels, as_class_probs(sigmoid), ["neg", "pos"])
    # predicted: 0, 1, 0, 1, 0
    assert m["confusion_matrix"] == [[1, 1], [2, 1]]
    assert m["accuracy"] == pytest.approx(2 / 5)
    assert m["per_class"]["pos"]["precision"] == pytest.approx(1 / 2)
    assert m["per_class"]["pos"]["recall"] == pytest.approx(1 / 3)
    assert m["per_class"]["pos"]["f1"] == pytest.approx(0.4)  # 2 * 1/2 * 1/3 / (1/2 + 1/3)
    assert m["per_class"]["neg"]["recall"] == pytest.approx(1 / 2)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    p_true = [0.9, 0.3, 0.4, 0.9, 0.2]
    assert m["loss"] == pytest.approx(-np.mean(np.log(p_true)))


def test_no_test_images():
    m = classification_metrics([], np.zeros((0, 3)), NAMES)
    assert m["n"] == 0 and math.isnan(m["accuracy"]) and math.isnan(m["balanced_accuracy"])
    assert m["confusion_matrix"] == [[0] * 3] * 3
