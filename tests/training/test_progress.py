"""Training output fit for a terminal and for a log."""

import io

import keras
import numpy as np

from finetune.training.callbacks import PhaseProgress


def _fit(progress, epochs=3):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x = np.random.rand(16, 2)
    model.fit(x, x[:, :1], validation_data=(x, x[:, :1]), epochs=epochs, verbose=0, callbacks=[progress])


def test_a_log_gets_one_plain_line_per_epoch():
    out = io.StringIO()
    _fit(PhaseProgress("head", 3, "val_loss", stream=out, tty=False))
    lines = out.getvalue().splitlines()
    assert [line.split()[:3] for line in lines] == [["head", "epoch", f"{i}/3"] for i in (1, 2, 3)]
    assert "\033" not in out.getvalue() and "\r" not in out.getvalue()
    assert "best val_loss" in lines[-1]


def test_a_terminal_gets_one_line_redrawn_in_place():
    out = io.StringIO()
    _fit(PhaseProgress("head", 3, "val_loss", stream=out, tty=True))
    text = out.getvalue()
    assert text.count("\n") == 1 and text.count("\r") == 3 and "epoch 3/3" in text


def test_quiet_runs_print_nothing(image_folder, capsys):
    from conftest import TINY_RUN
    from finetune import fine_tune

    fine_tune(str(image_folder), **TINY_RUN, head_epochs=2, tune_epochs=1, verbose=0)
    assert capsys.readouterr().out == ""
    fine_tune(str(image_folder), **TINY_RUN, head_epochs=2, tune_epochs=1, verbose=1)
    printed = capsys.readouterr().out  # captured output is not a terminal: plain lines
    assert "head epoch 1/2" in printed and "tune epoch 3/3" in printed and "\033" not in printed
