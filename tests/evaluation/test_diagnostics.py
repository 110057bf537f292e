"""Worst mistakes and test-time augmentation."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from PIL import Image

from finetune import build_model, scan_folder
from finetune.evaluation.diagnostics import evaluate_tta, plot_worst_mistakes, top_losses, tta_predict, tta_views


@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(0)
    return build_model("tiny_cnn", 3, weights=None, image_size=32, augment="none").model


@pytest.fixture
def folder(image_folder):
    return scan_folder(image_folder, val_split=0.25, test_split=0.25)


def test_top_losses_are_the_highest_losses_worst_first(tiny_model, folder):
    items = folder.splits["test"]
    rows = top_losses(tiny_model, items, folder.class_names, 32, k=5)
    assert len(rows) == 5 and len(items) > 5
    losses = [r.loss for r in rows]
    assert losses == sorted(losses, reverse=True)
    everyone = top_losses(tiny_model, items, folder.class_names, 32, k=len(items))
    assert min(losses) >= max(r.loss for r in everyone[5:])
    for r in rows:
        assert r.loss == pytest.approx(-np.log(r.p_true), rel=1e-5)
        assert r.p_predicted >= r.p_true and r.correct == (r.true == r.predicted)
        assert r.true == r.path.split("/")[-2]


def test_worst_mistakes_grid_is_a_png(tiny_model, folder, tmp_path):
    rows = top_losses(tiny_model, folder.splits["test"], folder.class_names, 32, k=6)
    plot_worst_mistakes(rows, tmp_path / "worst.png", columns=3)
    with Image.open(tmp_path / "worst.png") as png:
        assert png.format == "PNG" and png.width >= 800 and png.height >= 600
    plot_worst_mistakes([], tmp_path / "empty.png")
    assert (tmp_path / "empty.png").stat().st_size > 0


def test_tta_views_are_image_flip_and_crops(tiny_model):
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    views = tta_views(x)
    assert len(views) == 12 and all(v.shape == x.shape for v in views)
    np.testing.assert_array_equal(views[0], x)
    np.testing.assert_array_equal(views[6], x[:, :, ::-1])
    np.testing.assert_allclose(tta_views(x, flip=False, crop_fraction=1.0)[1], x, atol=1e-3)
    assert len(tta_views(x, crops=False)) == 2 and len(tta_views(x, flip=False, crops=False)) == 1


def test_flips_runs_get_the_four_flips_they_were_trained_on():
    from finetune.evaluation.diagnostics import tta_options

    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    views = [np.asarray(v) for v in tta_views(x, **tta_options("flips"))]
    expected = [x, x[:, :, ::-1], x[:, ::-1], x[:, ::-1, ::-1]]
    assert len(views) == 4 and all(np.array_equal(v, e) for v, e in zip(views, expected))
    assert tta_options("light") == {} and len(tta_views(x, **tta_options("light"))) == 12


def test_tta_predict_averages_the_views(tiny_model):
    x = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    flipped = tta_predict(tiny_model, x, crops=False)
    expected = (np.asarray(tiny_model(x)) + np.asarray(tiny_model(x[:, :, ::-1]))) / 2
    np.testing.assert_allclose(flipped, expected, atol=1e-6)
    probs = tta_predict(tiny_model, x, batch_size=2)
    assert probs.shape == (3, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    flat = np.full((2, 32, 32, 3), 120.0, np.float32)  # every view of a flat image is the same image
    np.testing.assert_allclose(tta_predict(tiny_model, flat), np.asarray(tiny_model(flat)), atol=1e-5)


def test_evaluate_tta_reports_both_accuracies(tiny_model, folder):
    result = evaluate_tta(tiny_model, folder.splits["test"], folder.class_names, 32, batch_size=4)
    assert set(result) == {"accuracy", "accuracy_tta", "plain", "tta"}
    assert result["plain"]["n"] == result["tta"]["n"] == len(folder.splits["test"])
    assert 0 <= result["accuracy_tta"] <= 1 and result["tta"]["per_class"].keys() == set(folder.class_names)
