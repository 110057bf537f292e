"""Resume state of a run: the model being fit, its optimizer, the history, callback states, finished phases.

Every file is written to a temporary name and renamed, so a kill at any
moment leaves the previous complete checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ..util import atomic_text, atomic_write


class RunCheckpoint:
    """Checkpoint files in ``directory``.

    ``state.json`` names the phase in progress, the finished phases and the
    history rows; ``<phase>.weights.h5`` and ``<phase>.optimizer.npz`` hold the
    model and optimizer after the last completed epoch; ``<phase>.callbacks.npz``
    the arrays of callback states (e.g. early stopping's best weights);
    ``<phase>.final.weights.h5`` the weights a finished phase handed on.
    """

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)

    @property
    def exists(self) -> bool:
        return (self.dir / "state.json").exists()

    def state(self) -> dict[str, Any]:
        if not self.exists:
            return {}
        state = json.loads((self.dir / "state.json").read_text())
        if state.get("phase1_done"):  # written by finetune 0.1
            state.setdefault("completed", ["head"])
        return state

    def save(self, model: keras.Model, phase: str, rows: list, callback_states: dict[str, dict]) -> None:
        """The state after one epoch of ``phase``."""
        atomic_write(self.dir / f"{phase}.weights.h5", model.save_weights)
        optimizer = [np.asarray(v) for v in model.optimizer.variables]
        atomic_write(self.dir / f"{phase}.optimizer.npz", lambda p: np.savez(p, *optimizer))
        plain, arrays = _split_arrays(callback_states)
        atomic_write(self.dir / f"{phase}.callbacks.npz", lambda p: _save_npz(p, arrays))
        state = self.state()
        state.update({"phase": phase, "rows": rows, "callbacks": plain})
        atomic_text(self.dir / "state.json", json.dumps(state))

    def finish_phase(self, model: keras.Model, phase: str, rows: list) -> None:
        """Record that ``phase`` is done and the weights it handed on."""
        atomic_write(self.dir / f"{phase}.final.weights.h5", model.save_weights)
        state = self.state()
        completed = [*state.get("completed", []), phase]
        state.update({"phase": None, "rows": rows, "callbacks": {}, "completed": completed})
        state.pop("phase1_done", None)
        atomic_text(self.dir / "state.json", json.dumps(state))

    def final_weights(self, phase: str) -> Path:
        path = self.dir / f"{phase}.final.weights.h5"
        legacy = self.dir / "phase1.weights.h5"
        return legacy if phase == "head" and not path.exists() and legacy.exists() else path

    def restore(self, model: keras.Model, phase: str) -> dict[str, dict]:
        """Load ``phase``'s weights and optimizer state into ``model`` (compiled); return callback states."""
        if not (self.dir / f"{phase}.weights.h5").exists():
            return {}
        model.load_weights(self.dir / f"{phase}.weights.h5")
        model.optimizer.build(model.trainable_variables)
        with np.load(self.dir / f"{phase}.optimizer.npz") as saved:
            values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        for variable, value in zip(model.optimizer.variables, values):
            variable.assign(value)
        arrays = {}
        if (self.dir / f"{phase}.callbacks.npz").exists():
            with np.load(self.dir / f"{phase}.callbacks.npz") as saved:
                arrays = {key: saved[key] for key in saved.files}
        return _join_arrays(self.state().get("callbacks", {}), arrays)


def _save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as file:  # a file object: np.savez would append .npz to a bare name
        np.savez(file, **arrays)


def _split_arrays(states: dict[str, dict]) -> tuple[dict, dict[str, np.ndarray]]:
    """JSON-able states, with every list of arrays replaced by keys into the returned arrays."""
    plain, arrays = {}, {}
    for name, state in states.items():
        plain[name] = {}
        for key, value in state.items():
            if isinstance(value, (list, tuple)) and value and all(hasattr(v, "shape") for v in value):
                keys = [f"{name}.{key}.{i}" for i in range(len(value))]
                arrays.update({k: np.asarray(v) for k, v in zip(keys, value)})
                plain[name][key] = {"arrays": keys}
            else:
                plain[name][key] = value
    return plain, arrays


def _join_arrays(plain: dict, arrays: dict[str, np.ndarray]) -> dict[str, dict]:
    joined = {}
    for name, state in plain.items():
        joined[name] = {key: [arrays[k] for k in value["arrays"]] if isinstance(value, dict) and "arrays" in value
                        else value for key, value in state.items()}
    return joined
