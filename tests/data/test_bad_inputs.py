"""Every bad input gets a defined answer: used (converted), skipped with a reason, or a DataError.

The corpus is generated here, file by file; no binary blobs live in the repository.
"""

from __future__ import annotations

import io
import os
import resource
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from conftest import TINY_RUN, make_image_folder
from finetune import fine_tune
from finetune.data import DataError, check_image, load_image, make_dataset, resolve_cache, scan_folder


# --- corpus builders ---------------------------------------------------------------------------

def rgb_image(width: int = 24, height: int = 16, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


def encoded(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims ``width`` x ``height`` 8-bit gray pixels (valid CRCs, little data)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))


def png_with_bad_idat_crc() -> bytes:
    data = bytearray(encoded(rgb_image(), "PNG"))
    at = data.find(b"IDAT")
    length = struct.unpack(">I", data[at - 4:at])[0]
    data[at + 4 + length] ^= 0xFF  # first byte of the IDAT CRC; the pixel data stays intact
    return bytes(data)


def jpeg_with_orientation(orientation: int) -> bytes:
    """20 wide x 10 high: red left half, blue right half, tagged with an EXIF orientation."""
    img = Image.new("RGB", (20, 10), (255, 0, 0))
    img.paste((0, 0, 255), (10, 0, 20, 10))
    exif = img.getexif()
    exif[0x0112] = orientation
    return encoded(img, "JPEG", exif=exif.tobytes(), quality=95)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def dataset_with(tmp_path: Path, name: str, data: bytes, per_class: int = 10) -> tuple[Path, Path]:
    """A healthy two-class folder plus one extra file ``class_a/name``."""
    root = make_image_folder(tmp_path / "d", classes=2, per_class=per_class, size=16)
    return root, write(root / "class_a" / name, data)


def skipped_reasons(root: Path) -> dict[str, str]:
    return {os.path.basename(s.path): s.reason for s in scan_folder(root).skipped}


def used_paths(root: Path, **kwargs) -> list[str]:
    folder = scan_folder(root, **kwargs)
    return [p for split in folder.splits.values() for p, _ in split]


# --- skipped, with a reason --------------------------------------------------------------------

def test_pil_never_loads_truncated_images():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # nothing in finetune may switch it on


def test_truncated_jpeg_is_skipped_with_reason(tmp_path):
    full = encoded(rgb_image(40, 40), "JPEG")
    root, _ = dataset_with(tmp_path, "cut.jpg", full[: len(full) // 2])
    assert "truncated" in skipped_reasons(root)["cut.jpg"]


def test_zero_byte_file_is_skipped(tmp_path):
    root, _ = dataset_with(tmp_path, "empty.jpg", b"")
    assert skipped_reasons(root)["empty.jpg"] == "empty file (0 bytes)"


def test_text_named_jpg_is_skipped(tmp_path):
    root, _ = dataset_with(tmp_path, "notes.jpg", b"these are my holiday notes\n")
    assert "not a readable" in skipped_reasons(root)["notes.jpg"]


def test_png_with_bad_crc_is_skipped(tmp_path):
    root, path = dataset_with(tmp_path, "crc.png", png_with_bad_idat_crc())
    assert load_image(path).shape == (16, 24, 3)  # PIL alone would decode it...
    assert "CRC" in skipped_reasons(root)["crc.png"]  # ...the scan refuses it


def test_decompression_bomb_is_refused_without_allocating(tmp_path):
    root, path = dataset_with(tmp_path, "bomb.png", png_claiming_size(30_000, 30_000))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reason = check_image(str(path))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert "decompression bomb" in reason and grown_mb < 100
    assert "decompression bomb" in skipped_reasons(root)["bomb.png"]


def test_image_just_over_our_pixel_limit_is_refused_before_decoding(tmp_path):
    path = write(tmp_path / "big.png", png_claiming_size(9_000, 8_000))  # 72 Mpx: under PIL's limit, over ours
    with pytest.raises(DataError, match="decompression bomb"):
        load_image(path)


def test_hidden_files_are_ignored_not_reported(tmp_path):
    root, _ = dataset_with(tmp_path, ".DS_Store", b"\0\0\0\1Bud1")
    write(root / "class_b" / ".hidden" / "x.png", encoded(rgb_image(), "PNG"))
    assert skipped_reasons(root) == {}
    assert len(used_paths(root)) == 20


def test_symlink_loop_in_class_folder_neither_hangs_nor_crashes(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=2, per_class=10, size=16)
    os.symlink("..", root / "class_a" / "up")  # a folder loop
    os.symlink("self.jpg", root / "class_a" / "self.jpg")  # a file link to itself
    reasons = skipped_reasons(root)
    assert "not followed" in reasons["up"] and "not a regular file" in reasons["self.jpg"]
    assert len(used_paths(root)) == 20


def test_file_name_that_is_not_utf8_is_skipped(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=2, per_class=10, size=16)
    (root / "class_a" / os.fsdecode(b"latin1-caf\xe9.png")).write_bytes(encoded(rgb_image(), "PNG"))
    folder = scan_folder(root)
    assert [s.reason for s in folder.skipped] == ["file name is not valid UTF-8; rename the file"]
    assert len(used_paths(root)) == 20


# --- used, after conversion --------------------------------------------------------------------

@pytest.mark.parametrize("make, expected", [
    (lambda: Image.new("CMYK", (8, 8), (0, 255, 255, 0)), (255, 0, 0)),  # CMYK red
    (lambda: Image.new("L", (8, 8), 77), (77, 77, 77)),
    (lambda: Image.new("RGBA", (8, 8), (0, 255, 0, 0)), (255, 255, 255)),  # transparent -> white
    (lambda: Image.new("RGBA", (8, 8), (0, 255, 0, 255)), (0, 255, 0)),
], ids=["cmyk", "grayscale", "rgba-transparent", "rgba-opaque"])
def test_colour_modes_become_rgb(tmp_path, make, expected):
    img = make()
    fmt = "JPEG" if img.mode == "CMYK" else "PNG"
    path = write(tmp_path / f"x.{fmt.lower()}", encoded(img, fmt))
    assert check_image(str(path)) is None
    pixels = load_image(path)
    assert pixels.shape == (8, 8, 3) and np.allclose(pixels[4, 4], expected, atol=3)


def test_16_bit_png_is_scaled_to_8_bit(tmp_path):
    levels = np.array([[0, 32768, 65535]], dtype=np.uint16)
    path = write(tmp_path / "deep.png", encoded(Image.fromarray(levels), "PNG"))
    assert Image.open(path).mode.startswith("I")
    assert load_image(path)[0, :, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize("transparent, expected", [(False, [255, 0, 0]), (True, [255, 255, 255])])
def test_palette_png_with_and_without_transparency(tmp_path, transparent, expected):
    img = Image.new("P", (6, 6), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    options = {"transparency": 1} if transparent else {}
    path = write(tmp_path / "pal.png", encoded(img, "PNG", **options))
    assert check_image(str(path)) is None and load_image(path)[0, 0].tolist() == expected


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    first = load_image(path)
    assert first[0, 0, 0] > 200 and first[0, 0, 2] < 50


def test_one_pixel_image_is_used_and_resized(tmp_path):
    root, path = dataset_with(tmp_path, "dot.png", encoded(Image.new("RGB", (1, 1), (9, 8, 7)), "PNG"))
    assert str(path) in used_paths(root)
    assert load_image(path, 16).shape == (16, 16, 3)


def test_exif_orientation_is_honoured(tmp_path):
    path = write(tmp_path / "rotated.jpg", jpeg_with_orientation(6))  # "rotate 90 degrees clockwise to view"
    pixels = load_image(path)
    assert pixels.shape == (20, 10, 3)  # portrait now
    top, bottom = pixels[2, 5], pixels[17, 5]
    assert top[0] > 200 and top[2] < 60  # the red left half went to the top
    assert bottom[2] > 200 and bottom[0] < 60


def test_unicode_and_spaces_in_file_and_class_names(tmp_path):
    root = tmp_path / "données"
    for c, name in enumerate(["chats noirs", "日本の犬 🐕"]):
        for i in range(4):
            write(root / name / f"photo é {i}.png", encoded(Image.new("RGB", (8, 8), (200 * c, 50, 50)), "PNG"))
    folder = scan_folder(root, val_split=0, test_split=0)
    assert folder.class_names == ["chats noirs", "日本の犬 🐕"] and not folder.skipped
    batches = list(make_dataset(folder.splits["train"], 8, batch_size=8))
    assert sum(int(images.shape[0]) for images, _ in batches) == 8


def test_symlink_to_an_image_is_used(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=2, per_class=10, size=16)
    target = write(tmp_path / "elsewhere" / "pic.png", encoded(rgb_image(), "PNG"))
    os.symlink(target, root / "class_a" / "link.png")
    assert str(root / "class_a" / "link.png") in used_paths(root)


def test_images_in_nested_subfolders_are_used(tmp_path):
    """Like Keras' ``flow_from_directory``: a class folder is searched recursively."""
    root = make_image_folder(tmp_path / "d", classes=2, per_class=10, size=16)
    nested = write(root / "class_a" / "2024" / "june" / "deep.png", encoded(rgb_image(), "PNG"))
    folder = scan_folder(root)
    assert (str(nested), 0) in [item for split in folder.splits.values() for item in split]


# --- DataError before training -----------------------------------------------------------------

def test_empty_class_folder_is_named(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=2, per_class=5, size=16)
    (root / "class_empty").mkdir()
    with pytest.raises(DataError, match=r"class_empty.*has no image files"):
        scan_folder(root)


def test_single_class_dataset_is_refused(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=1, per_class=5, size=16)
    with pytest.raises(DataError, match="single class.*at least two"):
        scan_folder(root)


def test_class_with_one_image_cannot_be_split(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=2, per_class=5, size=16)
    for extra in list((root / "class_b").iterdir())[1:]:
        extra.unlink()
    with pytest.raises(DataError, match=r"'class_b' has 1 readable image.*too few to split.*--val-split 0"):
        scan_folder(root)
    assert len(used_paths(root, val_split=0, test_split=0)) == 6  # the advice works


def test_class_with_two_images_and_80_10_10_split(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=2, per_class=2, size=16)
    with pytest.raises(DataError, match=r"has 2 readable image\(s\).*\(needs 3\)"):
        scan_folder(root, val_split=0.1, test_split=0.1)
    write(root / "class_a" / "third.png", encoded(rgb_image(), "PNG"))
    write(root / "class_b" / "third.png", encoded(rgb_image(), "PNG"))
    folder = scan_folder(root, val_split=0.1, test_split=0.1)
    assert folder.counts("train") == folder.counts("val") == folder.counts("test") == [1, 1]


def make_presplit(root: Path, val_classes: int) -> Path:
    make_image_folder(root / "train", classes=2, per_class=4, size=16)
    make_image_folder(root / "val", classes=val_classes, per_class=2, size=16)
    return root


def test_presplit_val_lacking_a_class_is_refused(tmp_path):
    root = make_presplit(tmp_path / "d", val_classes=1)
    with pytest.raises(DataError, match=r"val lacks class folder\(s\) \['class_b'\]"):
        scan_folder(root)


def test_presplit_val_with_an_extra_class_is_refused(tmp_path):
    root = make_presplit(tmp_path / "d", val_classes=3)
    with pytest.raises(DataError, match=r"\['class_c'\] that .*train lacks"):
        scan_folder(root)


def test_presplit_val_class_with_only_unreadable_files_is_refused(tmp_path):
    root = make_presplit(tmp_path / "d", val_classes=2)
    for path in (root / "val" / "class_b").iterdir():
        path.write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"val/class_b' has no readable image .*e\.g\. img_000\.png: cannot decode"):
        scan_folder(root)


# --- mid-epoch failures and the whole pipeline -------------------------------------------------

@pytest.mark.parametrize("damage", [Path.unlink, lambda p: p.write_bytes(b"now broken")], ids=["deleted", "corrupted"])
@pytest.mark.parametrize("cache", ["memory", None])
def test_file_broken_after_the_scan_is_dropped_from_the_epoch(tmp_path, damage, cache):
    root = make_image_folder(tmp_path / "d", classes=2, per_class=5, size=16)
    folder = scan_folder(root, val_split=0, test_split=0)
    damage(Path(folder.splits["train"][3][0]))
    ds = make_dataset(folder.splits["train"], 16, batch_size=4, shuffle=True, cache=cache)
    assert sum(int(images.shape[0]) for images, _ in ds) == 9


def test_file_cache_in_a_given_folder(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=2, per_class=4, size=16)
    items = scan_folder(root, val_split=0, test_split=0).splits["train"]
    ds = make_dataset(items, 8, batch_size=4, cache=str(tmp_path / "decoded"))
    assert [sum(int(x.shape[0]) for x, _ in ds) for _ in range(2)] == [8, 8]
    assert any(p.name.startswith("decoded") for p in tmp_path.iterdir())


def test_auto_cache_streams_when_decoded_images_exceed_the_budget():
    assert resolve_cache("auto", 1_000, 224) == "memory"  # 150 MB
    assert resolve_cache("auto", 50_000, 224) is None  # 7.5 GB
    assert resolve_cache("auto", 1_000, 224, budget=10**6) is None
    assert resolve_cache("memory", 50_000, 224) == "memory" and resolve_cache(None, 1, 8) is None


def test_streaming_dataset_shuffles_and_keeps_every_image(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=2, per_class=8, size=16)
    items = scan_folder(root, val_split=0, test_split=0).splits["train"]
    ds = make_dataset(items, 8, batch_size=16, shuffle=True, cache="auto", cache_budget=1)  # forces streaming
    labels = [next(iter(ds))[1].numpy().tolist() for _ in range(2)]
    assert sorted(labels[0]) == [0] * 8 + [1] * 8 and labels[0] != labels[1]


def test_training_completes_and_reports_bad_files(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=3, per_class=10, size=16)
    full = encoded(rgb_image(40, 40), "JPEG")
    bad = {"class_a/cut.jpg": full[: len(full) // 2], "class_b/empty.png": b"", "class_c/text.jpg": b"hello",
           "class_a/crc.png": png_with_bad_idat_crc(), "class_b/bomb.png": png_claiming_size(30_000, 30_000)}
    for name, data in bad.items():
        write(root / name, data)
    result = fine_tune(str(root), **TINY_RUN, head_epochs=1, tune_epochs=1, verbose=0)
    reasons = {os.path.relpath(s.path, root): s.reason for s in result.folder.skipped}
    assert set(reasons) == set(bad) and all(reasons.values())
    assert len(result.history) == 2


def test_decode_many_decodes_once_with_the_scan_rules(tmp_path, monkeypatch):
    from PIL import Image

    import finetune.data.images as images
    from finetune.data import decode_many

    good = tmp_path / "good.png"
    Image.new("RGB", (10, 10), (200, 0, 0)).save(good)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    calls = []
    original = images.load_image
    monkeypatch.setattr(images, "load_image", lambda *a, **k: calls.append(a[0]) or original(*a, **k))
    paths = [str(good), str(tmp_path / "empty.png"), str(tmp_path / "text.jpg")]
    ok, batch, bad = decode_many(paths, 8, "crop")
    assert ok == [str(good)] and batch.shape == (1, 8, 8, 3) and batch[0, 0, 0, 0] == 200
    assert dict(bad) == {paths[1]: "empty file (0 bytes)", paths[2]: images.check_image(paths[2])}
    assert calls.count(str(good)) == 1  # one decode per usable file
