"""Shared fixtures: tiny generated image folders, so the suite stays fast."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

COLORS = [(220, 40, 40), (40, 200, 60), (50, 70, 220), (200, 200, 40)]


def make_image_folder(root: Path, classes: int = 3, per_class: int = 12, size: int = 40, seed: int = 0,
                      fmt: str = "png") -> Path:
    """Class folders of small noisy images whose mean colour tells the class."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class_{chr(ord('a') + c)}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = np.asarray(COLORS[c % len(COLORS)], dtype=np.float32)
            img = np.clip(base + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / f"img_{i:03d}.{fmt}")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "data")


@pytest.fixture
def binary_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "binary", classes=2)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


import tiny_backbone  # noqa: E402,F401  (registers "tiny_cnn")

TINY_RUN = dict(backbone="tiny_cnn", weights="none", image_size=32, batch_size=8, augment="none", lr=0.1,
                schedule="constant", warmup_epochs=0.0)  # 0.1 recipe settings, so the tests keep their numbers
