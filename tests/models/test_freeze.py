"""Unfreeze policies: where fine-tuning starts; BatchNormalization stays frozen."""

import pytest

from finetune.models.freeze import UnfreezePolicy
from tiny_backbone import build_tiny


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
