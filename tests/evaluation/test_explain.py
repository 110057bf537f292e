"""Grad-CAM peaks where the class signal is, for binary, multi-class and multi-label heads."""

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_RUN
from finetune import fine_tune
from finetune.evaluation.explain import CannotExplain, grad_cam, save_overlay

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def _patch_images(n_classes: int, n: int, seed: int):
    """Grey noise, one 8x8 patch of the class's colour at a random place; returns images, labels, patch corners."""
    rng = np.random.default_rng(seed)
    images, labels, corners = [], [], []
    for i in range(n):
        label = i % n_classes
        image = rng.integers(90, 140, (32, 32, 3)).astype(np.uint8)
        r, c = rng.integers(0, 24, 2)
        image[r:r + 8, c:c + 8] = COLOURS[label]
        images.append(image)
        labels.append(label)
        corners.append((r, c))
    return np.stack(images), np.array(labels), corners


@pytest.mark.parametrize("n_classes", [2, 3])
def test_heatmap_peaks_on_the_patch(tmp_path, monkeypatch, n_classes):
    monkeypatch.setenv("FINETUNE_CACHE_DIR", str(tmp_path))
    x, y, _ = _patch_images(n_classes, 60 * n_classes, seed=0)
    result = fine_tune((x, y), **{**TINY_RUN, "lr": 0.02}, head_epochs=30, tune_epochs=0, patience=0, verbose=0)
    test_x, test_y, corners = _patch_images(n_classes, 20, seed=1)
    found = grad_cam(result.model, test_x)
    assert np.mean([e.class_index == label for e, label in zip(found, test_y)]) >= 0.9
    hits = 0
    for e, (r, c) in zip(found, corners):
        heat = e.upsampled((32, 32))
        peak = np.unravel_index(np.argmax(heat), heat.shape)
        hits += (r - 2 <= peak[0] < r + 10) and (c - 2 <= peak[1] < c + 10)
    assert hits >= 16, f"heatmap peaked on the patch for {hits}/20 images"
    out = save_overlay(test_x[0], found[0], tmp_path / "cam.png", result.class_names)
    assert Image.open(out).size[0] > 100


def test_a_model_without_a_feature_map_is_refused():
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    with pytest.raises(CannotExplain, match="4-D"):
        grad_cam(model, np.zeros((1, 4)))


def test_explain_command_writes_one_overlay_per_image(tmp_path):
    from click.testing import CliRunner

    from finetune import TrainConfig, train
    from finetune.cli import main

    x, y, _ = _patch_images(2, 60, seed=0)
    for i, (image, label) in enumerate(zip(x, y)):
        (tmp_path / "data" / f"c{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "data" / f"c{label}" / f"{i}.png")
    config = TrainConfig(data=str(tmp_path / "data"), **{**TINY_RUN, "lr": 0.02}, head_epochs=10, tune_epochs=0,
                         output=str(tmp_path / "runs"), name="r")
    run_dir, _, _ = train(config, verbose=0)
    images = [str(tmp_path / "data" / "c0" / "0.png"), str(tmp_path / "data" / "c1" / "1.png")]
    result = CliRunner().invoke(main, ["explain", str(run_dir), *images, "--class", "c1"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (run_dir / "explain").iterdir()) == ["0.gradcam.png", "1.gradcam.png"]
    assert result.output.count(" c1 ") == 2  # the class asked for, not the predicted one
    bad = CliRunner().invoke(main, ["explain", str(run_dir), images[0], "--class", "zebra"])
    assert bad.exit_code == 2 and "not one of c0, c1" in bad.output


def test_multi_label_heatmap_of_each_label_peaks_on_its_own_patch(tmp_path, monkeypatch):
    """Images with a red patch, a blue patch or both (a CSV of labels): the heatmap asked for ``red`` finds red."""
    monkeypatch.setenv("FINETUNE_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    lines, both = ["path,label"], []
    for i in range(180):
        image = rng.integers(90, 140, (32, 32, 3)).astype(np.uint8)
        names, corners = [], {}
        for name, colour, on in (("red", COLOURS[0], i % 3 != 1), ("blue", COLOURS[2], i % 3 != 0)):
            if on:
                r, c = rng.integers(0, 12, 2) + (16 if name == "blue" else 0)  # red top-left half, blue lower-right
                image[r:r + 8, c:c + 8] = colour
                names.append(name)
                corners[name] = (r, c)
        Image.fromarray(image).save(tmp_path / "img" / f"{i}.png")
        lines.append(f"img/{i}.png,{';'.join(names)}")
        if len(names) == 2:
            both.append((image, corners))
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    result = fine_tune(str(tmp_path / "labels.csv"), **{**TINY_RUN, "lr": 0.02}, head_epochs=30, tune_epochs=0,
                       patience=0, verbose=0)
    assert result.folder.multi_label and result.class_names == ["blue", "red"]
    images = np.stack([image for image, _ in both[:20]]).astype(np.float32)
    for index, name in enumerate(result.class_names):
        found = grad_cam(result.model, images, index)
        hits = 0
        for e, (_, corners) in zip(found, both[:20]):
            heat = e.upsampled((32, 32))
            peak = np.unravel_index(np.argmax(heat), heat.shape)
            r, c = corners[name]
            hits += (r - 2 <= peak[0] < r + 10) and (c - 2 <= peak[1] < c + 10)
        assert hits >= 14, f"{name}: heatmap peaked on its patch for {hits}/20 images"
