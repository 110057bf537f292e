"""The run report: Markdown text, and the curves and confusion plots as PNG files."""

import numpy as np
import pytest
from PIL import Image

from finetune.evaluation.metrics import classification_metrics
from finetune.evaluation.report import markdown_report, plot_confusion, plot_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

HISTORY = [
    {"phase": "head", "epoch": 1, "loss": 1.1, "accuracy": 0.40, "val_loss": 1.0, "val_accuracy": 0.45},
    {"phase": "head", "epoch": 2, "loss": 0.8, "accuracy": 0.60, "val_loss": 0.9, "val_accuracy": 0.55},
    {"phase": "tune", "epoch": 3, "loss": 0.5, "accuracy": 0.80, "val_loss": 0.7, "val_accuracy": 0.70},
]


@pytest.fixture
def metrics():
    labels = [0, 0, 0, 1, 1, 2]
    probs = np.eye(3)[[0, 0, 1, 1, 1, 2]] * 0.7 + 0.1
    return classification_metrics(labels, probs, ["roses", "tulips", "daisies"])


def assert_png(path, size=None):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()  # checks every chunk's CRC
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG" and image.mode in ("RGB", "RGBA")
        if size is not None:
            assert image.size == size
        assert len(np.unique(np.asarray(image.convert("L")))) > 10  # something was drawn


def test_markdown_report_lists_settings_metrics_plots_and_skipped_files(metrics):
    text = markdown_report(title="finetune run `flowers`", summary={"backbone": "tiny_cnn", "epochs": 3},
                           metrics=metrics, skipped=[("data/roses/bad.jpg", "truncated file")])
    lines = text.splitlines()
    assert lines[0] == "# finetune run `flowers`"
    assert "- **backbone**: tiny_cnn" in lines and "- **epochs**: 3" in lines
    assert "## Test metrics" in lines
    # 5 of 6 right; recalls 2/3, 1, 1; F1 0.8, 0.8, 1
    assert "Accuracy **83.33%** on 6 test images (balanced accuracy 88.89%, macro F1 0.867)." in lines
    assert "| class | precision | recall | F1 | support |" in lines
    assert "| roses | 1.000 | 0.667 | 0.800 | 3 |" in lines
    assert "| tulips | 0.667 | 1.000 | 0.800 | 2 |" in lines
    assert "| daisies | 1.000 | 1.000 | 1.000 | 1 |" in lines
    assert "### Training curves" in lines and "![curves](curves.png)" in lines
    assert "### Confusion matrix" in lines and "![confusion](confusion.png)" in lines
    assert "## Skipped files (1)" in lines and "- `data/roses/bad.jpg`: truncated file" in lines
    assert text.endswith("\n")


def test_markdown_report_without_test_metrics_or_skipped_files():
    text = markdown_report(title="t", summary={}, metrics=None, skipped=[], images=["curves.png", "worst.png"])
    assert "## Test metrics" not in text
    assert "### Worst mistakes (test images with the highest loss; Grad-CAM of the predicted class overlaid)" in text and "![worst](worst.png)" in text
    assert "## Skipped files (0)" in text and "None: every image file was readable." in text
    assert "confusion" not in text


def test_markdown_report_shortens_a_long_skipped_list():
    skipped = [(f"img_{i}.jpg", "unreadable") for i in range(250)]
    text = markdown_report(title="t", summary={}, metrics={"n": 0}, skipped=skipped)
    assert "## Skipped files (250)" in text
    assert text.count(": unreadable") == 200 and "- ... and 50 more (see skipped.csv)" in text
    assert "## Test metrics" not in text  # no test images


def test_plot_curves_writes_a_png(tmp_path):
    plot_curves(HISTORY, tmp_path / "curves.png", unfreeze_epoch=3)
    assert_png(tmp_path / "curves.png", size=(1210, 462))  # 11 x 4.2 inches at 110 dpi


def test_plot_curves_without_validation_columns(tmp_path):
    history = [{k: v for k, v in row.items() if not k.startswith("val_")} for row in HISTORY]
    plot_curves(history, tmp_path / "curves.png")
    assert_png(tmp_path / "curves.png")


def test_plot_confusion_writes_a_png(metrics, tmp_path):
    plot_confusion(metrics["confusion_matrix"], metrics["class_names"], tmp_path / "confusion.png")
    assert_png(tmp_path / "confusion.png")


def test_plot_confusion_with_many_long_class_names(tmp_path):
    names = [f"a rather long class name {i}" for i in range(12)]
    matrix = np.random.default_rng(0).integers(0, 20, (12, 12))
    plot_confusion(matrix, names, tmp_path / "confusion.png", title="Confusion matrix (val)")
    assert_png(tmp_path / "confusion.png")


def test_markdown_report_names_the_split_it_scored_and_the_kind_of_example(metrics):
    text = markdown_report(title="t", summary={}, metrics={**metrics, "split": "val"}, skipped=[], examples="texts")
    assert "## Validation metrics (no test split)" in text and "## Test metrics" not in text
    assert "on 6 val texts (balanced accuracy" in text
    assert "None: every text was readable." in text
