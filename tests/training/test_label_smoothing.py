"""Label smoothing (``--label-smoothing``): the loss Keras would give on one-hot targets, in every phase."""

import numpy as np
import pytest

from finetune.config import ConfigError, TrainConfig
from finetune.models import loss_for


def test_sparse_smoothed_loss_equals_keras_on_one_hot_targets():
    import keras

    y = np.array([0, 2, 1, 2])
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3], [0.5, 0.25, 0.25]], np.float32)
    got = float(loss_for(3, label_smoothing=0.1)(y, p))
    want = float(keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(np.eye(3)[y], p))
    assert got == pytest.approx(want, rel=1e-6)
    assert got > float(keras.losses.SparseCategoricalCrossentropy()(y, p))  # smoothing raises the loss here
    clone = type(loss_for(3, label_smoothing=0.1)).from_config(loss_for(3, label_smoothing=0.1).get_config())
    assert clone.label_smoothing == 0.1
    assert loss_for(2, label_smoothing=0.1).get_config()["label_smoothing"] == 0.1  # Keras's own, for sigmoids


def test_training_loss_stays_above_the_smoothed_targets_entropy(tmp_path):
    """With s = 0.3 over 3 classes no prediction can get the loss under the targets' entropy (0.70 nats),
    while the same run without smoothing goes well below it."""
    from conftest import TINY_RUN, make_image_folder

    from finetune.training import fine_tune

    data = make_image_folder(tmp_path / "data", classes=3, per_class=10)
    run = {**TINY_RUN, "head_epochs": 15, "tune_epochs": 2, "val_split": 0.2, "test_split": 0.0, "patience": 0,
           "verbose": 0}
    plain = fine_tune(str(data), **run)
    smooth = fine_tune(str(data), **run, label_smoothing=0.3)
    target = np.array([1 - 0.3 + 0.1, 0.1, 0.1])
    floor = float(-(target * np.log(target)).sum())
    assert min(r["loss"] for r in smooth.history) >= floor - 1e-3
    assert min(r["loss"] for r in plain.history) < floor - 0.2
    assert {r["phase"] for r in smooth.history} == {"head", "tune"}
    assert TrainConfig.from_dict(smooth.config.to_dict()).label_smoothing == 0.3
    with pytest.raises(ConfigError, match="label_smoothing"):
        TrainConfig(label_smoothing=0.7).validate()
