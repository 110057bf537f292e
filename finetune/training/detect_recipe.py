"""The detection recipe: new heads on a COCO YOLO, trained on cached backbone maps, then the top unfrozen live.

1. The network is rebuilt for the user's classes and anchors; every COCO layer but the two heads is copied.
2. **Phase 1**: the backbone (everything before the cut: :func:`~finetune.models.yolo_tune.cut_point`) runs
   once per image and view: view 0 plain, the others augmented (boxes moved with the pixels, see
   :mod:`finetune.data.box_augment`); the neck and heads train on those cached maps, the views in a seeded
   shuffle each epoch.
3. **Phase 2**: the backbone's last block joins, at a lower rate, on images augmented afresh every epoch.
4. After each epoch the val mAP@0.5 (pycocotools) decides: the best epoch of each phase is restored when its
   phase ends, a phase stops after ``patience`` epochs without a better one, and phase 2 is kept only if it beats
   phase 1. ``time_budget`` stops a phase before an epoch that would not finish in time.

Example (a tiny cfg, random weights, a few synthetic boxes; see ``tests/test_detection.py``)::

    result = train_detector(recipe, sections, source_model, train_split, val_split)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from ..data.box_augment import augment_boxes
from ..data.boxes import BoxSplit
from ..evaluation.coco_map import coco_map
from ..models.yolo import build_darknet, decode, non_max_suppression
from ..models.yolo_tune import init_heads, retarget, split_network, transfer_weights, tune_start
from .detect_resolve import DetectionRecipe
from .yolo_loss import encode_targets, yolo_loss

#: detections kept per image for mAP, and the score they must pass (COCO's evaluation keeps 100)
EVAL_SCORE, EVAL_KEEP = 0.01, 100


@dataclass
class DetectionResult:
    """What training leaves: the model (raw grids out), its heads, the per-epoch rows, the phase kept and why."""

    model: keras.Model
    heads: list
    history: list[dict] = field(default_factory=list)
    kept: str = "head"
    reason: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    cut: list[str] = field(default_factory=list)
    head_weights: list | None = None  # phase 1's best weights (what the model holds when phase 1 is kept)


def build_for(recipe: DetectionRecipe, sections, source: keras.Model | None):
    """``(model, heads, sections)`` for the recipe's classes and anchors, COCO layers copied from ``source``."""
    tuned = retarget(sections, len(recipe.class_names), np.asarray(recipe.anchors), recipe.input_size)
    keras.utils.set_random_seed(recipe.seed)
    model, heads = build_darknet(tuned)
    fresh = transfer_weights(source, model) if source is not None else [
        f"conv_{i - 1}" for i, section in enumerate(tuned[1:]) if section["type"] == "yolo"]
    init_heads(model, heads, [n for n in fresh if n.startswith("conv_")])
    return model, heads, tuned


def detect_all(predict: Callable[[slice], list], count: int, heads, input_size: int, batch_size: int = 8,
               score: float = EVAL_SCORE, keep: int = EVAL_KEEP) -> list[list[tuple]]:
    """Per example, ``[(corners in input pixels, score, class)]``: ``predict(slice)`` gives the raw grids of the
    examples in that slice (a model on images, or the top on cached maps), ``count`` examples in batches."""
    found = []
    for at in range(0, count, batch_size):
        boxes, scores = decode(predict(slice(at, at + batch_size)), heads, input_size)
        for b, s in zip(boxes, scores):
            kept = non_max_suppression(b, s, score=score, top_k=4 * keep)[:keep]
            found.append([(_corners(box) * input_size, sc, c) for box, sc, c in kept])
    return found


def detect_images(model: keras.Model, images: np.ndarray, heads, input_size: int, batch_size: int = 8):
    """:func:`detect_all` of ``model`` on ``images`` ``(N, S, S, 3)`` at the input size."""
    return detect_all(lambda s: model(images[s].astype(np.float32), training=False), len(images), heads, input_size,
                      batch_size)


def _corners(box) -> np.ndarray:
    cx, cy, w, h = box
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float32)


def split_map(split: BoxSplit, found, class_count_names) -> dict:
    """COCO mAP of ``found`` (input pixels) on ``split``, in each image's own pixels."""
    side = split.images.shape[1]
    truth, scaled = [], []
    for i, detections in enumerate(found):
        w, h = split.sizes[i]
        ratio = np.array([w / side, h / side, w / side, h / side], np.float32)
        truth.append((split.original_boxes(i), split.labels[i]))
        scaled.append([(box * ratio, s, c) for box, s, c in detections])
    return coco_map(truth, scaled, list(class_count_names), split.sizes)


class DetectionCheckpoint:
    """What a detection run needs to go on after kill -9, written after every epoch as one file (``state.npz``,
    renamed into place): the phase, the epoch, the best score so far, the model's, the best and phase 1's weights,
    and the optimizer's variables (so the schedule and Adam's moments continue where they were)."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / "state.npz"

    def save(self, state: dict, arrays: dict[str, list[np.ndarray] | None]) -> None:
        from ..util import atomic_write

        payload = {"state": np.array(json.dumps(state))}
        for key, values in arrays.items():
            for i, value in enumerate(values or []):
                payload[f"{key}/{i}"] = np.asarray(value)
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def write(target):
            with open(target, "wb") as file:
                np.savez(file, **payload)

        atomic_write(self.path, write)

    def load(self) -> tuple[dict, dict[str, list[np.ndarray]]] | None:
        if not self.path.is_file():
            return None
        with np.load(self.path) as data:
            state = json.loads(str(data["state"]))
            arrays: dict[str, list] = {}
            for key in sorted((k for k in data.files if "/" in k), key=lambda k: (k.split("/")[0], int(k.split("/")[1]))):
                arrays.setdefault(key.split("/")[0], []).append(data[key])
        return state, arrays

    def clear(self) -> None:
        import shutil

        shutil.rmtree(self.path.parent, ignore_errors=True)


class DetectorTraining:
    """One run of the recipe; :meth:`run` returns a :class:`DetectionResult`."""

    def __init__(self, recipe: DetectionRecipe, sections, source: keras.Model | None, train: BoxSplit,
                 val: BoxSplit, *, log: Callable[[str], None] = print, start: float | None = None,
                 checkpoint: DetectionCheckpoint | None = None, on_epoch: Callable[[dict], None] | None = None):
        self.recipe, self.train, self.val, self.log = recipe, train, val, log
        self.checkpoint, self.on_epoch = checkpoint, on_epoch
        self.resumed = checkpoint.load() if checkpoint is not None else None
        self.start = time.perf_counter() if start is None else start
        self.model, self.heads, self.sections = build_for(recipe, sections, source)
        self.bottom, self.top, self.cut = split_network(self.model, self.sections)
        self.grid_sizes = [int(o.shape[1]) for o in self.model.outputs]
        self.history: list[dict] = []

    # -- the pieces --------------------------------------------------------------------------------------------

    def _targets(self, boxes: list[np.ndarray], labels: list[np.ndarray]):
        side = self.recipe.input_size
        grids = [[] for _ in self.heads]
        truth = []
        for b, c in zip(boxes, labels):
            centre = np.concatenate([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], 1) / side if len(b) else b
            g, t = encode_targets(centre, c, self.heads, self.grid_sizes, side, self.recipe.max_boxes)
            for k, grid in enumerate(g):
                grids[k].append(grid)
            truth.append(t)
        return [np.stack(g) for g in grids], np.stack(truth)

    def _step(self, model: keras.Model, optimizer: keras.optimizers.Optimizer):
        heads, size = self.heads, self.recipe.input_size
        variables = model.trainable_variables

        @tf.function(reduce_retracing=True)
        def step(x, grids, truth):
            with tf.GradientTape() as tape:
                outputs = model(x, training=True)
                parts = yolo_loss(outputs, grids, truth, heads, size)
            optimizer.apply(tape.gradient(parts["loss"], variables), variables)
            return parts

        return step

    def _optimizer(self, lr: float, epochs: int, steps: int) -> keras.optimizers.Optimizer:
        total = max(epochs * steps, 1)
        schedule = keras.optimizers.schedules.CosineDecay(lr / 10, total, alpha=0.01, warmup_target=lr,
                                                          warmup_steps=min(steps, total // 2))
        return keras.optimizers.Adam(schedule, clipnorm=10.0)

    def _view(self, v: int) -> tuple[np.ndarray, list, list]:
        if v == 0:
            return self.train.images, self.train.boxes, self.train.labels
        return augment_boxes(self.train.images, self.train.boxes, self.train.labels, seed=self.recipe.seed * 1000 + v)

    def _bottom_maps(self, images: np.ndarray) -> list[np.ndarray]:
        maps = self.bottom.predict(images.astype(np.float32), batch_size=self.recipe.batch_size, verbose=0)
        return [m.astype(np.float16) for m in (maps if isinstance(maps, list) else [maps])]

    def _val_score(self, predict: Callable[[slice], list]) -> dict:
        if not len(self.val) or not sum(len(b) for b in self.val.boxes):
            return {"map50": None, "map": None}
        found = detect_all(predict, len(self.val), self.heads, self.recipe.input_size, self.recipe.batch_size)
        return split_map(self.val, found, self.recipe.class_names)

    def _budget_left(self, epoch_seconds: float) -> bool:
        budget = self.recipe.time_budget
        return budget is None or time.perf_counter() - self.start + epoch_seconds <= budget

    # -- the phases -------------------------------------------------------------------------------------------

    def _phase(self, name: str, model, batches: Callable[[int], list], lr: float, epochs: int, patience: int,
               steps: int, score: Callable[[], dict], keep: dict | None = None,
               extra: dict | None = None) -> float | None:
        """Train ``model`` up to ``epochs`` epochs; returns the best val mAP@0.5 (its weights restored).
        ``keep`` / ``extra``: arrays / state the checkpoint carries along (phase 1's weights and score in phase 2)."""
        optimizer = self._optimizer(lr, epochs, steps)
        step = self._step(model, optimizer)
        best, best_weights, waited, seconds, first = None, None, 0, 0.0, 0
        if self.resumed is not None and self.resumed[0]["phase"] == name:
            state, arrays = self.resumed
            self.model.set_weights(arrays["model"])
            if state["epoch"]:
                first, best, waited, seconds = state["epoch"], state["best"], state["waited"], state["seconds"]
                best_weights = arrays.get("best")
                optimizer.build(model.trainable_variables)
                for variable, value in zip(optimizer.variables, arrays["optimizer"]):
                    variable.assign(value)
                self.log(f"{name}: resuming after epoch {first}")
            self.resumed = None
        for epoch in range(first, epochs):
            if waited >= patience:
                break
            if not self._budget_left(seconds):
                self.log(f"{name}: time budget reached before epoch {epoch + 1}")
                break
            began = time.perf_counter()
            sums: dict[str, float] = {}
            seen = 0
            for x, grids, truth in batches(epoch):
                parts = step(x, grids, truth)
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * len(truth)
                seen += len(truth)
            n = max(seen, 1)
            val = score()
            seconds = time.perf_counter() - began
            row = {"phase": name, "epoch": epoch + 1, **{k: round(v / n, 4) for k, v in sums.items()},
                   "val_map50": val["map50"], "val_map": val["map"], "seconds": round(seconds, 1)}
            self.history.append(row)
            self.log(f"{name} epoch {epoch + 1}/{epochs}: loss {row.get('loss', 0):.3f}, val mAP@0.5 "
                     f"{_fmt(val['map50'])}, mAP {_fmt(val['map'])} ({seconds:.0f} s)")
            current = val["map50"]
            if current is None:
                best_weights = None
            elif best is None or current > best:
                best, best_weights, waited = current, self.model.get_weights(), 0
            else:
                waited += 1
            if self.checkpoint is not None:
                self.checkpoint.save({"phase": name, "epoch": epoch + 1, "best": best, "waited": waited,
                                      "seconds": seconds, "history": self.history, **(extra or {})},
                                     {"model": self.model.get_weights(), "best": best_weights,
                                      "optimizer": [np.asarray(v) for v in optimizer.variables], **(keep or {})})
            if self.on_epoch is not None:
                self.on_epoch(row)
        if best_weights is not None:
            self.model.set_weights(best_weights)
        return best

    def _cached_batches(self, maps: list[np.ndarray], grids: list[np.ndarray], truth: np.ndarray):
        count = len(truth)

        def batches(epoch: int):
            order = np.random.default_rng(self.recipe.seed + epoch).permutation(count)
            for at in range(0, count, self.recipe.batch_size):
                pick = order[at:at + self.recipe.batch_size]
                yield [m[pick].astype(np.float32) for m in maps], [g[pick] for g in grids], truth[pick]

        return batches

    def _live_batches(self, epoch: int):
        rng = np.random.default_rng(self.recipe.seed + 10_000 + epoch)
        order = rng.permutation(len(self.train))
        for at in range(0, len(order), self.recipe.batch_size):
            pick = order[at:at + self.recipe.batch_size]
            images, boxes, labels = augment_boxes(self.train.images[pick], [self.train.boxes[i] for i in pick],
                                                  [self.train.labels[i] for i in pick],
                                                  seed=int(rng.integers(2**31 - 1)))
            grids, truth = self._targets(boxes, labels)
            yield images.astype(np.float32), grids, truth

    def run(self) -> DetectionResult:
        recipe, timings = self.recipe, {}
        if self.resumed is not None:
            self.history = list(self.resumed[0]["history"])
        in_tune = self.resumed is not None and self.resumed[0]["phase"] == "tune"
        if in_tune:  # phase 1 finished before the kill: its weights and score come from the checkpoint
            head_weights, head_best = self.resumed[1]["head"], self.resumed[0]["head_best"]
        else:
            head_best, head_weights = self._head_phase(timings)

        began = time.perf_counter()
        first = tune_start(self.sections)
        for layer in self.model.layers:
            index = layer.name.rsplit("_", 1)[-1]
            layer.trainable = not index.isdigit() or int(index) >= first
        steps = -(-len(self.train) // recipe.batch_size)
        tune_best = None
        if recipe.tune_epochs and self._budget_left(0.0):
            if self.checkpoint is not None and not in_tune:  # phase 1 is done: a kill from here on skips it
                self.checkpoint.save({"phase": "tune", "epoch": 0, "history": self.history, "head_best": head_best},
                                     {"model": head_weights, "head": head_weights})
            tune_best = self._phase("tune", self.model, self._live_batches, recipe.tune_lr, recipe.tune_epochs,
                                    recipe.tune_patience, steps,
                                    lambda: self._val_score(lambda s: self.model(self.val.images[s].astype(np.float32),
                                                                                 training=False)),
                                    keep={"head": head_weights}, extra={"head_best": head_best})
        timings["tune"] = time.perf_counter() - began
        for layer in self.model.layers:
            layer.trainable = True
        kept, reason = "tune", ""
        ran_tune = any(r["phase"] == "tune" for r in self.history)
        if not ran_tune:
            kept, reason = "head", "phase 2 did not run (time budget or tune_epochs 0)"
        elif head_best is not None and (tune_best is None or tune_best <= head_best):
            kept, reason = "head", f"phase 2's best val mAP@0.5 {_fmt(tune_best)} did not beat phase 1's {_fmt(head_best)}"
        elif head_best is not None:
            reason = f"phase 2 raised val mAP@0.5 from {_fmt(head_best)} to {_fmt(tune_best)}"
        else:
            reason = "no validation boxes: the last weights are kept"
        if kept == "head":
            self.model.set_weights(head_weights)
        return DetectionResult(self.model, self.heads, self.history, kept, reason, timings, self.cut, head_weights)

    def _head_phase(self, timings: dict) -> tuple[float | None, list]:
        recipe = self.recipe
        began = time.perf_counter()
        maps: list[list[np.ndarray]] = []
        grids, truth = [], []
        for v in range(recipe.views):
            images, boxes, labels = self._view(v)
            maps.append(self._bottom_maps(images))
            g, t = self._targets(boxes, labels)
            grids.append(g)
            truth.append(t)
            self.log(f"cached view {v + 1}/{recipe.views} of {len(images)} images ({'plain' if v == 0 else 'augmented'}"
                     f", {sum(len(b) for b in boxes)} boxes)")
        maps = [np.concatenate([m[k] for m in maps]) for k in range(len(self.cut))]
        grids = [np.concatenate([g[k] for g in grids]) for k in range(len(self.heads))]
        truth = np.concatenate(truth)
        val_maps = self._bottom_maps(self.val.images) if len(self.val) else []
        timings["cache"] = time.perf_counter() - began

        began = time.perf_counter()
        for layer in self.model.layers:
            layer.trainable = True
        steps = -(-len(truth) // recipe.batch_size)
        head_best = self._phase("head", self.top, self._cached_batches(maps, grids, truth), recipe.head_lr,
                                recipe.head_epochs, recipe.patience, steps,
                                lambda: self._val_score(lambda s: self.top([m[s].astype(np.float32) for m in val_maps],
                                                                           training=False)))
        timings["head"] = time.perf_counter() - began
        return head_best, self.model.get_weights()


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def train_detector(recipe: DetectionRecipe, sections, source: keras.Model | None, train: BoxSplit, val: BoxSplit,
                   **kwargs) -> DetectionResult:
    """Run the recipe (see the module docstring)."""
    return DetectorTraining(recipe, sections, source, train, val, **kwargs).run()
