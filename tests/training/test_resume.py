"""kill -9 during either phase, then resume: the final weights equal an uninterrupted run's."""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import TINY_RUN

DRIVER = Path(__file__).parents[1] / "resume_driver.py"


def drive(config: dict, *, kill_at=None, resume=None, plateau=None):
    args = {"config": config, "kill_at": kill_at, "resume": str(resume) if resume else None, "plateau": plateau}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, str(DRIVER), json.dumps(args)], capture_output=True, text=True, env=env, timeout=300)


def weights(run_dir: Path) -> list[np.ndarray]:
    return keras.models.load_model(run_dir / "model.keras").get_weights()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    from conftest import make_image_folder

    root = tmp_path_factory.mktemp("resume")
    config = dict(TINY_RUN, data=str(make_image_folder(root / "data")), head_epochs=3, tune_epochs=3, patience=2,
                  output=str(root / "runs"), dropout=0.3, augment="light")
    done = drive({**config, "name": "straight"})
    assert done.returncode == 0, done.stderr[-2000:]
    return config, weights(root / "runs" / "straight")


@pytest.mark.parametrize("kill_at", [2, 5], ids=["phase1", "phase2"])
def test_resume_after_kill_matches_uninterrupted_run(uninterrupted, kill_at):
    config, straight = uninterrupted

    killed = drive({**config, "name": f"killed-{kill_at}"}, kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL
    run_dir = Path(config["output"]) / f"killed-{kill_at}"
    assert not (run_dir / "model.keras").exists() and (run_dir / "checkpoint" / "state.json").exists()
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert len(state["rows"]) == kill_at

    resumed = drive({**config, "name": f"killed-{kill_at}"}, resume=run_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not (run_dir / "checkpoint").exists()
    again = weights(run_dir)
    assert len(straight) == len(again)
    for a, b in zip(straight, again):
        np.testing.assert_allclose(a, b, atol=1e-5)
    rows = (run_dir / "history.csv").read_text().splitlines()
    assert len(rows) == 1 + 6


# Every epoch after a phase's first is a plateau (no val_loss drop of 10), so with patience 2 the rate halves
# at the end of epochs 3 and 5 (head, 6 epochs) and 9 (tune, 4 epochs): the history's lr column (read at
# epoch end, before the callback) shows it from epochs 4, 6 and 10. Killed after epoch 4, the resumed run must
# restore the halved rate and the plateau counter (wait=1) to halve again at epoch 5; killed after epoch 8,
# wait=1 again, to halve at epoch 9 rather than 10.
PLATEAU = {"patience": 2, "min_delta": 10.0}
PLATEAU_LRS = [0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 1e-3, 1e-3, 1e-3, 5e-4]


def history_column(run_dir: Path, name: str) -> list[str]:
    with open(run_dir / "history.csv", newline="") as f:
        return [row[name] for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def uninterrupted_plateau(tmp_path_factory):
    from conftest import make_image_folder

    root = tmp_path_factory.mktemp("resume-plateau")
    config = dict(TINY_RUN, data=str(make_image_folder(root / "data")), head_epochs=6, tune_epochs=4, patience=0,
                  schedule="plateau", output=str(root / "runs"), dropout=0.3, augment="light")
    done = drive({**config, "name": "straight"}, plateau=PLATEAU)
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = root / "runs" / "straight"
    assert [float(lr) for lr in history_column(run_dir, "lr")] == pytest.approx(PLATEAU_LRS)
    return config, weights(run_dir), history_column(run_dir, "lr")


@pytest.mark.parametrize("kill_at", [4, 8], ids=["phase1", "phase2"])
def test_plateau_resume_matches_uninterrupted_run(uninterrupted_plateau, kill_at):
    config, straight, straight_lrs = uninterrupted_plateau
    name = f"plateau-killed-{kill_at}"

    killed = drive({**config, "name": name}, kill_at=kill_at, plateau=PLATEAU)
    assert killed.returncode == -signal.SIGKILL
    run_dir = Path(config["output"]) / name
    assert len(json.loads((run_dir / "checkpoint" / "state.json").read_text())["rows"]) == kill_at

    resumed = drive({**config, "name": name}, resume=run_dir, plateau=PLATEAU)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert history_column(run_dir, "lr") == straight_lrs
    again = weights(run_dir)
    assert len(straight) == len(again)
    for a, b in zip(straight, again):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_resume_refuses_a_finished_run(image_folder, tmp_path):
    from finetune import RunError, TrainConfig, train

    config = TrainConfig(**TINY_RUN, data=str(image_folder), head_epochs=1, tune_epochs=0, output=str(tmp_path))
    run_dir, *_ = train(config, verbose=0)
    with pytest.raises(RunError, match="already finished"):
        train(config, verbose=0, resume=run_dir)
