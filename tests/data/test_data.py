import numpy as np
import pytest
from PIL import Image

from conftest import make_image_folder
from finetune.data import DataError, balanced_class_weights, load_image, make_dataset, scan_folder


def test_split_is_stratified_and_deterministic(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=3, per_class=20)
    a = scan_folder(root, seed=1)
    b = scan_folder(root, seed=1)
    c = scan_folder(root, seed=2)
    assert a.splits == b.splits
    assert a.splits != c.splits
    assert a.counts("train") == [16, 16, 16] and a.counts("val") == [2, 2, 2] and a.counts("test") == [2, 2, 2]
    every = [p for split in a.splits.values() for p, _ in split]
    assert len(every) == len(set(every)) == 60


def test_presplit_folder_is_used_as_is(tmp_path):
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        make_image_folder(tmp_path / "d" / split, classes=2, per_class=n)
    folder = scan_folder(tmp_path / "d")
    assert folder.presplit and folder.class_names == ["class_a", "class_b"]
    assert folder.counts("train") == [6, 6] and folder.counts("val") == [2, 2] and folder.counts("test") == [3, 3]


@pytest.mark.parametrize("fmt", ["jpeg", "png", "bmp", "gif", "webp"])
def test_formats_decode_to_rgb(tmp_path, fmt):
    path = tmp_path / f"x.{fmt}"
    Image.fromarray(np.full((10, 12, 3), 100, np.uint8)).save(path)
    img = load_image(path, 8)
    assert img.shape == (8, 8, 3) and img.dtype == np.uint8


def test_grayscale_rgba_and_gif_first_frame(tmp_path):
    Image.new("L", (5, 5), 77).save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png").shape == (5, 5, 3)
    rgba = Image.new("RGBA", (5, 5), (255, 0, 0, 0))
    rgba.save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png")[0, 0].tolist() == [255, 255, 255]  # transparent -> white
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert load_image(tmp_path / "anim.gif")[0, 0, 0] > 200


def test_unreadable_files_are_skipped_with_reasons(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=2, per_class=10)
    (root / "class_a" / "empty.jpg").write_bytes(b"")
    (root / "class_a" / "text.jpg").write_text("not an image")
    (root / "class_b" / "notes.txt").write_text("hello")
    (root / "class_b" / ".DS_Store").write_bytes(b"\0")
    good = (root / "class_b" / "img_000.png").read_bytes()
    (root / "class_b" / "cut.png").write_bytes(good[: len(good) // 2])
    folder = scan_folder(root)
    reasons = {s.path.split("/")[-1]: s.reason for s in folder.skipped}
    assert set(reasons) == {"empty.jpg", "text.jpg", "notes.txt", "cut.png"}
    assert "0 bytes" in reasons["empty.jpg"] and "extension" in reasons["notes.txt"]
    used = [p for split in folder.splits.values() for p, _ in split]
    assert len(used) == 20


@pytest.mark.parametrize("setup, message", [
    (lambda r: None, "does not exist"),
    (lambda r: r.mkdir(), "no class subfolders"),
    (lambda r: make_image_folder(r, classes=1), "single class"),
    (lambda r: (make_image_folder(r, classes=2), (r / "class_c").mkdir()), "has no image files"),
    (lambda r: (make_image_folder(r, classes=2), (r / "class_c").mkdir(), (r / "class_c" / "x.png").write_text("x")),
     "no readable image"),
    (lambda r: (make_image_folder(r, classes=2, per_class=2)), "too few to split"),
])
def test_bad_folders_raise_actionable_errors(tmp_path, setup, message):
    root = tmp_path / "d"
    setup(root)
    with pytest.raises(DataError, match=message):
        scan_folder(root)


def test_dataset_batches_labels_and_class_weights(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=2, per_class=10)
    folder = scan_folder(root, val_split=0, test_split=0)
    weights = balanced_class_weights([15, 5])
    assert weights == pytest.approx([20 / 30, 20 / 10])
    ds = make_dataset(folder.splits["train"], 16, batch_size=8, binary=True, class_weights=[1.0, 3.0])
    images, labels, w = next(iter(ds))
    assert images.shape == (8, 16, 16, 3) and images.dtype.name == "float32"
    assert float(np.max(images)) <= 255 and labels.dtype.name == "float32"
    assert np.allclose(w.numpy(), np.where(labels.numpy() == 1, 3.0, 1.0))
    assert sum(int(b[0].shape[0]) for b in ds) == 20


def test_images_outside_class_folders_are_listed_not_silently_dropped(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=2, per_class=10)
    Image.new("RGB", (8, 8)).save(root / "stray.png")
    folder = scan_folder(root)
    assert [(s.path.split("/")[-1], "outside any class folder" in s.reason) for s in folder.skipped] == [("stray.png", True)]
