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
