"""Multi-label from a CSV: one sigmoid per label, binary cross-entropy, thresholds chosen on val, per-label metrics,
and `predict` / `evaluate` that name every label an image carries."""

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import TINY_RUN
from finetune.cli import main
from finetune.data import DataError, from_csv
from finetune.evaluation.metrics import choose_thresholds, multilabel_metrics


def _write(root, n=90, seed=0):
    """Images with a red left half (label ``red``), a blue right half (``blue``), both, or neither (``none``)."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True)
    lines = ["path,label"]
    for i in range(n):
        red, blue = i % 3 != 1, i % 3 != 0  # red only, blue only, both
        img = rng.integers(0, 60, (24, 24, 3)).astype(np.uint8)
        if red:
            img[:, :12, 0] = 230
        if blue:
            img[:, 12:, 2] = 230
        Image.fromarray(img).save(root / "img" / f"{i}.png")
        lines.append(f"img/{i}.png,{';'.join(n for n, on in (('red', red), ('blue', blue)) if on)}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


def test_csv_with_several_labels_in_a_cell_is_multi_label(tmp_path):
    folder = from_csv(_write(tmp_path), val_split=0.2, test_split=0.2, seed=0)
    assert folder.multi_label and not folder.binary and folder.class_names == ["blue", "red"]
    assert sorted(len(v) for v in folder.splits.values()) == [18, 18, 54]
    label = dict(folder.splits["train"] + folder.splits["val"] + folder.splits["test"])[str(tmp_path / "img" / "2.png")]
    assert label == (1, 1)  # "red;blue" -> both flags, in class_names order
    assert sum(folder.counts("train")) > len(folder.splits["train"])  # some images carry two labels


def test_space_separated_labels_and_a_label_only_in_test(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    for i in range(4):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.png")
    (tmp_path / "l.csv").write_text("path,label,split\n0.png,cat dog,train\n1.png,cat,train\n2.png,dog,val\n"
                                    "3.png,bird,test\n")
    with pytest.raises(DataError, match="bird never occur in the training split"), \
            pytest.warns(UserWarning, match="separate the labels of a cell with ';'"):
        from_csv(tmp_path / "l.csv")


def test_thresholds_maximise_f1_and_metrics_count_per_label():
    y = np.array([[1, 0], [1, 1], [0, 1], [0, 0], [1, 0]])
    p = np.array([[0.3, 0.1], [0.35, 0.8], [0.2, 0.7], [0.05, 0.6], [0.4, 0.2]])
    thresholds = choose_thresholds(y, p)
    assert thresholds[0] == pytest.approx(0.3)  # 0.5 would miss every red; 0.25 would add a false positive
    m = multilabel_metrics(y, p, ["red", "blue"], thresholds)
    assert m["per_class"]["red"]["recall"] == 1.0 and m["per_class"]["red"]["support"] == 3
    at_half = multilabel_metrics(y, p, ["red", "blue"])
    assert at_half["per_class"]["red"]["recall"] == 0.0 and m["micro_f1"] > at_half["micro_f1"]


def test_train_predict_evaluate_a_multi_label_csv(tmp_path):
    data = _write(tmp_path / "data")
    runner = CliRunner()
    args = ["train", str(data), "--backbone", "tiny_cnn", "--weights", "none", "--image-size", "24",
            "--head-epochs", "25", "--tune-epochs", "0", "--lr", "0.05", "--batch-size", "8", "--augment", "none",
            "--output", str(tmp_path / "runs"), "--name", "ml", "-q"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "test exact match" in result.output
    run = tmp_path / "runs" / "ml"
    import keras

    model = keras.models.load_model(run / "model.keras")
    assert model.output_shape == (None, 2) and model.layers[-1].layers[-1].activation.__name__ == "sigmoid"
    thresholds = json.loads((run / "thresholds.json").read_text())
    assert thresholds["labels"] == ["blue", "red"] and len(thresholds["thresholds"]) == 2
    history = list(csv.DictReader((run / "history.csv").open()))
    assert float(history[-1]["accuracy"]) > 0.8  # the fraction of labels right, not a one-class reading
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    assert metrics["multi_label"] and metrics["micro_f1"] > 0.8, metrics
    report = (run / "report.md").read_text()
    assert "| label | threshold |" in report and "Exact match" in report

    out = tmp_path / "pred.csv"
    files = [str(tmp_path / "data" / "img" / f"{i}.png") for i in (0, 1, 2)]  # red, blue, both
    result = runner.invoke(main, ["predict", str(run), *files, "--csv", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["path", "labels", "prob_blue", "prob_red"]
    assert [set(r["labels"].split(";")) for r in rows] == [{"red"}, {"blue"}, {"blue", "red"}]

    result = runner.invoke(main, ["evaluate", str(run)])
    assert result.exit_code == 0, result.output
    assert "exact match" in result.output and "threshold" in result.output


def test_balanced_class_weight_is_refused_for_multi_label(tmp_path):
    from finetune import fine_tune
    from finetune.config import ConfigError

    with pytest.raises(ConfigError, match="multi-label task takes none"):
        fine_tune(str(_write(tmp_path)), **{**TINY_RUN, "class_weight": "balanced", "verbose": 0})
