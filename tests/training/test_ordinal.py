"""The ordinal decision rule: cut points on the expected grade, fitted on validation, applied by every command."""

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from finetune.cli import main
from finetune.config import ConfigError
from finetune.training.ordinal import OrdinalRule, expected_grade, fit_ordinal


def _graded(n_per_class=40, k=4, spread=0.6, pull=0.5, seed=0):
    """Softmax outputs of a model that is pulled toward the frequent grade 0: argmax misses the middle grades,
    while the expected grade keeps their order."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), n_per_class)
    grades = labels * (1 - pull) + rng.normal(0, spread * 0.3, len(labels))
    logits = -((np.arange(k)[None, :] - grades[:, None]) ** 2) / spread
    logits[:, 0] += 1.0  # the prior of a frequent class 0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, labels


def test_fitted_cuts_beat_argmax_on_shrunken_grades_and_stay_ordered():
    probs, labels = _graded()
    rule = fit_ordinal(probs, labels)
    argmax = float(np.mean(probs.argmax(1) == labels))
    ordinal = float(np.mean(rule.classes(probs) == labels))
    assert rule.val_before == pytest.approx(argmax)
    assert rule.val_after == pytest.approx(ordinal)
    assert ordinal > argmax + 0.1
    assert all(a < b for a, b in zip(rule.cuts, rule.cuts[1:]))
    assert 0 < rule.cuts[0] and rule.cuts[-1] < 3


def test_without_a_gain_the_rule_rounds_the_expected_grade():
    probs = np.eye(4)[np.array([0, 1, 2, 3, 1, 2])] * 0.97 + 0.0075
    rule = fit_ordinal(probs, [0, 1, 2, 3, 1, 2])
    assert rule.cuts == [0.5, 1.5, 2.5]
    assert rule.classes(probs).tolist() == [0, 1, 2, 3, 1, 2]
    assert np.allclose(expected_grade(probs), np.rint(expected_grade(probs)), atol=0.1)


def test_balanced_metric_raises_the_rare_middle_grades_recall():
    probs, labels = _graded(seed=1)
    keep = np.r_[np.arange(0, 40), np.arange(40, 48), np.arange(80, 88), np.arange(120, 160)]  # middle grades rare
    acc = fit_ordinal(probs[keep], labels[keep], "accuracy")
    bal = fit_ordinal(probs[keep], labels[keep], "balanced")
    from finetune.evaluation.metrics import balanced_accuracy

    assert bal.metric == "balanced"
    assert bal.val_after == pytest.approx(balanced_accuracy(labels[keep], bal.classes(probs[keep]), 4))
    assert bal.val_after >= balanced_accuracy(labels[keep], acc.classes(probs[keep]), 4)
    middle = np.isin(labels[keep], [1, 2])
    recall = lambda r: np.mean(r.classes(probs[keep])[middle] == labels[keep][middle])  # noqa: E731
    assert recall(bal) >= recall(acc)


def test_rule_round_trips_through_its_file(tmp_path):
    rule = OrdinalRule([0.4, 1.55, 2.6], "balanced", 0.5, 0.6, 197)
    rule.save(tmp_path / "ordinal.json")
    again = OrdinalRule.load(tmp_path / "ordinal.json")
    assert again == rule
    assert "0.4, 1.55, 2.6" in again.describe() and "balanced accuracy" in again.describe()


def test_two_classes_are_refused():
    with pytest.raises(ValueError, match="at least 3"):
        fit_ordinal(np.array([[0.2, 0.8]]), [1])


def test_ordinal_run_writes_its_rule_and_every_command_applies_it(tmp_path, monkeypatch):
    """train --ordinal on 3 graded classes: ordinal.json, the report's note, evaluate names the rule,
    predict's decision column is the rule applied to the probabilities it prints, serve answers it too."""
    from conftest import make_image_folder

    from finetune.runs import load_ordinal

    data = make_image_folder(tmp_path / "data", classes=3, per_class=12)
    flags = ["--backbone", "tiny_cnn", "--weights", "none", "--image-size", "32", "--batch-size", "8", "--augment",
             "none", "--lr", "0.1", "--schedule", "constant", "--warmup-epochs", "0", "-q", "--head-epochs", "3",
             "--tune-epochs", "0", "--val-split", "0.25", "--output", str(tmp_path / "runs"), "--name", "ord"]
    result = CliRunner().invoke(main, ["train", str(data), *flags, "--ordinal"])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "ord"
    rule = load_ordinal(run_dir)
    assert rule is not None and len(rule.cuts) == 2 and rule.fitted_on == 9
    assert json.loads((run_dir / "ordinal.json").read_text())["cuts"] == rule.cuts
    assert "ordinal: the expected grade cut at" in (run_dir / "report.md").read_text()
    assert "ordinal: true" in (run_dir / "config.yaml").read_text()

    result = CliRunner().invoke(main, ["evaluate", str(run_dir), "--tta"])
    assert result.exit_code == 0 and "decided by the run's ordinal" in result.output, result.output
    assert "TTA accuracy" in result.output

    out = tmp_path / "p.csv"
    images = sorted((data / "class_b").iterdir())[:4]
    result = CliRunner().invoke(main, ["predict", str(run_dir), *map(str, images), "--csv", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    names = ["class_a", "class_b", "class_c"]
    for row in rows:
        probs = np.zeros(3)
        for i in (1, 2, 3):
            probs[names.index(row[f"class_{i}"])] = float(row[f"prob_{i}"])
        assert float(row["expected_grade"]) == pytest.approx(expected_grade(probs[None])[0], abs=2e-3)
        assert row["decision"] == names[rule.classes(probs[None])[0]]
    result = CliRunner().invoke(main, ["predict", str(run_dir), str(images[0])])
    assert "(ordinal rule, expected grade" in result.output

    from finetune.serve import Predictor

    answer = Predictor(run_dir).predict_file(str(images[0]), images[0].name)
    assert answer["decision"]["label"] == rows[0]["decision"]


def test_ordinal_needs_three_single_label_classes(tmp_path):
    from conftest import TINY_RUN, make_image_folder

    from finetune.training import fine_tune

    data = make_image_folder(tmp_path / "data", classes=2, per_class=6)
    with pytest.raises(ConfigError, match="ordinal: needs one label per image and at least 3"):
        fine_tune(str(data), **TINY_RUN, head_epochs=1, tune_epochs=0, ordinal=True, verbose=0)
