"""Feature taps: earlier stages pooled beside the top, through every path a run's model takes."""

from finetune.data.spec import ImageSpec
import keras
import numpy as np
import pytest

from conftest import TINY_RUN
from finetune import ConfigError, fine_tune
from finetune.evaluation.explain import grad_cam
from finetune.models import build_model
from finetune.models.taps import CannotTap, stage_ends, with_taps
from finetune.training.features import FeatureCache
from tiny_backbone import TINY, build_tiny

PHASE2 = dict(TINY_RUN, lr=0.05, head_epochs=2, tune_epochs=3, tune_lr=0.05, patience=0, unfreeze_from="block2")


def test_stage_ends_are_where_the_feature_map_changes_shape():
    base = build_tiny((32, 32, 3), None)
    # block1 (32x32x8) -> block2 (16x16x16): a stage ends; block2 -> block3 keep 16x16x16; block3 is final
    assert stage_ends(base, TINY.block_pattern) == ["block1_relu"]


@pytest.mark.parametrize("size", [32, 35])  # 32: the tap is pooled 2x2 exactly; 35: 35 -> 18 needs area resizing
def test_pooled_tapped_map_is_the_pooled_top_and_tap_side_by_side(size):
    base = build_tiny((size, size, 3), None)
    tapped, names = with_taps(base, TINY.block_pattern, 1)
    x = np.random.default_rng(0).uniform(0, 1, (2, size, size, 3)).astype("float32")
    pooled = keras.ops.convert_to_numpy(keras.layers.GlobalAveragePooling2D()(tapped(x)))
    tap = keras.Model(base.input, base.get_layer(names[0]).output)(x)
    np.testing.assert_allclose(pooled[:, :16], keras.ops.convert_to_numpy(keras.ops.mean(base(x), axis=(1, 2))),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled[:, 16:], keras.ops.convert_to_numpy(keras.ops.mean(tap, axis=(1, 2))),
                               rtol=0.05 if size == 35 else 1e-5, atol=1e-3 if size == 35 else 1e-6)


def test_too_many_taps_is_refused_with_the_number_available():
    with pytest.raises(CannotTap, match="at most 1"):
        with_taps(build_tiny((32, 32, 3), None), TINY.block_pattern, 2)
    with pytest.raises(ConfigError, match="feature_taps: .*at most 1"):
        build_model("tiny_cnn", 3, weights=None, image_size=32, feature_taps=2)


def test_a_tapped_run_trains_both_phases_on_cached_activations_as_live(image_folder):
    live = fine_tune(str(image_folder), **PHASE2, feature_taps=1, tune_inputs="images", verbose=0)
    cached = fine_tune(str(image_folder), **PHASE2, feature_taps=1, tune_inputs="activations", verbose=0)
    assert live.model.get_layer("tiny_base").output.shape[-1] == 16 + 8
    assert [r["val_loss"] for r in cached.history] == pytest.approx([r["val_loss"] for r in live.history], abs=1e-5)
    assert cached.kept_phase in ("head", "tune") and len(cached.history) == 5


def test_a_tapped_model_saves_loads_and_explains(image_folder, tmp_path):
    result = fine_tune(str(image_folder), **TINY_RUN, head_epochs=1, tune_epochs=0, feature_taps=1, verbose=0)
    result.model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), result.model.predict(x, verbose=0), atol=1e-6)
    assert grad_cam(loaded, x)[0].heatmap.shape == (16, 16)


def test_taps_change_the_feature_cache_key_and_only_when_on():
    parts = build_model("tiny_cnn", 3, weights=None, image_size=32)
    plain = FeatureCache.for_run(fine_tune_config(), parts, ImageSpec(32)).identity
    tapped = FeatureCache.for_run(fine_tune_config(feature_taps=1), parts, ImageSpec(32)).identity
    assert "feature_taps" not in plain and tapped["feature_taps"] == 1


def fine_tune_config(**overrides):
    from finetune import TrainConfig

    return TrainConfig.from_dict({**TrainConfig().to_dict(), **TINY_RUN, **overrides})


def test_lite0_stages_are_the_ends_of_blocks_6_and_5_first():
    from finetune.models import get_backbone

    spec = get_backbone("efficientnet_lite0")
    base = spec.build((224, 224, 3), None)
    assert stage_ends(base, spec.block_pattern)[:3] == ["block6d_add", "block5c_add", "block4c_add"]
    tapped, _ = with_taps(base, spec.block_pattern, 2)
    assert tuple(tapped.output.shape) == (None, 7, 7, 1280 + 192 + 112)
