import math

import numpy as np
import pytest

from finetune.data.augment import augmentation


def test_seed_preset_matches_image_data_generator_units():
    aug = augmentation("seed", seed=0)
    kinds = {type(layer).__name__: layer for layer in aug.layers}
    assert set(kinds) == {"RandomRotation", "RandomTranslation", "RandomShear", "RandomZoom", "RandomFlip"}
    assert kinds["RandomRotation"].factor == pytest.approx((-40 / 360, 40 / 360))
    shear = kinds["RandomShear"].x_factor
    assert max(abs(v) for v in shear) == pytest.approx(math.sin(math.radians(0.2)))  # 0.2 degrees, not 20%
    assert kinds["RandomRotation"].fill_mode == "nearest"


@pytest.mark.parametrize("preset", ["light", "seed"])
def test_augmentation_acts_only_in_training(preset):
    aug = augmentation(preset, seed=1)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    assert np.array_equal(np.asarray(aug(x, training=False)), x)
    assert not np.allclose(np.asarray(aug(x, training=True)), x)
    assert augmentation("none") is None
