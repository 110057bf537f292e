"""A trained run read back as one value: :class:`Run`, from :func:`load_run`.

Every command that opens a run folder (evaluate, predict, explain, serve, export,
ensemble) goes through :func:`load_run`: the model, the input spec, the resolved
recipe, the classes, the decision (kept phase, thresholds, ordinal rule) and the
splits are read here, once, from the files training wrote. Folders written by
older versions (no ``spec.json``, ``recipe.json`` or ``splits.csv``) keep loading:
their spec comes from ``config.yaml`` and their splits from a fresh scan.

Example:
    >>> run = load_run("runs/flowers/")                      # doctest: +SKIP
    >>> run.predict(["rose.jpg"]).argmax(-1)                   # doctest: +SKIP
    >>> run.classes, run.spec.size, run.decision.kept_phase    # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .data.spec import ImageSpec
from .errors import RunError

SPLITS_FILE = "splits.csv"


@dataclass(frozen=True)
class Decision:
    """How a run turns probabilities into classes.

    Attributes:
        kept_phase: ``"head"`` or ``"tune"``: whose weights the model holds (``None``: not recorded).
        thresholds: Per-label thresholds of a multi-label run (``None`` otherwise).
        ordinal: The :class:`~finetune.training.ordinal.OrdinalRule` of an ``--ordinal`` run (``None`` otherwise).
    """

    kept_phase: str | None = None
    thresholds: list[float] | None = None
    ordinal: Any = None


@dataclass(frozen=True)
class Run:
    """A run folder, loaded: what training left behind.

    Attributes:
        path: The folder.
        model: The plain ``keras.Model`` (``spec.size``-square RGB [0, 255] in, probabilities out).
        spec: How raw images become its input (:class:`~finetune.data.spec.ImageSpec`).
        config: The run's configuration.
        classes: Class (or label) names, in the model's output order.
        decision: Kept phase, thresholds and ordinal rule.
        recipe: The resolved :class:`~finetune.training.resolve.Recipe` (``None`` for older folders).
    """

    path: Path
    model: Any
    spec: ImageSpec
    config: TrainConfig
    classes: list[str]
    decision: Decision
    recipe: Any = None

    @property
    def multi_label(self) -> bool:
        return self.decision.thresholds is not None  # load_run gives every multi-label model thresholds

    def predict(self, x: Any, *, batch_size: int = 32):
        """Probabilities for images as training took them: arrays of any size, paths or a ``tf.data.Dataset``."""
        from .training.result import predict_with_spec

        return predict_with_spec(self.model, self.spec, x, batch_size=batch_size)

    def splits(self) -> dict[str, list]:
        """``{split: [(path, label), ...]}`` as training drew them: ``splits.csv``, or a fresh scan for older runs.

        Raises:
            RunError: the images are gone (e.g. arrays written to a cache that was cleared since).
        """
        file = self.path / SPLITS_FILE
        if not file.exists():
            from .data import as_image_folder

            return as_image_folder(self.config.data, **self.config.split_args()).splits
        return read_splits(file, self.classes, multi_label=self.multi_label, kind=self.spec.kind)

    def require_images(self, command: str) -> None:
        """Raise :class:`RunError` for a text run: ``command`` (serve, explain, export, ensemble) takes image runs
        only so far."""
        if self.spec.kind != "image":
            raise RunError(f"{self.path} is a text run: `finetune {command}` handles image runs only so far; use "
                           f"`finetune predict {self.path} --text \"...\"` or `finetune evaluate {self.path}`")

    def held_out(self) -> list:
        """The test split, else the validation split: what the run is scored on."""
        splits = self.splits()
        return splits.get("test") or splits.get("val") or []


def load_run(run_dir: str | os.PathLike, *, safe_mode: bool = True) -> Run:
    """The :class:`Run` in a folder written by ``finetune train`` (or ``finetune ensemble``)."""
    import keras

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run folder {str(run_dir)!r} does not exist; pass a folder written by `finetune train`")
    if (run_dir / "detector.json").exists():
        raise RunError(f"{str(run_dir)!r} is a detection run: this command is for classification runs; a detector "
                       "takes `finetune detect --run RUN`, `evaluate`, `predict`, `export` and `serve`")
    missing = [f for f in ("model.keras", "config.yaml", "labels.txt") if not (run_dir / f).exists()]
    if missing:
        raise RunError(f"run folder {str(run_dir)!r} lacks {', '.join(missing)}; was the training interrupted?")
    config = TrainConfig.load(run_dir / "config.yaml")
    if "resize:" not in (run_dir / "config.yaml").read_text(encoding="utf-8"):
        config.resize = "squash"  # written before resize policies: its model was trained on squashed images
    spec = _spec_of(run_dir, config)
    if spec is not None and spec.kind == "text" and spec.word_level:
        from .models import glove  # noqa: F401  (registers its pooling layer for loading)
    elif spec is not None and spec.kind == "text":
        import keras_hub  # noqa: F401  (registers the encoder's layers for loading)
    model = keras.models.load_model(run_dir / "model.keras", safe_mode=safe_mode)
    if spec is None:
        spec = ImageSpec(config.image_size or int(model.inputs[0].shape[1]), config.resize)
    classes = (run_dir / "labels.txt").read_text(encoding="utf-8").splitlines()
    recipe = None
    if (run_dir / "recipe.json").exists():
        from .training.resolve import Recipe

        recipe = Recipe.load(run_dir / "recipe.json")
    thresholds = load_thresholds(run_dir)
    if thresholds is None and _is_multi_label(model):
        thresholds = [0.5] * len(classes)  # a multi-label model saved without a validation split
    decision = Decision(_json(run_dir / "metrics.json", "kept_phase"), thresholds, load_ordinal(run_dir))
    return Run(run_dir, model, spec, config, classes, decision, recipe)


def load_thresholds(run_dir: str | os.PathLike) -> list[float] | None:
    """The per-label thresholds a multi-label run chose on its validation split (``None`` for other runs)."""
    return _json(Path(run_dir) / "thresholds.json", "thresholds")


def load_ordinal(run_dir: str | os.PathLike):
    """The :class:`~finetune.training.ordinal.OrdinalRule` of an ``--ordinal`` run (``None`` for other runs).

    Raises:
        RunError: the file is there but is not a rule.
    """
    from .training.ordinal import OrdinalRule

    path = Path(run_dir) / "ordinal.json"
    if not path.exists():
        return None
    try:
        return OrdinalRule.load(path)
    except (ValueError, KeyError, TypeError) as err:
        raise RunError(f"{path}: not a readable ordinal rule ({err!r}); retrain the run or remove the file to decide "
                       "by argmax") from None


def _spec_of(run_dir: Path, config: TrainConfig):
    """The saved input spec; for folders written before ``spec.json``, one made from ``config.yaml`` (its size, when
    the config lacks one, is read from the model once loaded)."""
    if (run_dir / "spec.json").exists():
        from .training.resolve import spec_from_dict

        try:
            return spec_from_dict(json.loads((run_dir / "spec.json").read_text(encoding="utf-8")))
        except (ValueError, TypeError) as err:
            raise RunError(f"{run_dir / 'spec.json'}: not a readable input spec ({err})") from None
    return ImageSpec(config.image_size, config.resize) if config.image_size else None


def _json(path: Path, key: str):
    return json.loads(path.read_text(encoding="utf-8")).get(key) if path.exists() else None


def _is_multi_label(model) -> bool:
    from .models import is_multi_label

    return is_multi_label(model)


def write_splits(path: str | os.PathLike, splits: dict[str, list], classes: list[str], kind: str = "image") -> None:
    """``splits.csv``: one row per example (``source``: its file, or the text itself; ``label``: names
    ``;``-joined; ``split``)."""
    from .util import atomic_text
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["source", "label", "split"])
    for split, items in splits.items():
        for source, label in items:
            names = [c for c, on in zip(classes, label) if on] if isinstance(label, (tuple, list)) else [classes[label]]
            writer.writerow([os.path.abspath(source) if kind == "image" else source, ";".join(names), split])
    atomic_text(Path(path), buf.getvalue())


def read_splits(path: str | os.PathLike, classes: list[str], *, multi_label: bool = False,
                kind: str = "image") -> dict[str, list]:
    """The splits :func:`write_splits` wrote, as ``{split: [(path, label), ...]}``.

    Raises:
        RunError: a row names an unknown class, or its file is gone.
    """
    index = {c: i for i, c in enumerate(classes)}
    splits: dict[str, list] = {}
    gone = []
    with open(path, newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            names = [n for n in row["label"].split(";") if n] if multi_label else [row["label"]]
            unknown = [n for n in names if n not in index]
            if unknown:
                raise RunError(f"{path}: label {unknown[0]!r} of {row['source']} is not one of the run's classes")
            label = tuple(int(c in names) for c in classes) if multi_label else index[names[0]]
            if kind == "image" and not os.path.exists(row["source"]):
                gone.append(row["source"])
            splits.setdefault(row["split"], []).append((row["source"], label))
    if gone:
        raise RunError(f"{len(gone)} of the run's images are gone (first: {gone[0]}); arrays given in Python were "
                       "written to finetune's cache dir, which may have been cleared. Evaluate on the data itself "
                       "(`finetune evaluate RUN --data DIR`, or `run.predict(x)` in Python)")
    return splits


def without_training_state(model: "keras.Model") -> "keras.Model":
    """The same layers without the training state (optimizer, schedule, loss).

    What is saved then loads with plain ``keras.models.load_model`` in a
    process that never imported finetune.
    """
    import keras

    clone = keras.models.clone_model(model)  # fresh layers from config: nested models lose their compile state too
    clone.set_weights(model.get_weights())
    return clone
