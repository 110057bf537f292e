"""Box readers: COCO JSON, Pascal VOC, YOLO txt; clipping, and what is left out is named."""

import json

import numpy as np
import pytest
from PIL import Image

from finetune.data.boxes import read_coco, read_voc, read_yolo
from finetune.errors import DataError


def _image(path, size=(100, 80)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 120, 30)).save(path)
    return path


def test_coco_maps_sparse_ids_clips_and_names_what_it_leaves_out(tmp_path):
    _image(tmp_path / "imgs" / "a.jpg")
    _image(tmp_path / "imgs" / "empty.jpg")
    coco = {"categories": [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}],
            "images": [{"id": 7, "file_name": "a.jpg", "width": 100, "height": 80},
                       {"id": 8, "file_name": "empty.jpg", "width": 100, "height": 80},
                       {"id": 9, "file_name": "gone.jpg", "width": 100, "height": 80}],
            "annotations": [{"image_id": 7, "category_id": 90, "bbox": [90, 10, 30, 20], "iscrowd": 0},
                            {"image_id": 7, "category_id": 1, "bbox": [5, 5, 10, 10]},
                            {"image_id": 7, "category_id": 1, "bbox": [200, 5, 10, 10]},
                            {"image_id": 7, "category_id": 1, "bbox": [5, 5, 0, 10]},
                            {"image_id": 7, "category_id": 3, "bbox": [5, 5, 10, 10]},
                            {"image_id": 7, "category_id": 1, "bbox": [0, 0, 50, 50], "iscrowd": 1},
                            {"image_id": 9, "category_id": 1, "bbox": [0, 0, 5, 5]}]}
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    boxes = read_coco(tmp_path / "instances.json", images=tmp_path / "imgs")
    assert boxes.class_names == ["person", "toothbrush"]
    (path, corners, labels), (empty, none, _) = boxes.items
    assert path.endswith("a.jpg") and labels.tolist() == [1, 0] and len(none) == 0 and empty.endswith("empty.jpg")
    np.testing.assert_allclose(corners, [[90, 10, 100, 30], [5, 5, 15, 15]])
    reasons = [why for _, why in boxes.skipped]
    assert sum("outside" in r for r in reasons) == 2 and any("unknown class '3'" in r for r in reasons)
    assert any("gone.jpg not found" in r for r in reasons)
    assert boxes.summary() == "2 images (1 without boxes), 2 boxes, 2 classes; 4 left out"
    with pytest.raises(DataError, match="not a COCO instances file"):
        (tmp_path / "bad.json").write_text("{}")
        read_coco(tmp_path / "bad.json")


def test_voc_and_yolo_folders(tmp_path):
    _image(tmp_path / "voc" / "JPEGImages" / "x.jpg")
    (tmp_path / "voc" / "Annotations").mkdir()
    (tmp_path / "voc" / "Annotations" / "x.xml").write_text(
        "<annotation><filename>x.jpg</filename><size><width>100</width><height>80</height></size>"
        "<object><name>dog</name><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>30</xmax><ymax>90</ymax></bndbox></object>"
        "<object><name>cat</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>3</xmax><ymax>4</ymax></bndbox></object>"
        "</annotation>")
    (tmp_path / "voc" / "Annotations" / "broken.xml").write_text("<annotation>")
    voc = read_voc(tmp_path / "voc" / "Annotations")
    assert voc.class_names == ["cat", "dog"] and voc.items[0][2].tolist() == [1, 0]
    np.testing.assert_allclose(voc.items[0][1][0], [10, 20, 30, 80])  # clipped to the 80-pixel height
    assert voc.skipped[0][0] == "broken.xml"

    _image(tmp_path / "yolo" / "images" / "p.png", (200, 100))
    _image(tmp_path / "yolo" / "images" / "negative.png", (200, 100))
    (tmp_path / "yolo" / "labels").mkdir()
    (tmp_path / "yolo" / "labels" / "p.txt").write_text("1 0.5 0.5 0.2 0.4\n7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DataError, match="classes.txt or data.yaml"):
        read_yolo(tmp_path / "yolo")
    (tmp_path / "yolo" / "data.yaml").write_text("names: {0: cell, 1: crack}\n")
    yolo = read_yolo(tmp_path / "yolo")
    assert yolo.class_names == ["cell", "crack"] and [len(b) for _, b, _ in yolo.items] == [0, 1]
    np.testing.assert_allclose(yolo.items[1][1][0], [80, 30, 120, 70])
    assert yolo.skipped == [("p.png", "box 2: unknown class '7'")]
