"""TensorFlow's decoders in the pipeline: the same pixels as PIL within 1 gray level, PIL kept where only it is right."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from finetune.data import load_image, make_dataset
from finetune.data.native import decode_file, is_native

from .test_bad_inputs import encoded, jpeg_with_orientation, rgb_image, write

PHOTOS = "tests/photos"


def _corpus(tmp_path):
    """``{name: (path, decoded natively?)}``: the formats and modes finetune accepts."""
    gray16 = Image.fromarray(np.array([[0, 32768, 65535]] * 3, dtype=np.uint16))
    palette = Image.new("P", (9, 7), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 90, 200] + [0] * 759)
    palette.paste(2, (0, 0, 4, 7))
    frames = [rgb_image(12, 10, seed=s) for s in (1, 2)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    files = {
        "rgb.png": (encoded(rgb_image(40, 23), "PNG"), True),
        "gray.png": (encoded(rgb_image(31, 50).convert("L"), "PNG"), True),
        "palette.png": (encoded(palette, "PNG"), True),
        "photo.jpg": (encoded(rgb_image(45, 30), "JPEG", quality=90), True),
        "gray.jpg": (encoded(rgb_image(30, 45).convert("L"), "JPEG"), True),
        "rgb.bmp": (encoded(rgb_image(17, 26), "BMP"), True),
        "rotated.jpg": (jpeg_with_orientation(6), False),
        "upright.jpg": (jpeg_with_orientation(1), True),
        "cmyk.jpg": (encoded(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"), False),
        "deep.png": (encoded(gray16, "PNG"), False),
        "rgba.png": (encoded(Image.new("RGBA", (8, 8), (0, 255, 0, 100)), "PNG"), False),
        "transparent.png": (encoded(palette, "PNG", transparency=1), False),
        "image.webp": (encoded(rgb_image(), "WEBP"), False),
    }
    corpus = {name: (str(write(tmp_path / name, data)), native) for name, (data, native) in files.items()}
    corpus["anim.gif"] = (str(gif), True)
    corpus["china.jpg"] = (f"{PHOTOS}/china.jpg", True)
    return corpus


def test_routing_sends_only_what_tensorflow_decodes_alike(tmp_path):
    found = {name: is_native(path) for name, (path, _) in _corpus(tmp_path).items()}
    assert found == {name: native for name, (_, native) in _corpus(tmp_path).items()}
    (tmp_path / "junk.png").write_bytes(b"not an image")
    assert not is_native(str(tmp_path / "junk.png"))  # PIL's path names the reason


@pytest.mark.parametrize("resize", ["squash", "crop", "pad"])
@pytest.mark.parametrize("size", [16, 64, 224])
def test_native_pixels_match_pil_within_one_level(tmp_path, resize, size):
    for name, (path, native) in _corpus(tmp_path).items():
        if not native:
            continue
        tf_pixels = decode_file(path, size, resize, True).numpy().astype(int)
        pil_pixels = load_image(path, size, resize).astype(int)
        assert np.abs(tf_pixels - pil_pixels).max() <= 1, f"{name} ({resize}, {size}px)"


def test_the_pipeline_mixes_both_decoders_and_keeps_order(tmp_path):
    corpus = _corpus(tmp_path)
    items = [(path, i) for i, (path, _) in enumerate(corpus.values())]
    images, labels = next(iter(make_dataset(items, 32, batch_size=len(items), resize="crop", cache=None)))
    assert labels.numpy().tolist() == list(range(len(items)))
    for (path, _), image in zip(items, images.numpy()):
        assert np.abs(image - load_image(path, 32, "crop")).max() <= 1, path
