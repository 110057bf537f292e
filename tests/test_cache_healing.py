"""A damaged cache file is deleted, recomputed and named in a warning; it never breaks a command."""

import numpy as np
import pytest

from finetune.cache import check_h5, check_npy, usable_or_removed


def test_truncated_npy_is_removed_with_a_warning(tmp_path):
    path = tmp_path / "features.npy"
    np.save(path, np.arange(1000, dtype=np.float32))
    assert usable_or_removed(path, check_npy)
    path.write_bytes(path.read_bytes()[:2000])  # what a full disk leaves
    with pytest.warns(RuntimeWarning, match="damaged cache file .*features.npy"):
        assert not usable_or_removed(path, check_npy)
    assert not path.exists()


def test_truncated_weights_file_is_removed(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = tmp_path / "w.weights.h5"
    model.save_weights(path)
    assert usable_or_removed(path, check_h5)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(RuntimeWarning, match="damaged cache file"):
        assert not usable_or_removed(path, check_h5)
    assert not path.exists()


def test_training_heals_a_truncated_feature_cache(image_folder, tmp_path, monkeypatch):
    from conftest import TINY_RUN
    from finetune import build_model, fine_tune

    monkeypatch.setenv("FINETUNE_CACHE_DIR", str(tmp_path / "cache"))
    weights = tmp_path / "tiny.weights.h5"  # identifiable weights: features are cached on disk
    build_model("tiny_cnn", 3, weights=None, image_size=32, augment="none").base.save_weights(weights)
    run = {**TINY_RUN, "weights": str(weights), "head_epochs": 2, "tune_epochs": 0, "verbose": 0}
    first = fine_tune(str(image_folder), **run)
    files = sorted((tmp_path / "cache" / "features").glob("*.npy"))
    assert files
    biggest = max(files, key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[:200])
    with pytest.warns(RuntimeWarning, match="damaged cache file"):
        again = fine_tune(str(image_folder), **run)
    assert [r["loss"] for r in again.history] == pytest.approx([r["loss"] for r in first.history], rel=1e-5)
    assert biggest.exists() and biggest.stat().st_size > 200


def test_truncated_converted_lite0_weights_are_converted_again(tmp_path, monkeypatch):
    from finetune.models.backbones import efficientnet_lite as lite

    monkeypatch.setenv("FINETUNE_CACHE_DIR", str(tmp_path))
    variant = lite.VARIANTS["efficientnet_lite0"]
    target = lite.convert_pth(lite.source_pth(variant), variant)
    size = target.stat().st_size
    target.write_bytes(target.read_bytes()[: size // 3])
    with pytest.warns(RuntimeWarning, match="damaged cache file"):
        again = lite.convert_pth(lite.source_pth(variant), variant)
    assert again == target and target.stat().st_size == size


def test_cache_is_bounded_least_recently_used_first(tmp_path, monkeypatch):
    import os
    import time

    from finetune import cache

    monkeypatch.setenv("FINETUNE_CACHE_DIR", str(tmp_path))
    features = tmp_path / "features"
    features.mkdir()
    for i, key in enumerate(["old", "mid", "new"]):
        for suffix in (".0.npy", ".json"):
            path = features / f"{key}{suffix}"
            path.write_bytes(b"x" * 1000)
            os.utime(path, (time.time() - 100 + i * 10,) * 2)
    cache.touch(features / "old.0.npy", features / "old.json")  # used just now: "mid" is now the oldest
    removed = cache.evict(limit=4500)
    assert sorted(p.name for p in removed) == ["mid.0.npy", "mid.json"]
    assert cache.parse_size("5GB") == 5 * 1024**3
    with pytest.raises(ValueError, match="e.g. 5GB"):
        cache.parse_size("lots")


def test_cache_command_shows_and_clears(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from finetune.cli import main

    monkeypatch.setenv("FINETUNE_CACHE_DIR", str(tmp_path))
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "k.0.npy").write_bytes(b"x" * 2048)
    shown = CliRunner().invoke(main, ["cache"])
    assert shown.exit_code == 0 and "1 entries" in shown.output and "features" in shown.output
    cleared = CliRunner().invoke(main, ["cache", "--clear"])
    assert cleared.exit_code == 0 and not (tmp_path / "features" / "k.0.npy").exists()
