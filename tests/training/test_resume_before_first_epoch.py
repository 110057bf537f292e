"""`--resume` on a run killed before its first epoch was checkpointed starts it afresh."""

import pytest

from conftest import TINY_RUN
from finetune import TrainConfig, train
from finetune.runs import RUN_CONFIG_HEADER
from finetune.util import yaml_text


def test_resume_without_checkpoint_starts_afresh(image_folder, tmp_path):
    config = TrainConfig(data=str(image_folder), **TINY_RUN, head_epochs=2, tune_epochs=0,
                         output=str(tmp_path / "runs"), name="killed")
    run_dir = tmp_path / "runs" / "killed"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml_text(config.to_dict(), RUN_CONFIG_HEADER))  # what a SIGKILL leaves
    with pytest.warns(RuntimeWarning, match="before its first epoch"):
        resumed_dir, result, _ = train(TrainConfig.load(run_dir / "config.yaml"), verbose=0, resume=run_dir)
    assert resumed_dir == run_dir
    assert (run_dir / "model.keras").exists() and not (run_dir / "checkpoint").exists()
    assert [r["phase"] for r in result.history] == ["head", "head"]
