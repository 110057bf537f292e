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


def test_flips_preset_gives_exact_flips_of_the_image():
    import numpy as np

    from finetune.data.augment import augmentation

    image = np.random.default_rng(0).integers(0, 255, (1, 8, 8, 3)).astype("float32")
    aug = augmentation("flips", seed=0)
    seen = set()
    for _ in range(40):
        out = np.asarray(aug(image, training=True))[0]
        matches = [k for k, ref in {"same": image[0], "h": image[0, :, ::-1], "v": image[0, ::-1],
                                    "hv": image[0, ::-1, ::-1]}.items() if np.array_equal(out, ref)]
        assert matches, "a flip preset must not interpolate"
        seen.add(matches[0])
    assert seen == {"same", "h", "v", "hv"}
    assert np.array_equal(np.asarray(aug(image, training=False)), image)
