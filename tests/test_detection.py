"""The offline COCO detector (YOLOv4-tiny from Darknet weights) against OpenCV's Darknet reader, and `finetune detect`."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from finetune.cli import main
from finetune.errors import ConfigError
from finetune.models.yolo import _pixels, build_darknet, decode, detector_files, load_darknet_weights, load_yolo
from finetune.models.yolo import non_max_suppression, parse_cfg

ROOT = Path(__file__).resolve().parent.parent
#: Debian's darknet package, unpacked by `make test-data` (apt-get download darknet; no root, no weights in it)
DARKNET_PHOTOS = ROOT / "data" / "darknet" / "usr" / "share" / "darknet" / "data"

TINY_CFG = """[net]
width=32
height=32
channels=3
[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky
[route]
layers=-1
groups=2
group_id=1
[route]
layers=-1,-2
[maxpool]
size=2
stride=2
[convolutional]
size=1
stride=1
pad=1
filters=14
activation=linear
[yolo]
mask=0,1
anchors=4,4, 8,8, 16,16
classes=2
scale_x_y=1.05
"""


def photos() -> dict[str, Path]:
    """The 8 photos issue 24's OpenCV reference was measured on."""
    import sklearn.datasets

    _, weights, _ = detector_files()
    samples = Path(weights).parent.parent.parent / "samples"
    sklearn_images = Path(sklearn.datasets.__file__).parent / "images"
    found = {name: samples / name for name in ("bus.jpg", "zidane.jpg")}
    found.update({name: sklearn_images / name for name in ("china.jpg", "flower.jpg")})
    found.update({name: DARKNET_PHOTOS / name for name in ("dog.jpg", "person.jpg", "kite.jpg", "horses.jpg")})
    missing = [str(p) for p in found.values() if not p.exists()]
    assert not missing, f"missing test photos {missing}: run `make test-data` (Debian's darknet package)"
    return found


def test_a_cfg_builds_and_its_weights_must_fit_exactly(tmp_path):
    sections = parse_cfg(TINY_CFG)
    model, heads = build_darknet(sections)
    assert model.output_shape == (None, 8, 8, 14) and heads[0].anchors == ((4.0, 4.0), (8.0, 8.0))
    needed = (4 * 8 + 3 * 3 * 3 * 8) + (4 * 8 + 3 * 3 * 8 * 8) + (14 + 1 * 1 * 12 * 14)
    header = np.array([0, 2, 5], np.int32).tobytes() + np.array([0], np.int64).tobytes()
    values = np.random.default_rng(0).uniform(0.5, 1.5, needed).astype(np.float32)
    (tmp_path / "ok.weights").write_bytes(header + values.tobytes())
    load_darknet_weights(model, sections, tmp_path / "ok.weights")
    conv = model.get_layer("conv_0")
    beta, gamma, mean, var = values[:32].reshape(4, 8)
    kernel = values[32:32 + 216].reshape(8, 3, 3, 3).transpose(2, 3, 1, 0)
    np.testing.assert_allclose(conv.get_weights()[0], kernel * gamma / (np.sqrt(var) + 1e-6), rtol=1e-6)
    np.testing.assert_allclose(conv.get_weights()[1], beta - mean * gamma / (np.sqrt(var) + 1e-6), rtol=1e-5)
    for name, data in (("long", values.tolist() + [1.0]), ("short", values[:-1].tolist())):
        (tmp_path / f"{name}.weights").write_bytes(header + np.asarray(data, np.float32).tobytes())
        with pytest.raises(ConfigError, match="do not fit the cfg"):
            load_darknet_weights(model, sections, tmp_path / f"{name}.weights")


def test_decode_and_nms_on_a_hand_made_grid():
    head = parse_cfg(TINY_CFG)
    _, heads = build_darknet(head)
    grid = np.full((1, 8, 8, 2, 7), -20.0, np.float32)
    grid[0, 3, 5, 1, :] = [0, 0, np.log(2.0), 0, 20, 20, -20]  # anchor 8x8: centre of cell (row 3, col 5), 16x8 px
    grid[0, 3, 4, 1, :] = [0, 0, np.log(2.0), 0, 3, 20, -20]  # a weaker neighbour, IoU 0.6: suppressed
    grid[0, 0, 0, 0, :] = [0, 0, 0, 0, 20, -20, 20]  # class 1 elsewhere: kept
    boxes, scores = decode([grid.reshape(1, 8, 8, 14)], heads, 32)
    kept = non_max_suppression(boxes[0], scores[0], score=0.2, iou=0.45)
    assert [k[2] for k in kept] == [0, 1]
    (box, score, label), _ = kept
    np.testing.assert_allclose(box, [5.5 / 8, 3.5 / 8, 0.5, 0.25], atol=1e-6)
    assert label == 0 and score == pytest.approx(1.0, abs=1e-6)
    assert _pixels(box, 32, 32) == pytest.approx((14.0, 10.0, 30.0, 18.0))


@pytest.fixture(scope="module")
def detector():
    return load_yolo("yolov4_tiny")


def test_the_coco_detector_matches_opencv_on_eight_photos(detector):
    """Issue 24's parity: the same 416x416 tensor gives the same raw grids and boxes as OpenCV's Darknet reader;
    end to end (each its own resize) the same classes, boxes IoU >= 0.9 and scores within 0.02."""
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless<5 is a test dependency (pip install -e .[test])")
    from finetune.data.images import load_image

    cfg, weights, _ = detector_files()
    net = cv2.dnn.readNetFromDarknet(cfg, weights)
    grids = ["conv_29", "conv_36"]  # the convolutions before the two [yolo] layers
    for name, path in photos().items():
        blob = cv2.dnn.blobFromImage(cv2.imread(str(path)), 1 / 255, (416, 416), swapRB=True, crop=False)
        net.setInput(blob)
        theirs_raw = [out.transpose(0, 2, 3, 1) for out in net.forward(grids)]
        net.setInput(blob)
        theirs = np.concatenate(net.forward(net.getUnconnectedOutLayersNames()))  # cx cy w h obj, obj x class
        ours_raw = [np.asarray(o) for o in detector.model(blob.transpose(0, 2, 3, 1) * 255, training=False)]
        for mine, reference in zip(ours_raw, theirs_raw):
            np.testing.assert_allclose(mine, reference, atol=1e-3, err_msg=name)
        boxes, scores = decode(ours_raw, detector.heads, 416)
        np.testing.assert_allclose(boxes[0], theirs[:, :4], atol=1e-4, err_msg=name)
        shown = theirs[:, 5:] > 0  # OpenCV zeroes class scores at or below its threshold
        np.testing.assert_allclose(scores[0][shown], theirs[:, 5:][shown], atol=1e-4, err_msg=name)

        image = load_image(path)
        h, w = image.shape[:2]
        ours = detector.detect([image])[0]
        reference = [(detector.class_names[c], s, _pixels(b, w, h))
                     for b, s, c in non_max_suppression(theirs[:, :4], theirs[:, 5:], score=0.2, iou=0.45)]
        assert sorted(d.label for d in ours) == sorted(label for label, _, _ in reference), name
        for label, score, box in reference:
            match = max((d for d in ours if d.label == label), key=lambda d: _iou(d.box, box))
            assert _iou(match.box, box) >= 0.9 and abs(match.score - score) <= 0.02, (name, label, match, score)


def _iou(a, b) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_detect_prints_boxes_and_writes_json_csv_and_drawn_pngs(tmp_path):
    from PIL import Image

    bus = photos()["bus.jpg"]
    (tmp_path / "notes.jpg").write_bytes(b"not an image")
    out = CliRunner().invoke(main, ["detect", "--coco", str(bus), str(tmp_path / "notes.jpg"),
                                    "--output", str(tmp_path / "boxes")])
    assert out.exit_code == 2, out.output  # one file could not be read
    assert f"{bus}: 6 boxes: person 0.99" in out.output and "notes.jpg: skipped" in out.output
    rows = json.loads((tmp_path / "boxes" / "detections.json").read_text())
    assert [r["label"] for r in rows] == ["person", "person", "person", "bus", "truck", "skateboard"]
    assert (tmp_path / "boxes" / "detections.csv").read_text().splitlines()[0] == "image,label,score,x0,y0,x1,y1"
    drawn = Image.open(tmp_path / "boxes" / "bus.boxes.png")
    assert drawn.size == Image.open(bus).size
    assert CliRunner().invoke(main, ["detect", str(bus)]).exit_code == 2  # --coco is required, for now
