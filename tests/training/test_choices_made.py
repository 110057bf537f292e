"""Choices the run makes from the data: each written to the config as a plain value and named in the notes."""

from PIL import Image

from conftest import TINY_RUN
from finetune import fine_tune


def test_small_images_train_at_their_native_size(tmp_path):
    for label in ("a", "b"):
        (tmp_path / "d" / label).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (24, 24), (40 * i, 100 if label == "a" else 200, 0)).save(tmp_path / "d" / label / f"{i}.png")
    run = {**TINY_RUN, "image_size": None, "head_epochs": 1, "tune_epochs": 0, "verbose": 0}
    result = fine_tune(str(tmp_path / "d"), **run)
    assert result.config.image_size == 24 and result.parts.image_size == 24
    assert any("images are 24px" in note for note in result.notes)
    pinned = fine_tune(str(tmp_path / "d"), **{**run, "image_size": 32})
    assert pinned.config.image_size == 32 and not any("px" in note for note in pinned.notes)


def _folder(root, mode):
    for label in ("a", "b"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(10):
            value = 20 * i + (100 if label == "a" else 0)
            colour = value if mode == "L" else (value, 255 - value, 40)
            Image.new(mode, (32, 32), colour).save(root / label / f"{i}.png")
    return root


def test_phase2_rate_and_copies_follow_the_data(tmp_path):
    run = {**TINY_RUN, "head_epochs": 1, "tune_epochs": 1, "verbose": 0}
    gray = fine_tune(str(_folder(tmp_path / "gray", "L")), **run)
    colour = fine_tune(str(_folder(tmp_path / "colour", "RGB")), **run)
    assert gray.config.tune_lr == TINY_RUN["lr"] / 10 and colour.config.tune_lr == TINY_RUN["lr"] / 100
    assert any("grayscale" in n for n in gray.notes) and any("colour photos" in n for n in colour.notes)
    assert colour.config.cache_variants == 0  # no augmentation: copies would all be the same
    light = fine_tune(str(_folder(tmp_path / "colour", "RGB")), **{**run, "augment": "light"})
    assert light.config.cache_variants == 2 and any("augmented copies" in n for n in light.notes)
    pinned = fine_tune(str(_folder(tmp_path / "colour", "RGB")), **{**run, "tune_lr": 0.003, "cache_variants": 1,
                                                                       "augment": "light"})
    assert pinned.config.tune_lr == 0.003 and pinned.config.cache_variants == 1


def test_images_far_smaller_than_the_input_train_the_whole_network_at_twice_their_size(tmp_path):
    from finetune.models import get_backbone, input_size_for, is_small

    lite0 = get_backbone("efficientnet_lite0")
    assert is_small(lite0, 28) and not is_small(lite0, 150)
    assert input_size_for(lite0, 28)[0] == 64
    folder = _folder(tmp_path / "tiny", "RGB")  # 32px images; tiny_cnn's input is 32px: not small
    result = fine_tune(str(folder), **{**TINY_RUN, "head_epochs": 1, "tune_epochs": 0, "verbose": 0})
    assert result.config.unfreeze_fraction is None
    for label in ("a", "b"):
        for i in range(10):
            Image.new("RGB", (12, 12), (20 * i, 100 if label == "a" else 200, 0)).save(folder / label / f"{i}.png")
    run = {**TINY_RUN, "image_size": None, "head_epochs": 1, "tune_epochs": 1, "verbose": 0}
    small = fine_tune(str(folder), **run)
    assert small.config.unfreeze_fraction == 1.0 and small.config.tune_lr == TINY_RUN["lr"]
    assert small.config.image_size == 32 and any("whole network" in n for n in small.notes)  # 2x12 -> 32
