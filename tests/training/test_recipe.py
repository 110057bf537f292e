import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import TINY_RUN
from finetune import ConfigError, build_model, fine_tune, load_run, train, TrainConfig
from finetune.data import load_images


def _base_weights(parts):
    return {w.path: np.array(w.numpy()) for w in parts.base.weights}


def _fine_tune_with(parts, folder, **kwargs):
    """Run fine_tune on a model we built (and kept a copy of) ourselves."""
    import finetune.training.recipe as training

    original = training.build_model
    training.build_model = lambda *a, **k: parts
    try:
        return fine_tune(str(folder), **{**TINY_RUN, **kwargs}, verbose=0)
    finally:
        training.build_model = original


@pytest.mark.parametrize("cache_features", [True, False])
def test_phase1_keeps_the_base_bit_identical_and_learns(image_folder, cache_features):
    keras.utils.set_random_seed(3)
    parts = build_model("tiny_cnn", 3, weights=None, image_size=32, augment="none")
    before = _base_weights(parts)
    result = _fine_tune_with(parts, image_folder, head_epochs=12, tune_epochs=0, patience=0, cache_features=cache_features)
    after = _base_weights(result.parts)
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert len(result.history) == 12 and {r["phase"] for r in result.history} == {"head"}
    assert result.history[-1]["loss"] < 0.7 * result.history[0]["loss"]


def test_phase2_honours_unfreeze_point_and_keeps_batchnorm_statistics(image_folder):
    keras.utils.set_random_seed(1)
    parts = build_model("tiny_cnn", 3, weights=None, image_size=32, augment="none")
    before = {l.name: [np.array(w) for w in l.get_weights()] for l in parts.base.layers}
    result = _fine_tune_with(parts, image_folder, head_epochs=2, tune_epochs=2, tune_lr=0.05, patience=0,
                             unfreeze_from="block2")
    after = {l.name: l.get_weights() for l in result.parts.base.layers}
    same = lambda name: all(np.array_equal(a, b) for a, b in zip(before[name], after[name]))
    assert same("block1_conv") and same("block1_bn") and same("block2_bn")  # BN: gamma, beta, moving stats
    assert not same("block2_conv") and not same("block3_conv")
    assert result.unfrozen_layers == ["block2_conv", "block3_conv"]
    assert result.unfreeze_epoch == 3 and [r["phase"] for r in result.history] == ["head"] * 2 + ["tune"] * 2
    assert result.history[-1]["lr"] == pytest.approx(0.05)


def test_run_folder_and_plain_keras_reload(image_folder, tmp_path):
    config = TrainConfig(data=str(image_folder), **TINY_RUN, head_epochs=4, tune_epochs=1, output=str(tmp_path / "runs"), name="r")
    run_dir, result, metrics = train(config, verbose=0)
    expected = {"model.keras", "config.yaml", "labels.txt", "history.csv", "curves.png", "confusion.png",
                "metrics.json", "report.md", "skipped.csv"}
    assert expected <= {p.name for p in run_dir.iterdir()}
    assert metrics["n"] == 3 and len(metrics["confusion_matrix"]) == 3
    reloaded = keras.models.load_model(run_dir / "model.keras")  # plain Keras, safe mode
    x = load_images([p for p, _ in result.folder.splits["test"]], 32)
    assert np.allclose(reloaded.predict(x, verbose=0), result.model.predict(x, verbose=0), atol=1e-6)
    plain = subprocess.run(  # a fresh process that never imports finetune
        [sys.executable, "-c", "import sys, keras; m = keras.models.load_model(sys.argv[1]); print(m.output_shape)",
         str(run_dir / "model.keras")], capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0 and "(None, 3)" in plain.stdout, plain.stderr[-1500:]
    run = load_run(run_dir)
    model, cfg, names = run.model, run.config, run.classes
    assert names == ["class_a", "class_b", "class_c"] and cfg.image_size == 32
    assert TrainConfig.load(run_dir / "config.yaml") == result.config
    run2, *_ = train(config, verbose=0)
    assert run2 != run_dir and run2.name == "r-2"  # never overwrites a finished run


def test_binary_uses_one_sigmoid_unit_and_class_weights(binary_folder):
    result = fine_tune(str(binary_folder), **TINY_RUN, head_epochs=2, tune_epochs=0, class_weight="balanced", verbose=0)
    assert result.model.output_shape == (None, 1)
    assert result.model.layers[-1].layers[-1].activation.__name__ == "sigmoid"


def test_image_size_too_small_is_refused(image_folder):
    with pytest.raises(ConfigError, match="too small for tiny_cnn"):
        fine_tune(str(image_folder), **{**TINY_RUN, "image_size": 8}, verbose=0)


@pytest.mark.parametrize("options", [
    dict(loop="trainer"),
    dict(schedule="cosine", warmup_epochs=1, discriminative=True, clipnorm=1.0, optimizer="nesterov"),
    dict(schedule="plateau", class_weight="balanced", cache_variants=1, augment="light"),
], ids=["trainer-loop", "cosine-discriminative", "plateau-variants"])
def test_two_phase_recipe_runs_with_toolkit_options(image_folder, options):
    result = fine_tune(str(image_folder), **{**TINY_RUN, **options}, head_epochs=3, tune_epochs=2, patience=0, verbose=0)
    assert [r["phase"] for r in result.history] == ["head"] * 3 + ["tune"] * 2
    assert all(np.isfinite(r["loss"]) for r in result.history)


def test_a_saved_result_loads_without_warnings(image_folder, tmp_path):
    import warnings

    result = fine_tune(str(image_folder), **TINY_RUN, head_epochs=1, tune_epochs=1, verbose=0)
    result.model.save(tmp_path / "m.keras")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keras.models.load_model(tmp_path / "m.keras")
    assert [str(w.message) for w in caught] == []


def test_time_budget_stops_each_phase_when_the_next_epoch_would_overrun(image_folder):
    config = TrainConfig(data=str(image_folder), **TINY_RUN, head_epochs=50, tune_epochs=20, patience=0,
                         time_budget=1e-4)  # 6 ms: every phase stops after its first epoch
    result = fine_tune(str(image_folder), config, verbose=0)
    assert [r["phase"] for r in result.history] == ["head", "tune"]
    assert sum("time budget" in note and "stopped after 1 of" in note for note in result.notes) == 2
    assert TrainConfig.from_dict(config.to_dict()).time_budget == 1e-4  # --config reproduces the budget


def test_balanced_decision_corrects_priors_in_the_last_bias(tmp_path):
    """An imbalanced folder (30 vs 6 images, overlapping classes): the balanced rule shifts the bias toward the
    rare class, names tau in the notes, and the saved model carries it as a stock layer."""
    from conftest import make_image_folder

    root = make_image_folder(tmp_path / "data", classes=2, per_class=6)
    rich = make_image_folder(tmp_path / "more", classes=1, per_class=30, seed=3)
    for i, f in enumerate(sorted((rich / "class_a").iterdir())):
        f.rename(root / "class_a" / f"extra_{i}.png")
    run = {**TINY_RUN, "head_epochs": 5, "tune_epochs": 0, "val_split": 0.3, "test_split": 0.0, "verbose": 0}
    plain = fine_tune(str(root), **run)
    balanced = fine_tune(str(root), **run, decision="balanced")
    note = [n for n in balanced.notes if n.startswith("decision balanced")]
    assert len(note) == 1 and "tau" in note[0]
    tau = float(note[0].split("tau ")[1].split()[0])
    bias_plain = plain.parts.classifier.get_layer("predictions").get_weights()[1]
    bias_balanced = balanced.parts.classifier.get_layer("predictions").get_weights()[1]
    # one sigmoid unit (class_b is 1): rarer class_b gets +tau * log(n_a / n_b)
    n_a, n_b = balanced.folder.counts("train")
    assert bias_balanced[0] - bias_plain[0] == pytest.approx(tau * np.log(n_a / n_b), abs=1e-5)
    with pytest.raises(ConfigError, match="decision"):
        fine_tune(str(root), **{**run, "decision": "argmax"})
