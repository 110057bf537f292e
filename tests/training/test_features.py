"""The feature cache: same head as the live path, keyed so a stale cache is never used."""

import os

import keras
import numpy as np

from conftest import TINY_RUN
from finetune import build_model, fine_tune, scan_folder
from finetune.data.spec import ImageSpec
from finetune.training.features import FeatureCache


def _head_after(folder, cache_features: bool):
    keras.utils.set_random_seed(0)
    result = fine_tune(str(folder), **TINY_RUN, head_epochs=4, tune_epochs=0, patience=0, dropout=0.2,
                       cache_features=cache_features, verbose=0)
    return result.parts.classifier.get_weights(), result.history


def test_cached_and_live_phase1_give_the_same_head(image_folder):
    cached, cached_history = _head_after(image_folder, True)
    live, live_history = _head_after(image_folder, False)
    for a, b in zip(cached, live):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.allclose([r["loss"] for r in cached_history], [r["loss"] for r in live_history], atol=1e-5)


def test_disk_cache_is_reused_and_invalidated_by_a_changed_file(image_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE_DIR", str(tmp_path / "cache"))
    parts = build_model("tiny_cnn", 3, weights=None, image_size=32, augment="none")
    weights_file = tmp_path / "tiny.weights.h5"
    parts.base.save_weights(weights_file)

    class Cfg:  # the fields FeatureCache.for_run reads
        weights, pooling, augment, seed = str(weights_file), "avg", "none", 0

    parts = build_model("tiny_cnn", 3, weights=str(weights_file), image_size=32, augment="none")
    folder = scan_folder(image_folder)
    items = folder.splits["train"]
    loader = dict(image_size=32, batch_size=8, binary=False)
    first = FeatureCache.for_run(Cfg, parts, ImageSpec(32))
    a = first.get_or_compute(items, loader, parts)
    second = FeatureCache.for_run(Cfg, parts, ImageSpec(32))
    b = second.get_or_compute(items, loader, parts)
    assert second.hits == 1 and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])

    path = items[0][0]
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))  # the file changed
    third = FeatureCache.for_run(Cfg, parts, ImageSpec(32))
    third.get_or_compute(items, loader, parts)
    assert third.hits == 0


def test_random_weights_are_never_cached_on_disk(image_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE_DIR", str(tmp_path / "cache"))

    class Cfg:
        weights, pooling, augment, seed = "none", "avg", "none", 0

    parts = build_model("tiny_cnn", 3, weights=None, image_size=32, augment="none")
    cache = FeatureCache.for_run(Cfg, parts, ImageSpec(32))
    cache.get_or_compute(scan_folder(image_folder).splits["train"], dict(image_size=32, batch_size=8, binary=False), parts)
    assert cache.directory is None and not (tmp_path / "cache").exists()
