"""Resize policies: photos keep their shape (crop, pad) or are squashed, the same way everywhere."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from finetune.data import load_image, load_images, make_dataset
from finetune.data.images import fit_to

PHOTOS = Path(__file__).parents[1] / "photos"


def _wide_with_square(tmp_path) -> Path:
    """A 200x100 image, black, with a centred 40x40 white square."""
    img = Image.new("RGB", (200, 100))
    img.paste((255, 255, 255), (80, 30, 120, 70))
    path = tmp_path / "wide.png"
    img.save(path)
    return path


def _white_box(pixels: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(pixels[..., 0] > 128)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def test_crop_and_pad_keep_a_square_square_squash_does_not(tmp_path):
    path = _wide_with_square(tmp_path)
    h, w = _white_box(load_image(path, 100, "crop"))
    assert abs(h - w) <= 1 and h == 40  # centre 100x100 of the 200x100 image: the square, unscaled
    h, w = _white_box(load_image(path, 100, "pad"))
    assert abs(h - w) <= 1 and h == 20  # the whole image, scaled by 1/2 after padding to 200x200
    h, w = _white_box(load_image(path, 100, "squash"))
    assert h == 40 and w == 20  # squashed: half as wide as it is tall


def test_a_square_image_is_the_same_under_every_policy(tmp_path):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 50, 3), dtype=np.uint8))
    path = tmp_path / "square.png"
    img.save(path)
    same = [load_image(path, 32, policy) for policy in ("squash", "crop", "pad")]
    assert all(np.array_equal(same[0], other) for other in same[1:])


def test_the_pipeline_and_predict_fit_images_alike(tmp_path):
    path = _wide_with_square(tmp_path)
    for policy in ("crop", "pad"):
        batch = next(iter(make_dataset([(str(path), 0)], 64, resize=policy, cache=None)))
        np.testing.assert_array_equal(batch[0][0].numpy(), load_images([str(path)], 64, policy)[0])


def test_unknown_policy_is_refused_by_both_backends():
    import tensorflow as tf

    from finetune.data.native import fit_tensor
    from finetune.errors import ConfigError

    with pytest.raises(ConfigError, match="resize: must be one of"):
        fit_to(Image.new("RGB", (4, 4)), (2, 2), "stretch")
    with pytest.raises(ConfigError, match="resize: must be one of"):
        fit_tensor(tf.zeros((4, 4, 3), tf.uint8), 2, "stretch")


def test_old_run_folders_load_as_squash(tmp_path):
    from finetune.runs import load_run

    import keras

    run = tmp_path / "old-run"
    run.mkdir()
    keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)]).save(run / "model.keras")
    (run / "config.yaml").write_text("backbone: tiny_cnn\nimage_size: 8\n")  # a 0.1 config: no resize key
    (run / "labels.txt").write_text("a\nb\n")
    assert load_run(run).spec.resize == "squash"
    (run / "config.yaml").write_text("backbone: tiny_cnn\nimage_size: 8\nresize: pad\n")
    assert load_run(run).spec.resize == "pad"


def test_imagenet_names_the_original_non_square_photos():
    """scikit-learn's sample photos (640x427): the reference eval transform of the weights, not a squash."""
    from click.testing import CliRunner

    from finetune.cli import main

    result = CliRunner().invoke(main, ["predict", "--imagenet", str(PHOTOS / "china.jpg"), str(PHOTOS / "flower.jpg")])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert Image.open(PHOTOS / "china.jpg").size == (640, 427)
    assert lines[-2].split(": ")[1].startswith("palace") and lines[-1].split(": ")[1].startswith("daisy")
