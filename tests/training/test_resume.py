"""kill -9 during either phase, then resume: the final weights equal an uninterrupted run's."""

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

DRIVER = Path(__file__).with_name("resume_driver.py")


def drive(config: dict, *, kill_at=None, resume=None):
    args = {"config": config, "kill_at": kill_at, "resume": str(resume) if resume else None}
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


def test_resume_refuses_a_finished_run(image_folder, tmp_path):
    from finetune import RunError, TrainConfig, train

    config = TrainConfig(**TINY_RUN, data=str(image_folder), head_epochs=1, tune_epochs=0, output=str(tmp_path))
    run_dir, *_ = train(config, verbose=0)
    with pytest.raises(RunError, match="already finished"):
        train(config, verbose=0, resume=run_dir)
