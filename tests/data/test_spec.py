"""The input spec: one value that turns files, arrays of any size and datasets into model inputs, as training did."""

import numpy as np
import pytest
from PIL import Image

from finetune.choices import DEFAULT_RESIZE
from finetune.config import TrainConfig
from finetune.data import load_image, load_images, make_dataset
from finetune.data.spec import ImageSpec, as_spec, crop_box, pad_box
from finetune.errors import ConfigError


def _wide(tmp_path, size=(90, 50)):
    pixels = np.random.default_rng(1).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    path = tmp_path / "wide.png"
    Image.fromarray(pixels).save(path)
    return path, pixels


def test_library_defaults_are_the_config_default():
    assert TrainConfig().resize == DEFAULT_RESIZE == ImageSpec(8).resize == as_spec(8).resize


def test_readme_load_images_gives_the_pixels_training_decodes(tmp_path):
    path, _ = _wide(tmp_path)
    trained = next(iter(make_dataset([(str(path), 0)], 32, cache=None)))[0][0].numpy()
    np.testing.assert_allclose(load_images([str(path)], 32)[0], trained, atol=1)  # native vs PIL: 1 gray level


def test_an_array_of_any_size_meets_the_model_as_its_png_would(tmp_path):
    path, pixels = _wide(tmp_path)
    for resize in ("crop", "pad", "squash"):
        spec = ImageSpec(40, resize)
        np.testing.assert_array_equal(spec.prepare(pixels)[0], load_image(path, 40, resize))
        np.testing.assert_array_equal(spec.prepare(str(path))[0], load_image(path, 40, resize))


def test_prepare_takes_grayscale_batches_lists_and_datasets():
    import tensorflow as tf

    spec = ImageSpec(16)
    gray = np.random.default_rng(0).integers(0, 255, (3, 20, 12), dtype=np.uint8)
    batch = spec.prepare(gray)
    assert batch.shape == (3, 16, 16, 3) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[..., 0], batch[..., 2])
    np.testing.assert_array_equal(spec.prepare(list(gray)), batch)
    np.testing.assert_array_equal(spec.prepare(gray[..., None]), batch)
    ds = tf.data.Dataset.from_tensor_slices((gray[..., None], np.arange(3))).batch(2)
    np.testing.assert_array_equal(spec.prepare(ds), batch)


def test_the_box_is_shared_by_both_backends():
    assert crop_box(200, 100) == (50.0, 0.0, 150.0, 100.0)
    assert crop_box(100, 200, fraction=0.5) == (25.0, 75.0, 75.0, 125.0)
    assert pad_box(100, 200) == (200, 200, 50, 0)


def test_spec_round_trips_and_refuses_bad_values():
    spec = ImageSpec(64, "pad", crop_fraction=0.875)
    assert ImageSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match="resize"):
        ImageSpec(64, "stretch")
    with pytest.raises(ConfigError, match="input spec of kind 'text'"):
        ImageSpec.from_dict({"kind": "text", "size": 3})
    with pytest.raises(ConfigError, match="disagrees"):
        as_spec(spec, "crop")
