import math

import keras
import numpy as np
import pytest

from finetune.augment import augmentation
from finetune.transfer import UnfreezePolicy
from tiny_backbone import build_tiny


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


def test_unfreeze_policies_and_batchnorm_stays_frozen():
    base = build_tiny((32, 32, 3), None)
    names = [l.name for l in base.layers]
    unfrozen = UnfreezePolicy(from_layer="block2").apply(base)
    assert unfrozen == ["block2_conv", "block3_conv"]
    assert not base.get_layer("block2_bn").trainable and not base.get_layer("block1_conv").trainable
    assert UnfreezePolicy(last_blocks=1, block_pattern=r"^(block\d+)_").apply(base) == ["block3_conv"]
    assert UnfreezePolicy(from_layer="block1_conv").apply(base) == ["block1_conv", "block2_conv", "block3_conv"]
    frac = UnfreezePolicy(fraction=0.25).start_index(base)
    assert names[frac:] == names[-len(names[frac:]):] and 0 < len(names) - frac <= 3
    with pytest.raises(ValueError, match="no layer named"):
        UnfreezePolicy(from_layer="block9").apply(base)
    with pytest.raises(ValueError, match="exactly one"):
        UnfreezePolicy(from_layer="a", fraction=0.5)
