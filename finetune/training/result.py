"""What :func:`~finetune.training.fine_tune` returns, and how it explains itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from ..config import TrainConfig
from ..data import ImageFolder
from ..models import ModelParts


def predict_with_spec(model: keras.Model, spec, x: Any, *, batch_size: int = 32):
    """``model``'s probabilities on ``x`` after ``spec`` (:meth:`~finetune.data.spec.ImageSpec.prepare`) fitted it."""
    inputs = spec.prepare(x)
    if not isinstance(inputs, dict):
        return model.predict(inputs, batch_size=batch_size, verbose=0)
    from ..data.text import batch_order
    from ..evaluation.predict import inference_fn

    forward, lengths = inference_fn(model), inputs["padding_mask"].sum(axis=1)
    out = None
    for rows in batch_order(lengths, batch_size, None):  # similar lengths together, each batch cut to its longest
        probs = forward({k: v[rows, :max(1, int(lengths[rows].max()))] for k, v in inputs.items()})
        out = np.zeros((len(lengths), probs.shape[-1]), probs.dtype) if out is None else out
        out[rows] = probs
    return out if out is not None else np.zeros((0, 1), np.float32)


@dataclass
class FineTuneResult:
    """What :func:`fine_tune` returns.

    Attributes:
        model: The trained plain ``keras.Model`` (raw RGB [0, 255] in, probabilities out).
        parts: Its pieces (base, head, ...).
        folder: The scanned data (class names, splits, skipped files).
        config: The fully resolved configuration.
        history: One dict per epoch over both phases (``phase`` is ``head`` or ``tune``).
        unfreeze_epoch: The first epoch of phase 2 (1-based), or ``None``.
        unfrozen_layers: Names of the base layers trained in phase 2.
        unfreeze_policy: Where phase 2 started unfreezing, in words (e.g. "from layer block6a").
        notes: What the run chose on its own, and why (shown in the report).
        ordinal: The :class:`~finetune.training.ordinal.OrdinalRule` fitted on val under ``ordinal=True``, else ``None``.
        timings: Seconds spent scanning, caching features, and in each phase.
        kept_phase1: True when phase 2 did not beat phase 1 and its weights were restored.
        spec: The :class:`~finetune.data.spec.ImageSpec`: how raw images became the model's input.
        recipe: The resolved :class:`~finetune.training.resolve.Recipe` the run followed.
    """

    model: keras.Model
    parts: ModelParts
    folder: ImageFolder
    config: TrainConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    unfreeze_epoch: int | None = None
    unfrozen_layers: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    kept_phase1: bool = False
    unfreeze_policy: str = ""
    notes: list[str] = field(default_factory=list)
    ordinal: Any = None  # the OrdinalRule fitted on val (``--ordinal``), else None
    spec: Any = None
    recipe: Any = None

    def predict(self, x: Any, *, batch_size: int = 32):
        """Probabilities for images as training took them: arrays of any size ((N, H, W[, C]) or one image, 0-255),
        paths, or a ``tf.data.Dataset`` of images; each fitted by :attr:`spec` (``model`` itself takes
        ``spec.size``-square RGB batches in [0, 255])."""
        return predict_with_spec(self.model, self.spec, x, batch_size=batch_size)

    @property
    def class_names(self) -> list[str]:
        return self.folder.class_names

    @property
    def kept_phase(self) -> str:
        """The phase whose weights the model holds: ``"head"`` or ``"tune"``."""
        tuned = any(r["phase"] == "tune" for r in self.history)
        return "tune" if tuned and not self.kept_phase1 else "head"

    def phase_table(self) -> str:
        """Phase, epochs, best val loss and accuracy, seconds: a short fixed-width table.

        Example:
            >>> rows = [{"phase": "head", "val_loss": 0.6, "val_accuracy": 0.7}, {"phase": "tune", "val_loss": 0.5,
            ...          "val_accuracy": 0.8}]
            >>> print(FineTuneResult(None, None, None, None, rows, timings={"head": 3.0, "tune": 40.0}).phase_table())
            phase  epochs  best val_loss  best val_accuracy  seconds
            head        1         0.6000             0.7000        3
            tune        1         0.5000             0.8000       40
        """
        monitor = "val_loss" if any("val_loss" in r for r in self.history) else "loss"
        accuracy = monitor.replace("loss", "accuracy")
        lines = [f"phase  epochs  best {monitor:<8}  best {accuracy:<12}  seconds"]
        for phase in dict.fromkeys(r["phase"] for r in self.history):
            rows = [r for r in self.history if r["phase"] == phase]
            best_loss = min(r.get(monitor, float("nan")) for r in rows)
            best_acc = max(r.get(accuracy, float("nan")) for r in rows)
            lines.append(f"{phase:<5}  {len(rows):6d}  {best_loss:13.4f}  {best_acc:17.4f}  "
                         f"{self.timings.get(phase, 0.0):7.0f}")
        return "\n".join(lines)

    def kept_reason(self) -> str:
        """One sentence: which phase's weights the model holds, and why.

        Example:
            >>> rows = [{"phase": "head", "epoch": 1, "val_loss": 0.6}, {"phase": "tune", "epoch": 2, "val_loss": 0.7}]
            >>> FineTuneResult(None, None, None, None, rows, kept_phase1=True, timings={"tune": 40.0}).kept_reason()
            "phase 1 (head) weights kept: phase 2's best val_loss 0.7 (epoch 2) did not beat phase 1's 0.6 (epoch 1); phase 2's 40 s were discarded"
        """
        monitor = "val_loss" if any("val_loss" in r for r in self.history) else "loss"

        def best(phase: str) -> tuple[float, int]:
            rows = [r for r in self.history if r["phase"] == phase and monitor in r]
            row = min(rows, key=lambda r: r[monitor]) if rows else {monitor: float("nan"), "epoch": 0}
            return row[monitor], row["epoch"]

        (head, head_epoch), (tune, tune_epoch) = best("head"), best("tune")
        if not any(r["phase"] == "tune" for r in self.history):
            return f"phase 1 (head) weights kept: no phase 2 ran; best {monitor} {head:.4g} (epoch {head_epoch})"
        if self.kept_phase1:
            return (f"phase 1 (head) weights kept: phase 2's best {monitor} {tune:.4g} (epoch {tune_epoch}) did not beat "
                    f"phase 1's {head:.4g} (epoch {head_epoch}); phase 2's {self.timings.get('tune', 0):.0f} s were discarded")
        versus = f" beat phase 1's {head:.4g} (epoch {head_epoch})" if head_epoch else ""
        return f"phase 2 (tune) weights kept: its best {monitor} {tune:.4g} (epoch {tune_epoch}){versus}"
