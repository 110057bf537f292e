"""Data from a CSV, from arrays and from a tf.data dataset: the same checks and splits as a folder."""

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_RUN
from finetune.data import DataError, as_image_folder, from_arrays, from_csv


@pytest.fixture
def csv_data(tmp_path):
    (tmp_path / "img").mkdir()
    lines = ["path,label,split"]
    for i in range(24):
        Image.new("RGB", (20, 20), (10 * i, 0, 0)).save(tmp_path / "img" / f"{i}.png")
        split = "test" if i >= 20 else ""
        lines.append(f"img/{i}.png,{'cat' if i % 2 else 'dog'},{split}")
    lines.append("img/missing.png,cat,")
    (tmp_path / "img" / "broken.png").write_bytes(b"not a png")
    lines.append("img/broken.png,dog,")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "labels.csv"


def test_csv_paths_split_column_and_bad_rows(csv_data):
    folder = from_csv(csv_data, val_split=0.2, test_split=0.1)
    assert folder.class_names == ["cat", "dog"]
    assert len(folder.splits["test"]) == 4  # the split column wins over test_split
    assert len(folder.splits["train"]) + len(folder.splits["val"]) == 20
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in folder.skipped}
    assert "not found" in reasons["missing.png"] and "cannot decode" in reasons["broken.png"]


@pytest.mark.parametrize("content, message", [
    ("file,class\na.png,x\n", "path,label"),
    ("path,label,split\nimg/0.png,cat,holdout\n", "train, val or test"),
])
def test_csv_errors_name_the_line_and_the_fix(csv_data, content, message):
    bad = csv_data.parent / "bad.csv"
    bad.write_text(content)
    with pytest.raises(DataError, match=message):
        from_csv(bad)


def test_arrays_grayscale_and_validation_data(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE_DIR", str(tmp_path))
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (30, 12, 12), dtype=np.uint8), np.arange(30) % 3
    xv, yv = rng.integers(0, 255, (6, 12, 12, 1), dtype=np.uint8), np.arange(6) % 3
    folder = from_arrays(x, y, validation_data=(xv, yv), test_split=0.2)
    assert folder.class_names == ["0", "1", "2"] and len(folder.splits["val"]) == 6
    assert len(folder.splits["train"]) + len(folder.splits["test"]) == 30
    first = Image.open(folder.splits["val"][0][0])
    assert first.size == (12, 12) and np.array_equal(np.asarray(first), xv[0, ..., 0])
    again = from_arrays(x, y, validation_data=(xv, yv), test_split=0.2)  # the same pixels: the same files
    assert again.splits == folder.splits


@pytest.mark.parametrize("x, message", [
    (np.random.rand(4, 8, 8), "looks like 0-1"),
    (np.full((4, 8, 8), 300.0), "expects 0-255"),
    (np.zeros((4, 8)), "grayscale or"),
])
def test_arrays_with_wrong_pixels_say_what_to_do(x, message, tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE_DIR", str(tmp_path))
    with pytest.raises(DataError, match=message):
        from_arrays(x, [0, 1, 0, 1])


def test_fine_tune_on_arrays_and_on_a_dataset(tmp_path, monkeypatch):
    import tensorflow as tf

    from finetune import fine_tune

    monkeypatch.setenv("FINETUNE_CACHE_DIR", str(tmp_path))
    rng = np.random.default_rng(1)
    y = np.arange(40) % 2
    x = (rng.integers(0, 60, (40, 16, 16, 3)) + 150 * y[:, None, None, None]).astype(np.uint8)
    run = {**TINY_RUN, "image_size": 16, "head_epochs": 3, "tune_epochs": 0, "verbose": 0}
    result = fine_tune((x, y), **run)
    assert result.class_names == ["0", "1"] and result.config.data == result.folder.root
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    from_ds = fine_tune(ds, **run)
    assert from_ds.folder.splits == result.folder.splits  # same pixels and labels: the same PNGs and split


def test_train_command_takes_a_csv(csv_data, tmp_path):
    from click.testing import CliRunner

    from finetune.cli import main

    result = CliRunner().invoke(main, ["train", str(csv_data), "--backbone", "tiny_cnn", "--weights", "none",
                                       "--image-size", "16", "--head-epochs", "2", "--tune-epochs", "0",
                                       "--output", str(tmp_path / "runs"), "--name", "csv", "-q"])
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output and (tmp_path / "runs" / "csv" / "model.keras").exists()
    assert as_image_folder(str(csv_data)).class_names == ["cat", "dog"]
