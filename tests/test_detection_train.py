"""Detection fine-tuning: anchors, targets and loss, the cache cut, augmentation with boxes, mAP, box splits, the
recipe's decisions, and ``finetune train instances.json`` end to end (a tiny YOLOv4-tiny-shaped cfg on synthetic
squares and discs; one run with the real COCO weights)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from finetune.cli import main
from finetune.config import TrainConfig
from finetune.data.box_augment import augment_boxes
from finetune.data.boxes import BoxSet, read_boxes, split_boxes
from finetune.errors import ConfigError, DataError
from finetune.evaluation.coco_map import coco_map
from finetune.models.yolo import YoloHead, build_darknet, parse_cfg
from finetune.models.yolo_tune import kmeans_anchors, retarget, split_network, transfer_weights
from finetune.training.detect_resolve import BoxFacts, resolve_detection
from finetune.training.yolo_loss import encode_targets, yolo_loss
from tiny_boxes import coco_json, square_images, tiny_cfg


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("boxes")
    (root / "tiny.cfg").write_text(tiny_cfg())
    coco_json(root / "instances.json", square_images(root, 40))
    return root


def test_kmeans_anchors_find_the_box_sizes_and_sort_by_area():
    rng = np.random.default_rng(0)
    sizes = np.concatenate([rng.normal(c, 1.0, (30, 2)) for c in (8, 20, 40, 70, 120, 200)])
    anchors = kmeans_anchors(sizes, 6)
    assert np.allclose(anchors[:, 0], [8, 20, 40, 70, 120, 200], atol=2)
    assert list(np.argsort(anchors.prod(1))) == list(range(6))
    with pytest.raises(DataError, match="no training boxes"):
        kmeans_anchors(np.zeros((0, 2)))


def test_a_prediction_equal_to_its_target_costs_less_than_a_wrong_one():
    import tensorflow as tf

    head = YoloHead(((16.0, 16.0), (32.0, 32.0)), 1.0, 2)
    box = np.array([[0.375, 0.375, 0.25, 0.25]], np.float32)  # centre of cell (1, 1) of 4, 32 px at 128
    grids, truth = encode_targets(box, np.array([1]), [head], [4], 128, 2)
    raw = np.full((1, 4, 4, 2, 7), -8.0, np.float32)  # nothing anywhere ...
    raw[0, 1, 1, 1, :2] = 0.0  # ... but the right anchor of the right cell: centre offset sigmoid(0) = 0.5
    raw[0, 1, 1, 1, 2:4] = 0.0  # exp(0) x 32 px = the box
    raw[0, 1, 1, 1, 4] = raw[0, 1, 1, 1, 6] = 8.0  # object, class 1
    right = yolo_loss([tf.constant(raw.reshape(1, 4, 4, 14))], [grids[0][None]], truth[None], [head], 128)
    wrong = raw.copy()
    wrong[0, 1, 1, 1, 5], wrong[0, 1, 1, 1, 6] = 8.0, -8.0  # the other class
    wrong[0, 1, 1, 1, 2:4] = 1.0  # a box too big
    worse = yolo_loss([tf.constant(wrong.reshape(1, 4, 4, 14))], [grids[0][None]], truth[None], [head], 128)
    assert float(right["box"]) < 1e-4 and float(right["class"]) < 1e-2 and float(right["objectness"]) < 0.05
    assert float(worse["box"]) > 0.1 and float(worse["class"]) > 10


def test_the_cut_network_equals_the_whole_and_new_heads_keep_every_other_weight(tmp_path):
    sections = parse_cfg(tiny_cfg())
    coco, _ = build_darknet(sections)
    tuned = retarget(sections, 3, kmeans_anchors(np.random.default_rng(0).uniform(5, 60, (40, 2))), 128)
    model, heads = build_darknet(tuned)
    fresh = transfer_weights(coco, model)
    assert fresh == ["conv_29", "conv_36"] and model.output_shape == [(None, 4, 4, 24), (None, 8, 8, 24)]
    assert all(h.classes == 3 for h in heads) and heads[0].anchors[0][0] * heads[0].anchors[0][1] >= \
        heads[1].anchors[-1][0] * heads[1].anchors[-1][1]  # coarse grid: the large anchors
    np.testing.assert_array_equal(model.get_layer("conv_26").get_weights()[0], coco.get_layer("conv_26").get_weights()[0])
    bottom, top, names = split_network(model, tuned)
    assert names == ["leaky_23", "maxpool_25"]
    x = np.random.default_rng(1).uniform(0, 255, (2, 128, 128, 3)).astype(np.float32)
    for whole, parts in zip(model(x), top(bottom(x))):
        np.testing.assert_allclose(np.asarray(whole), np.asarray(parts), atol=1e-5)


def test_augmented_boxes_follow_the_pixels():
    image = np.zeros((4, 96, 96, 3), np.uint8)
    image[:, 30:60, 20:44] = 255
    boxes = [np.array([[20, 30, 44, 60]], np.float32)] * 4
    views, moved, labels = augment_boxes(image, boxes, [np.array([0])] * 4, seed=7)
    for view, box in zip(views, moved):
        assert len(box) == 1
        ys, xs = np.nonzero(view[..., 0] > view[..., 0].max() / 2)
        found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
        np.testing.assert_allclose(box[0], found, atol=2.5)
    assert len({tuple(np.round(b[0])) for b in moved}) > 1  # the four views differ


def test_coco_map_scores_misses_and_false_alarms():
    truth = [(np.array([[10, 10, 50, 50], [60, 60, 90, 90]], float), np.array([0, 1]))]
    perfect = [[((10, 10, 50, 50), 0.9, 0), ((60, 60, 90, 90), 0.8, 1)]]
    half = [[((10, 10, 50, 50), 0.9, 0)]]
    assert coco_map(truth, perfect, ["a", "b"], [(100, 100)])["map"] == pytest.approx(1.0)
    result = coco_map(truth, half, ["a", "b"], [(100, 100)])
    assert result["per_class"]["b"]["ap50"] == 0 and result["map50"] == pytest.approx(0.5)
    assert coco_map(truth, [[]], ["a", "b"], [(100, 100)])["map50"] == 0


def test_box_splits_are_seeded_and_split_files_must_agree(tiny, tmp_path):
    boxes = read_boxes(tiny / "instances.json")
    assert list(boxes) == ["all"] and boxes["all"].class_names == ["disc", "square"]  # by category id: 3, 7
    a = split_boxes(boxes, 0.1, 0.1, seed=0)
    b = split_boxes(boxes, 0.1, 0.1, seed=0)
    assert [len(a[s].items) for s in ("train", "val", "test")] == [32, 4, 4]
    assert [p for p, _, _ in a["val"].items] == [p for p, _, _ in b["val"].items]
    elsewhere = tmp_path / "annotations"
    elsewhere.mkdir()
    (elsewhere / "instances.json").write_text((tiny / "instances.json").read_text())
    assert len(read_boxes(elsewhere / "instances.json")["all"].skipped) == 40  # images not beside the JSON: named
    assert not read_boxes(elsewhere / "instances.json", images=tiny)["all"].skipped  # --images DIR
    with pytest.raises(DataError, match="cannot be split"):
        split_boxes({"all": BoxSet(["x"], boxes["all"].items[:2])}, 0.5, 0.5, 0)
    folder = tmp_path / "splits"
    folder.mkdir()
    entries = square_images(folder, 6, seed=3)
    coco_json(folder / "train.json", entries[:4])
    coco_json(folder / "val.json", entries[4:], category_ids=(7, 4))
    assert set(read_boxes(folder)["train"].class_names) == {"disc", "square"}
    (folder / "val.json").write_text(json.dumps({**json.loads((folder / "val.json").read_text()),
                                                 "categories": [{"id": 7, "name": "square"}]}))
    with pytest.raises(DataError, match="differ from train.json"):
        read_boxes(folder)


def test_the_recipe_refuses_options_detection_does_not_read():
    facts = BoxFacts(("cell",), {"train": (10, 20), "val": (2, 3), "test": (2, 3)},
                     np.full((20, 2), 0.1), 3, "yolov4_tiny", 416)
    with pytest.raises(ConfigError, match="--augment heavy.*--dropout 0.5"):
        resolve_detection(TrainConfig(data="x.json", augment="heavy", dropout=0.5), facts)
    with pytest.raises(ConfigError, match="is not a detector"):
        resolve_detection(TrainConfig(data="x.json", backbone="resnet50"), facts)
    with pytest.raises(ConfigError, match="multiple of 32"):
        resolve_detection(TrainConfig(data="x.json", image_size=400), facts)
    recipe = resolve_detection(TrainConfig(data="x.json", batch_size=4, head_epochs=7), facts)
    assert (recipe.batch_size, recipe.head_epochs, recipe.tune_epochs, recipe.views) == (4, 7, 20, 4)


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """``finetune train instances.json`` on the tiny cfg (after its --dry-run): ``(run folder, dry-run output)``."""
    out = tmp_path_factory.mktemp("runs")
    runner = CliRunner()
    args = ["train", str(tiny / "instances.json"), "--backbone", f"darknet:{tiny / 'tiny.cfg'}", "--head-epochs", "30",
            "--patience", "30", "--tune-epochs", "2", "--lr", "0.003", "--output", str(out), "--name", "squares"]
    dry = runner.invoke(main, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert not (out / "squares").exists()
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    return out / "squares", dry.output


def test_finetune_train_on_coco_json_writes_a_run_that_learned(trained):
    run, dry = trained
    assert "anchors" in dry and "nothing built" in dry
    for name in ("model.keras", "detector.json", "labels.txt", "history.csv", "metrics.json", "report.md",
                 "recipe.json", "splits.json", "config.yaml"):
        assert (run / name).is_file(), name
    assert not (run / "checkpoint").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["test"]["map"] <= metrics["test"]["map50"] <= 1
    history = [line.split(",") for line in (run / "history.csv").read_text().splitlines()]
    assert history[0][:2] == ["phase", "epoch"] and {r[0] for r in history[1:]} == {"head", "tune"}
    val = [float(r[history[0].index("val_map50")]) for r in history[1:] if r[0] == "head"]
    assert max(val) > 0.1 and max(val) > val[0]  # it learns the squares and discs
    assert "mAP@0.5" in (run / "report.md").read_text()


def test_a_detection_run_detects_evaluates_predicts_and_exports(trained, tiny, tmp_path):
    run, _ = trained
    runner = CliRunner()
    metrics = json.loads((run / "metrics.json").read_text())
    out = tmp_path / "drawn"
    detected = runner.invoke(main, ["detect", "--run", str(run), str(tiny / "img000.png"), "--score", "0.05",
                                    "--output", str(out)])
    assert detected.exit_code == 0, detected.output
    assert (out / "img000.boxes.png").is_file() and (out / "detections.json").is_file()
    evaluated = runner.invoke(main, ["evaluate", str(run)])
    assert evaluated.exit_code == 0 and f"mAP@0.5: {metrics['test']['map50']:.1%}" in evaluated.output
    predicted = runner.invoke(main, ["predict", str(run), str(tiny / "img001.png")])
    assert predicted.exit_code == 0 and (run / "predictions" / "img001.boxes.png").is_file()
    for fmt in ("savedmodel", "tflite"):  # boxes after NMS in the graph; TFLite with built-in ops only
        exported = runner.invoke(main, ["export", str(run), "--format", fmt, "--score", "0.01"])
        assert exported.exit_code == 0 and "the same" in exported.output, exported.output
        assert int(exported.output.split("the same ")[1].split()[0]) > 0  # detections were compared
    assert (run / "export" / "detector.tflite").is_file() and (run / "export" / "detector" / "saved_model.pb").is_file()
    explained = runner.invoke(main, ["explain", str(run), str(tiny / "img001.png")])
    assert explained.exit_code == 2 and "is a detection run" in explained.output
    listed = runner.invoke(main, ["backbones"])
    assert listed.exit_code == 0 and any(line.split()[:2] == ["yolov4_tiny", "boxes"] for line in listed.output.splitlines())
    again = runner.invoke(main, ["train", str(tiny / "instances.json"), "--mixup", "0.3"])
    assert again.exit_code == 2 and "not used by detection runs: --mixup 0.3" in again.output


def test_serve_draws_the_boxes_of_a_detection_run(trained, tiny):
    import io

    from finetune.serve import create_app

    run, _ = trained
    client = create_app(run).test_client()
    assert client.get("/api/info").json["kind"] == "boxes"
    image = (tiny / "img002.png").read_bytes()
    answer = client.post("/api/predict", data={"image": (io.BytesIO(image), "img002.png")}).json
    assert answer["image"].startswith("data:image/png;base64,") and " over 0.25" in answer["caption"]
    assert len(answer["top"]) == len(answer["boxes"]) and all(0 <= b["score"] <= 1 for b in answer["boxes"])
    broken = client.post("/api/predict", data={"image": (io.BytesIO(b"not an image"), "x.png")})
    assert broken.status_code == 400 and "x.png" in broken.json["error"]


def test_the_coco_detector_fine_tunes_on_boxes_end_to_end(tiny, tmp_path):
    from finetune.detection_runs import load_detector, train_detection

    config = TrainConfig(data=str(tiny / "instances.json"), image_size=160, head_epochs=2, tune_epochs=1,
                         cache_variants=1, output=str(tmp_path), name="coco")
    run_dir, result, metrics = train_detection(config, log=lambda _: None)
    assert result.cut == ["leaky_23", "maxpool_25"] and len(result.history) == 3
    detector = load_detector(run_dir)
    assert detector.class_names == ["disc", "square"] and detector.input_size == 160
    assert metrics["map50"] is not None
    assert isinstance(detector.detect([np.zeros((96, 96, 3), np.uint8)], score=0.0)[0], list)


def test_a_detection_run_killed_in_phase_two_resumes_to_the_same_weights(tiny, tmp_path):
    """kill -9 after phase 2's first epoch, then resume: phase 1 comes from the checkpoint, phase 2 goes on with
    the same seeded augmentations and the optimizer's state, and the run ends with the uninterrupted run's weights."""
    import os
    import signal
    import subprocess
    import sys

    from finetune.detection_runs import load_detector

    config = dict(data=str(tiny / "instances.json"), backbone=f"darknet:{tiny / 'tiny.cfg'}", head_epochs=3,
                  tune_epochs=3, patience=50, tune_patience=50, cache_variants=1, output=str(tmp_path))
    driver = Path(__file__).parent / "detect_resume_driver.py"

    def drive(name, **extra):
        args = json.dumps({"config": {**config, "name": name}, **extra})
        return subprocess.run([sys.executable, str(driver), args], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})

    assert drive("straight").returncode == 0
    assert drive("killed", kill_at=4).returncode == -signal.SIGKILL
    run_dir = tmp_path / "killed"
    assert (run_dir / "checkpoint" / "state.npz").is_file() and not (run_dir / "model.keras").exists()
    resumed = drive("killed", resume=str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not (run_dir / "checkpoint").exists()
    straight, again = load_detector(tmp_path / "straight"), load_detector(run_dir)
    for a, b in zip(straight.model.get_weights(), again.model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    rows = [r.split(",") for r in (run_dir / "history.csv").read_text().splitlines()]
    assert [r[:2] for r in rows[1:]] == [["head", "1"], ["head", "2"], ["head", "3"], ["tune", "1"], ["tune", "2"],
                                         ["tune", "3"]]
    loss = rows[0].index("loss")
    straight_rows = [r.split(",") for r in (tmp_path / "straight" / "history.csv").read_text().splitlines()]
    np.testing.assert_allclose([float(r[loss]) for r in rows[1:]], [float(r[loss]) for r in straight_rows[1:]],
                               rtol=1e-3)  # phase 2's epochs after the kill train as the uninterrupted ones did


@pytest.mark.skipif(not (shutil.which("chromedriver") and (shutil.which("chromium") or shutil.which("chromium-browser"))),
                    reason="no headless browser: `apt-get install chromium chromium-driver` (.ci/run installs them)")
def test_the_detection_page_in_headless_chromium(trained, tiny, tmp_path):
    import os
    import tempfile

    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from test_serve import _browser

    run, _ = trained
    with tempfile.TemporaryDirectory(prefix="chromium-") as browser_tmp, _browser(run, browser_tmp) as (browser, url):
        browser.get(url)
        WebDriverWait(browser, 30).until(lambda b: "disc, square" in b.find_element(By.ID, "about").text)
        browser.find_element(By.ID, "files").send_keys(str(tiny / "img003.png"))
        WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".card.done.boxes"))
        card = browser.find_element(By.CSS_SELECTOR, ".card.done")
        assert " over 0.25" in card.find_element(By.TAG_NAME, "figcaption").text
        assert card.find_element(By.TAG_NAME, "img").size["width"] >= 400
        shot = Path(os.environ.get("FINETUNE_SERVE_SCREENSHOT", tmp_path / "serve.png"))
        assert browser.save_screenshot(str(shot)) and np.asarray(Image.open(shot).convert("RGB")).std() > 10


def test_a_time_budget_stops_before_an_epoch_that_would_not_fit(tiny, tmp_path):
    from finetune.detection_runs import train_detection

    logged = []
    config = TrainConfig(data=str(tiny / "instances.json"), backbone=f"darknet:{tiny / 'tiny.cfg'}", head_epochs=50,
                         patience=50, tune_epochs=5, cache_variants=1, time_budget=0.01, output=str(tmp_path))
    run_dir, result, metrics = train_detection(config, log=logged.append)
    assert result.history == [] and result.kept == "head" and "did not run" in result.reason
    assert any("time budget reached before epoch 1" in line for line in logged)
    assert (run_dir / "model.keras").is_file() and metrics["map50"] is not None  # the run is still written whole
