"""One recipe, resolved once by a pure function; a run that follows it and changes nothing; config errors early."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import TINY_RUN, make_image_folder
from finetune import TrainConfig, fine_tune, load_run, train
from finetune.cli import main
from finetune.errors import ConfigError
from finetune.models import get_backbone
from finetune.training.resolve import Facts, Recipe, resolve


def _facts(**changes):
    values = dict(backbone=get_backbone("tiny_cnn"), num_classes=3, train_counts=(10, 10, 10), typical_size=40,
                  grayscale_fraction=0.0)
    return Facts(**{**values, **changes})


def test_resolve_is_pure_and_its_recipe_frozen():
    config = TrainConfig(data="d", **TINY_RUN)
    before = config.to_dict()
    first, second = resolve(config, _facts()), resolve(config, _facts())
    assert config.to_dict() == before and first == second
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.loop = "trainer"
    copy = first.config
    copy.tune_lr = 123.0
    assert first.config.tune_lr != 123.0  # the recipe hands out copies
    assert Recipe.from_dict(json.loads(json.dumps(first.to_dict()))) == first


def test_resolve_decides_from_the_facts():
    config = TrainConfig(data="d", backbone="tiny_cnn", weights="none")
    gray = resolve(config, _facts(grayscale_fraction=1.0)).config
    colour = resolve(config, _facts()).config
    assert gray.tune_lr == config.lr / 10 and colour.tune_lr == config.lr / 100
    assert colour.cache_variants == 2 and resolve(dataclasses.replace(config, augment="none"), _facts()).config.cache_variants == 0
    small = resolve(config, _facts(typical_size=8))  # under half the input: the whole network at lr
    assert small.config.unfreeze_fraction == 1.0 and small.config.tune_lr == config.lr
    assert small.spec.size == 32 and any("far smaller" in n for n in small.notes)


@pytest.mark.parametrize("changes, facts, message", [
    (dict(ordinal=True), dict(num_classes=2), "ordinal"),
    (dict(decision="balanced"), dict(multi_label=True), "decision"),
    (dict(class_weight="balanced"), dict(multi_label=True), "class_weight"),
])
def test_errors_that_need_the_data_fail_in_resolve(changes, facts, message):
    with pytest.raises(ConfigError, match=message):
        resolve(TrainConfig(data="d", **TINY_RUN, **changes), _facts(**facts))


def test_data_errors_come_before_any_network_is_built(binary_folder, tmp_path, monkeypatch):
    import finetune.training.recipe as recipe_module

    def no_network(*args, **kwargs):
        raise AssertionError("a network was built before the config was checked against the data")

    monkeypatch.setattr(recipe_module, "build_model", no_network)
    with pytest.raises(ConfigError, match="ordinal"):
        train(TrainConfig(data=str(binary_folder), **TINY_RUN, ordinal=True, output=str(tmp_path / "runs")))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_run_follows_its_recipe_and_changes_neither_it_nor_the_config(image_folder, tmp_path):
    config = TrainConfig(data=str(image_folder), **TINY_RUN, head_epochs=2, tune_epochs=1,
                         output=str(tmp_path / "runs"), name="r")
    before = config.to_dict()
    run_dir, result, _ = train(config, verbose=0)
    assert config.to_dict() == before
    saved = Recipe.load(run_dir / "recipe.json")
    assert saved == result.recipe and saved.to_dict() == result.recipe.to_dict()
    assert json.loads((run_dir / "spec.json").read_text()) == result.spec.to_dict()
    assert result.config.tune_lr == saved.config.tune_lr
    run = load_run(run_dir)
    assert run.recipe == saved and run.spec == saved.spec and run.decision.kept_phase == result.kept_phase
    assert run.splits() == {k: v for k, v in result.folder.splits.items() if v}
    paths = [p for p, _ in run.held_out()]
    np.testing.assert_allclose(run.predict(paths), result.model.predict(run.spec.prepare(paths), verbose=0), atol=1e-6)


def test_a_run_whose_array_images_are_gone_says_so(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (24, 20, 20, 3), dtype=np.uint8)
    result = fine_tune((x, np.arange(24) % 2), **{**TINY_RUN, "image_size": None}, head_epochs=1, tune_epochs=0,
                       verbose=0)
    from finetune.run_folder import read_splits, write_splits

    write_splits(tmp_path / "splits.csv", result.folder.splits, result.class_names)
    gone = result.folder.splits["train"][0][0]
    Image.open(gone).close()
    import os

    os.remove(gone)
    with pytest.raises(Exception, match="images are gone"):
        read_splits(tmp_path / "splits.csv", result.class_names)


def test_a_model_trained_on_48px_arrays_predicts_on_them_in_one_call():
    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    x = (rng.integers(0, 60, (60, 48, 48, 3)) + 150 * y[:, None, None, None]).astype(np.uint8)
    result = fine_tune((x, y), **{**TINY_RUN, "image_size": None, "backbone": "tiny_cnn"}, head_epochs=3,
                       tune_epochs=0, verbose=0)
    probs = result.predict(x[:2])
    assert probs.shape == (2, 1) or probs.shape == (2, 2)
    expected = result.model.predict(result.spec.prepare(x[:2]), verbose=0)
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    assert result.predict(x[0]).shape[0] == 1  # one image
    assert result.predict(x[:2, :, :, 0]).shape[0] == 2  # grayscale, any size
    assert result.predict(x[:2, :30, :40]).shape[0] == 2


def test_lr_find_then_train_reuses_no_squashed_features(tmp_path, monkeypatch):
    """Non-square images: lr-find and train share cached features only when their inputs are identical."""
    from finetune.models import build_model

    data = make_image_folder(tmp_path / "wide", classes=2, per_class=8, size=40)
    for path in data.rglob("*.png"):  # 40x20: crop, pad and squash give different pixels
        Image.open(path).crop((0, 10, 40, 30)).save(path)
    weights = tmp_path / "tiny.weights.h5"
    build_model("tiny_cnn", 2, weights=None, image_size=32).base.save_weights(weights)
    common = dict(backbone="tiny_cnn", weights=str(weights), image_size=32, batch_size=8, augment="none",
                  head_epochs=1, tune_epochs=0, val_split=0.2, test_split=0.0)

    def features_after(steps, cache):
        monkeypatch.setenv("FINETUNE_CACHE_DIR", str(cache))
        for step in steps:
            step()
        return {p.name: np.load(p) for p in (cache / "features").glob("*.npy")}

    def lr_find():
        result = CliRunner().invoke(main, ["lr-find", str(data), "--backbone", "tiny_cnn", "--weights", str(weights),
                                           "--image-size", "32", "--steps", "5", "--plot", str(tmp_path / "lr.png")])
        assert result.exit_code == 0, result.output

    def fit():
        fine_tune(str(data), TrainConfig(**common), verbose=0)

    alone = features_after([fit], tmp_path / "alone")
    after = features_after([lr_find, fit], tmp_path / "after")
    assert alone and set(alone) == set(after)  # lr-find wrote the very features train reads: nothing else
    for name in alone:  # two computations of the same features: equal up to float rounding (squashed ones are not)
        np.testing.assert_allclose(alone[name], after[name], rtol=1e-5, atol=1e-7)


PROBE = (
    "import sys\n"
    "from click.testing import CliRunner\n"
    "from finetune.cli import main\n"
    "r = CliRunner().invoke(main, {args!r})\n"
    "print('EXIT', r.exit_code)\n"
    "print(r.output)\n"
    "print('TF', 'tensorflow' in sys.modules)\n"
)


@pytest.mark.parametrize("args, named", [
    (["--schedule", "piecewise"], "schedule_boundaries"),
    (["--backbone", "nope"], "backbone"),
    (["--unfreeze-blocks", "2", "--unfreeze-fraction", "0.5"], "unfreeze_blocks"),
    (["--schedule", "cosine", "--schedule-boundaries", "3"], "schedule_boundaries"),
    (["--schedule", "piecewise", "--schedule-boundaries", "3,6", "--schedule-values", "1,0.1"], "schedule_values"),
])
def test_static_config_errors_fail_before_tensorflow_starts(image_folder, args, named):
    code = PROBE.format(args=["train", str(image_folder), *args])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "EXIT 2" in out.stdout, out.stdout + out.stderr[-2000:]
    assert named in out.stdout and "TF False" in out.stdout


def test_piecewise_with_its_parameters_trains(image_folder, tmp_path):
    config = TrainConfig(**{**TINY_RUN, "schedule": "piecewise"}, head_epochs=2, tune_epochs=0,
                         schedule_boundaries=[1.0], schedule_values=[1.0, 0.1])
    result = fine_tune(str(image_folder), config, verbose=0)
    assert len(result.history) == 2


def test_dry_run_prints_the_recipe_and_builds_nothing(image_folder, tmp_path):
    result = CliRunner().invoke(main, ["train", str(image_folder), "--backbone", "tiny_cnn", "--weights", "none",
                                       "--dry-run", "--output", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    for line in ("input          32x32 RGB 0-255, resize crop", "phase 2", "chosen", "dry run: nothing built"):
        assert line in result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("texts, layers", [(300, 4), (1000, 3), (4000, 2)])
def test_text_phase_two_unfreezes_more_layers_where_texts_are_few(texts, layers):
    from finetune.models.text_backbones import get_text_backbone

    facts = Facts(get_text_backbone("minilm_l6"), num_classes=2, train_counts=(texts // 2, texts - texts // 2),
                  kind="text", token_lengths=(80, 200, 250, 400, 600), text_lengths=(50, 100) * (texts // 2))
    recipe = resolve(TrainConfig(data="d"), facts)
    assert recipe.config.unfreeze_blocks == layers
    assert any(f"the last {layers} of 6 transformer layers" in note for note in recipe.notes)
    given = resolve(TrainConfig(data="d", unfreeze_blocks=1), facts)
    assert given.config.unfreeze_blocks == 1  # a given unfreeze point is the user's


def test_text_encoders_of_unknown_or_small_size_keep_two_unfrozen_layers():
    from finetune.models.text_backbones import TextBackbone

    for backbone in (TextBackbone("some_preset"), TextBackbone("tiny", layers=2, width=16)):
        facts = Facts(backbone, num_classes=2, train_counts=(5, 5), kind="text", token_lengths=(8,) * 5,
                      text_lengths=(8,) * 10)
        assert resolve(TrainConfig(data="d"), facts).config.unfreeze_blocks == 2
