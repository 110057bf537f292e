"""The package surface: ``finetune.__all__``, the names the README cites, its Python quickstart, import side effects."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import finetune

README = Path(__file__).resolve().parents[1] / "README.md"

PUBLIC_API = sorted([
    "Backbone", "ConfigError", "DataError", "ExportError", "FineTuneResult", "FinetuneError", "HeadConfig",
    "ImageFolder", "ImageSpec", "ModelParts", "Phase", "Recipe", "Run", "RunError", "TrainConfig", "Trainer", "TrainingDiverged", "UnfreezePolicy",
    "UnknownBackboneError", "augmentation", "build_classifier",
    "build_model", "classification_metrics", "discriminative_optimizer", "evaluate_split", "fine_tune", "fit_phase",
    "freeze", "get_backbone", "list_backbones", "load_image", "load_run", "lr_find", "make_dataset",
    "make_optimizer", "make_schedule", "mc_predict", "register", "resolve", "reuse", "scan_folder", "train",
    "TextSpec", "load_yolo", "Detection", "draw_detections", "train_detection", "load_detector", "evaluate_detection_run",
])


def test_public_api_is_pinned():
    assert finetune.__all__ == PUBLIC_API  # sorted, and exactly these names


def test_every_public_name_resolves_and_is_listed_by_dir():
    for name in finetune.__all__:
        assert getattr(finetune, name) is not None, name
    assert set(finetune.__all__) <= set(dir(finetune))
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        finetune.no_such_name  # noqa: B018


def readme_paths() -> list[str]:
    return sorted({m.rstrip(".") for m in re.findall(r"finetune\.[A-Za-z_][A-Za-z0-9_.]*", README.read_text())})


def resolve(dotted: str):
    """Import the longest module prefix of ``dotted``, then follow attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_readme_cites_the_paths_this_test_knows():
    # A new citation in the README is checked by the tests below; this list only makes the change visible.
    assert {"finetune.fine_tune", "finetune.data.load_images", "finetune.make_schedule",
            "finetune.training.distribute.scale_learning_rate", "finetune.mc_predict"} <= set(readme_paths())


@pytest.mark.parametrize("dotted", ["finetune.optim.make_schedule", "finetune.optim.make_optimizer",
                                    "finetune.distribute.scale_learning_rate", "finetune.uncertainty.mc_predict"])
def test_paths_the_01_readme_cited_still_resolve(dotted):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert resolve(dotted) is not None


@pytest.mark.parametrize("dotted", readme_paths())
def test_every_path_the_readme_cites_resolves(dotted):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # old 0.1 paths are cited too
        assert resolve(dotted) is not None


def deprecated(dotted: str) -> str | None:
    return next((old for old in finetune.MOVED_MODULES if dotted == old or dotted.startswith(old + ".")), None)


def test_readme_cites_old_module_paths_only_where_it_explains_them():
    text = README.read_text()
    explained = text.index("Module paths of 0.1")
    end = text.find("\n\n", explained)
    text = text[:explained] + (text[end:] if end >= 0 else "")
    old = sorted({m for m in re.findall(r"finetune\.[A-Za-z_][A-Za-z0-9_.]*", text)
                  if deprecated(m) and not callable(getattr(finetune, m.split(".")[1], None))})
    assert old == []


def quickstart_block() -> str:
    text = README.read_text()
    start = text.index("## Python quickstart")
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")  # see test_recipe.py
def test_readme_python_quickstart_runs_with_a_tiny_backbone(tmp_path, monkeypatch):
    """The README block as written, with only the backbone, sizes and epochs made tiny."""
    from conftest import make_image_folder
    from PIL import Image

    code = quickstart_block()
    real_call = 'backbone="efficientnet_lite0", head_epochs=10, tune_epochs=5'
    assert real_call in code and '["rose.jpg"], result.spec)' in code, code
    code = code.replace(real_call, 'backbone="tiny_cnn", weights="none", image_size=32, batch_size=8, '
                                   'augment="none", head_epochs=2, tune_epochs=1, verbose=0')
    code = code.replace("model.predict(", "model.predict(verbose=0, x=")

    monkeypatch.chdir(tmp_path)
    make_image_folder(tmp_path / "flowers")
    Image.open(next((tmp_path / "flowers" / "class_a").iterdir())).save(tmp_path / "rose.jpg")
    namespace: dict = {}
    exec(compile(code, str(README) + ":python-quickstart", "exec"), namespace)

    assert isinstance(namespace["result"], finetune.FineTuneResult)
    assert (tmp_path / "flowers.keras").exists()
    assert namespace["probs"].shape == (1, 3)
    assert namespace["probs"].sum() == pytest.approx(1.0, abs=1e-5)


# In a fresh interpreter: importing finetune, touching its lazy API and writing a plot change no global state.
SIDE_EFFECTS = """
import json, os, sys, tempfile
import matplotlib
before = matplotlib.get_backend()
import finetune, finetune.cli
tf_after_cli = "tensorflow" in sys.modules
finetune.fine_tune
import finetune.evaluation.report as report
with tempfile.TemporaryDirectory() as folder:
    report.plot_curves([{"epoch": 1, "loss": 1.0, "accuracy": 0.5}], os.path.join(folder, "curves.png"))
print("REPORT", json.dumps({"before": before, "after": matplotlib.get_backend(), "tf_after_cli": tf_after_cli}))
"""


@pytest.fixture(scope="module")
def side_effects():
    env = {**os.environ, "MPLBACKEND": "svg", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", SIDE_EFFECTS], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("REPORT "))
    return json.loads(line[len("REPORT "):])


def test_import_finetune_leaves_the_matplotlib_backend_alone(side_effects):
    assert side_effects["before"] == "svg"
    assert side_effects["after"] == "svg"  # plots use matplotlib.figure.Figure; nothing calls matplotlib.use


def test_import_finetune_and_its_cli_does_not_start_tensorflow(side_effects):
    assert not side_effects["tf_after_cli"]


def test_atomic_writes_leave_the_usual_permissions(tmp_path):
    import os

    from finetune.util import atomic_text

    atomic_text(tmp_path / "a.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask
