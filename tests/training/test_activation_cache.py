"""Phase 2 on cached activations at the unfreeze point: the same model as live, at cached speed."""

import json
import signal
from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import TINY_RUN
from finetune import fine_tune
from finetune.models import build_model
from finetune.models.split import CannotSplit, split_base
from finetune.training.features import FeatureCache

from .test_resume import drive, weights

PHASE2 = dict(TINY_RUN, lr=0.05, head_epochs=2, tune_epochs=3, tune_lr=0.05, patience=0, unfreeze_from="block2")


def test_cached_phase2_equals_live_phase2_without_augmentation(image_folder):
    live = fine_tune(str(image_folder), **PHASE2, tune_inputs="images", verbose=0)
    cached = fine_tune(str(image_folder), **PHASE2, tune_inputs="activations", verbose=0)
    assert [r["loss"] for r in cached.history] == pytest.approx([r["loss"] for r in live.history], abs=1e-5)
    assert [r["val_loss"] for r in cached.history] == pytest.approx([r["val_loss"] for r in live.history], abs=1e-5)
    for a, b in zip(live.model.get_weights(), cached.model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert any("cached activations at block2_conv" in note for note in cached.notes)
    assert "activations" in cached.timings and "activations" not in live.timings


def test_auto_uses_the_cache_only_when_it_drops_no_augmentation(image_folder):
    plain = fine_tune(str(image_folder), **{**PHASE2, "tune_epochs": 1}, verbose=0)
    augmented = fine_tune(str(image_folder), **{**PHASE2, "tune_epochs": 1, "augment": "light", "cache_variants": 0},
                          verbose=0)
    default = fine_tune(str(image_folder), **{**PHASE2, "tune_epochs": 1, "augment": "light"}, verbose=0)
    assert default.config.cache_variants == 2 and default.config.resolved_tune_inputs == "activations"
    copies = fine_tune(str(image_folder), **{**PHASE2, "tune_epochs": 1, "augment": "light", "cache_variants": 1},
                       verbose=0)
    assert plain.config.resolved_tune_inputs == "activations" and "activations" in plain.timings
    assert augmented.config.resolved_tune_inputs == "images" and "activations" not in augmented.timings
    assert copies.config.resolved_tune_inputs == "activations" and "2 copies" in " ".join(copies.notes)


def test_each_epoch_draws_the_next_augmented_copy(image_folder, monkeypatch):
    seen = []
    original = FeatureCache.get_or_compute

    def spy(self, items, loader, parts, **kw):
        arrays = original(self, items, loader, parts, **kw)
        if kw.get("cut") is not None and kw.get("split", "train") == "train":
            seen.append((kw["variant"], float(np.asarray(arrays[0]).sum())))
        return arrays

    monkeypatch.setattr(FeatureCache, "get_or_compute", spy)
    fine_tune(str(image_folder), **{**PHASE2, "augment": "light", "cache_variants": 2}, verbose=0)
    assert [v for v, _ in seen] == [0, 1, 2]
    assert len({round(total, 3) for _, total in seen}) == 3  # three different copies of the activations


def test_float16_storage_halves_the_cache_and_still_trains(image_folder):
    result = fine_tune(str(image_folder), **PHASE2, tune_inputs="activations", cache_dtype="float16", verbose=0)
    assert all(np.isfinite(r["loss"]) for r in result.history)


def test_resume_with_cached_activations_and_copies_is_exact(tmp_path):
    from conftest import make_image_folder

    config = dict(TINY_RUN, data=str(make_image_folder(tmp_path / "data")), head_epochs=2, tune_epochs=3, patience=0,
                  output=str(tmp_path / "runs"), augment="light", cache_variants=1, unfreeze_from="block2")
    assert drive({**config, "name": "straight"}).returncode == 0
    killed = drive({**config, "name": "killed"}, kill_at=4)
    assert killed.returncode == -signal.SIGKILL
    run_dir = Path(config["output"]) / "killed"
    assert len(json.loads((run_dir / "checkpoint" / "state.json").read_text())["rows"]) == 4
    resumed = drive({**config, "name": "killed"}, resume=run_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for a, b in zip(weights(Path(config["output"]) / "straight"), weights(run_dir)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_split_finds_both_tensors_of_a_residual_cut():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    y = keras.layers.Conv2D(4, 3, padding="same", name="branch")(x)
    out = keras.layers.Add(name="add")([x, y])
    base = keras.Model(inputs, out)
    split = split_base(base, "add")  # reads x (below) and y (below): two tensors cross
    assert len(split.shapes) == 2
    data = np.random.rand(2, 8, 8, 3).astype("float32")
    np.testing.assert_allclose(split.top(split.bottom(data)), base(data), atol=1e-6)
    with pytest.raises(CannotSplit):
        split_base(base, "no_such_layer")


def test_every_registered_small_backbone_splits_at_its_default_unfreeze_point():
    from finetune.models import list_backbones

    for spec in list_backbones():
        if spec.params_millions > 6 or spec.name.startswith("tiny"):
            continue  # big ones cost minutes to build on 2 cores; the graph code is the same
        parts = build_model(spec, 2, weights=None, image_size=max(spec.min_input_size, 64), augment="none")
        from finetune.models import UnfreezePolicy

        policy = UnfreezePolicy(from_layer=spec.default_unfreeze, block_pattern=spec.block_pattern)
        layer = parts.base.layers[policy.start_index(parts.base)].name
        split = split_base(parts.base, layer)
        x = np.random.rand(1, *parts.base.input.shape[1:]).astype("float32")
        np.testing.assert_allclose(split.top(split.bottom(x)), parts.base(x), atol=1e-4, err_msg=spec.name)


def test_phase1_features_come_from_the_cached_activations(image_folder, monkeypatch):
    """With phase 2 on activations the bottom runs once for both phases, and phase 1 learns the same."""
    from finetune.training import features

    calls = []
    original = features.extract_features
    monkeypatch.setattr(features, "extract_features",
                        lambda *a, **k: calls.append(k.get("split")) or original(*a, **k))
    shared = fine_tune(str(image_folder), **PHASE2, tune_inputs="activations", verbose=0)
    assert calls and all(split is not None for split in calls)  # only activations were extracted
    calls.clear()
    alone = fine_tune(str(image_folder), **{**PHASE2, "tune_epochs": 0}, verbose=0)
    assert None in calls  # phase 1 alone extracts pooled features as before
    head = [r["loss"] for r in shared.history if r["phase"] == "head"]
    assert head == pytest.approx([r["loss"] for r in alone.history], abs=1e-5)
