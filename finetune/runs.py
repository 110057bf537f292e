"""Run folders: everything ``finetune train`` writes, and how to read it back.

``runs/<name>/`` holds ``model.keras``, ``config.yaml``, ``labels.txt``,
``history.csv``, ``curves.png``, ``confusion.png``, ``metrics.json``,
``skipped.csv``, ``report.md`` and ``report.html`` (and ``thresholds.json`` for a multi-label
run, ``ordinal.json`` for an ``--ordinal`` one). Files are written to a temporary name and
renamed, so a crash never leaves a half-written model; an existing run
folder is never overwritten.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np

from .config import TrainConfig
from .data import as_image_folder, make_inputs
from .errors import RunError
from .evaluation.diagnostics import plot_worst_mistakes, top_losses
from .evaluation.metrics import choose_thresholds, classification_metrics, multilabel_metrics
from .evaluation.predict import probabilities
from .evaluation.report import html_report, markdown_report, plot_confusion, plot_curves
from .models import is_multi_label
from .tracking import log_final_metrics, tracking_callbacks
from .run_folder import (  # noqa: F401  (load_run, Run, load_thresholds, load_ordinal: public here too)
    SPLITS_FILE, Run, load_ordinal, load_run, load_thresholds, without_training_state, write_splits,
)
from .training import FineTuneResult, fine_tune
from .training.resolve import Recipe, gather_facts, resolve
from .util import atomic_text, atomic_write, csv_text, yaml_text


RUN_CONFIG_HEADER = "finetune run config: `finetune train --config this-file` reproduces the run"


def new_run_dir(output: str | Path, name: str | None, *, overwrite: bool = False) -> Path:
    """Create ``output/name`` (a timestamped name by default); never reuse an existing one."""
    output = Path(output)
    base = name or datetime.now().strftime("%Y%m%d-%H%M%S")
    base = re.sub(r"[^\w.-]+", "-", base).strip("-") or "run"
    path = output / base
    if overwrite and path.exists():
        shutil.rmtree(path)
    suffix = 2
    while path.exists():
        path = output / f"{base}-{suffix}"
        suffix += 1
    path.mkdir(parents=True)
    return path


def evaluate_split(model: keras.Model, items, class_names, image_size, batch_size: int = 32,
                   resize: str | None = None, thresholds=None, ordinal=None) -> dict[str, Any]:
    """Classification metrics of ``model`` on ``[(path, label), ...]``, decoded by the run's spec.

    ``image_size``: the run's :class:`~finetune.data.spec.ImageSpec`, or a size fitted by ``resize``
    (:data:`~finetune.choices.DEFAULT_RESIZE` by default).

    A multi-label model gets :func:`~finetune.evaluation.metrics.multilabel_metrics`
    at ``thresholds`` (one per label; 0.5 each by default); with an ``ordinal`` rule
    (:class:`~finetune.training.ordinal.OrdinalRule`) the classes are its decisions.
    """
    probs, labels = _probabilities(model, items, class_names, image_size, batch_size, resize)
    if is_multi_label(model):
        return multilabel_metrics(labels, probs, class_names, thresholds)
    decided = ordinal.classes(probs) if ordinal is not None else None
    return classification_metrics(labels, probs, class_names, decided)


def val_thresholds(model: keras.Model, items, class_names, image_size, batch_size: int = 32,
                   resize: str | None = None) -> list[float]:
    """Per-label thresholds of a multi-label model that maximise F1 on ``items`` (the validation split)."""
    return choose_thresholds(*_probabilities(model, items, class_names, image_size, batch_size, resize))


def _probabilities(model: keras.Model, items, class_names, image_size, batch_size: int, resize: str | None):
    """``(probs, labels)`` of ``model`` on ``[(path, label), ...]``, decoded by the spec (or size and ``resize``)."""
    kwargs = {"resize": resize} if resize is not None else {}
    ds = make_inputs(items, image_size, batch_size=batch_size, binary=len(class_names) == 2, cache=None, **kwargs)
    return probabilities(model, ds)


def save_run(result: FineTuneResult, run_dir: str | Path, metrics: dict[str, Any] | None) -> Path:
    """Write the whole run folder for ``result``."""
    run_dir = Path(run_dir)
    atomic_write(run_dir / "model.keras", without_training_state(result.model).save)
    atomic_text(run_dir / "config.yaml", yaml_text(result.config.to_dict(), RUN_CONFIG_HEADER))
    atomic_text(run_dir / "labels.txt", "\n".join(result.class_names) + "\n")
    atomic_text(run_dir / "history.csv", csv_text(result.history))
    atomic_text(run_dir / "skipped.csv", csv_text([{"path": s.path, "reason": s.reason} for s in result.folder.skipped], ["path", "reason"]))
    plot_curves(result.history, run_dir / "curves.png", result.unfreeze_epoch)
    images = ["curves.png"]
    if metrics and metrics.get("n") and "confusion_matrix" in metrics:
        plot_confusion(metrics["confusion_matrix"], result.class_names, run_dir / "confusion.png")
        images.append("confusion.png")
    if (run_dir / "worst.png").exists():
        images.append("worst.png")
    payload = {"test": metrics, "timings_s": {k: round(v, 2) for k, v in result.timings.items()},
               "skipped": len(result.folder.skipped), "unfreeze_epoch": result.unfreeze_epoch,
               "kept_phase": result.kept_phase, "kept_reason": result.kept_reason(),
               "class_names": result.class_names}
    atomic_text(run_dir / "metrics.json", json.dumps(payload, indent=2))
    cfg = result.config
    summary = {
        "data": f"`{cfg.data}`: {result.folder.summary()}",
        "backbone": f"{cfg.backbone} ({cfg.weights} weights) at "
        + (f"{result.spec.size}px" if result.spec.kind == "image" else f"{result.spec.size} tokens"),
        "head": f"{cfg.pooling} pooling" + (f" of the top and {cfg.feature_taps} earlier stages" if cfg.feature_taps else "")
        + f", hidden {cfg.hidden or 'none'}, dropout {cfg.dropout}",
        "phase 1 (frozen base)": f"{sum(r['phase'] == 'head' for r in result.history)} epochs at lr {cfg.lr:g}"
        + (" on cached features" if cfg.cache_features else ""),
        "phase 2 (unfrozen)": (f"{sum(r['phase'] == 'tune' for r in result.history)} epochs at lr {cfg.resolved_tune_lr:g}, "
                               f"{len(result.unfrozen_layers)} layers unfrozen ({result.unfreeze_policy})") if result.unfreeze_epoch else "skipped",
        "weights kept": result.kept_reason(),
        **({"choices": "; ".join(result.notes)} if result.notes else {}),
        "time": ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items()),
    }
    summary["phases"] = "\n\n```\n" + result.phase_table() + "\n```"
    report = markdown_report(title=f"finetune run `{run_dir.name}`", summary=summary, metrics=metrics,
                             skipped=[(s.path, s.reason) for s in result.folder.skipped], images=images,
                             examples="texts" if result.spec.kind == "text" else "images")
    atomic_text(run_dir / "report.md", report)
    atomic_text(run_dir / "report.html", html_report(report, run_dir))
    return run_dir


def plan(config: TrainConfig, *, resume_from: str | Path | None = None):
    """``(folder, recipe)``: scan the data and resolve the recipe, building nothing (``finetune train --dry-run``).

    With ``resume_from``, a run folder's saved ``recipe.json`` is replayed instead of resolving afresh.
    """
    config.validate()
    folder = as_image_folder(config.data, **config.split_args())
    saved = Path(resume_from) / "recipe.json" if resume_from is not None else None
    if saved is not None and saved.exists():
        return folder, Recipe.load(saved)
    return folder, resolve(config, gather_facts(config, folder))


def train(config: TrainConfig, *, overwrite: bool = False, verbose: int = 1, callbacks=(),
          resume: str | Path | None = None) -> tuple[Path, FineTuneResult, dict]:
    """Fine-tune per ``config``, evaluate on the test split and write the run folder.

    Everything that can be checked before training is checked before a run folder exists: the config, the
    data, and the recipe :func:`~finetune.training.resolve.resolve` makes of them (``recipe.json``, with the
    input spec in ``spec.json`` and the split in ``splits.csv``). Every epoch is checkpointed into
    ``<run>/checkpoint/``; if the process dies, ``train(config, resume=run_dir)`` replays the saved recipe
    from the last completed epoch. The checkpoint is removed once the run folder is complete.
    """
    config.validate()
    fresh_in: Path | None = None  # a run folder that --resume found without any checkpoint
    if resume is not None:
        run_dir = Path(resume)
        if (run_dir / "model.keras").exists() and not (run_dir / "checkpoint").exists():
            raise RunError(f"run {str(run_dir)!r} already finished; start a new run instead of --resume")
        if not (run_dir / "checkpoint" / "state.json").exists():
            warnings.warn(f"run {str(run_dir)!r} stopped before its first epoch was checkpointed: starting it afresh "
                          "from its config.yaml", RuntimeWarning, stacklevel=2)
            shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
            fresh_in = run_dir
            resume = None
    started = time.perf_counter()
    folder, recipe = plan(config, resume_from=resume)
    scan_seconds = time.perf_counter() - started
    if fresh_in is not None:
        run_dir = fresh_in
    elif resume is None:
        run_dir = new_run_dir(config.output, config.name or _default_name(config), overwrite=overwrite)
        atomic_text(run_dir / "config.yaml", yaml_text(config.to_dict(), RUN_CONFIG_HEADER))
    if resume is None:
        recipe.save(run_dir / "recipe.json")
        atomic_text(run_dir / "spec.json", json.dumps(recipe.spec.to_dict(), indent=2))
        write_splits(run_dir / SPLITS_FILE, folder.splits, folder.class_names, folder.kind)
    trackers = tracking_callbacks(run_dir, tensorboard=config.tensorboard, mlflow_uri=config.mlflow,
                                  params=config.to_dict()) if (config.tensorboard or config.mlflow) else []
    try:
        result = fine_tune(folder, config, verbose=verbose, callbacks=[*callbacks, *trackers], recipe=recipe,
                           checkpoint_dir=run_dir / "checkpoint", resume=resume is not None)
    except BaseException:
        if resume is None and fresh_in is None and not (run_dir / "checkpoint" / "state.json").exists():
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing worth keeping: no completed epoch
        raise
    result.timings["scan"] = scan_seconds
    spec = result.spec
    test_items = result.folder.splits.get("test") or result.folder.splits.get("val") or []
    thresholds = None
    if result.folder.multi_label:
        val_items = result.folder.splits.get("val") or []
        thresholds = (val_thresholds(result.model, val_items, result.class_names, spec, config.batch_size)
                      if val_items else [0.5] * len(result.class_names))
        why = "maximise each label's F1 on the validation split" if val_items else "no validation split: 0.5 each"
        atomic_text(run_dir / "thresholds.json", json.dumps(
            {"thresholds": thresholds, "labels": result.class_names, "chosen": why}, indent=2))
        result.notes.append(f"label thresholds {', '.join(f'{n} {t:g}' for n, t in zip(result.class_names, thresholds))}"
                            f" ({why})")
    if result.ordinal is not None:
        result.ordinal.save(run_dir / "ordinal.json")
    metrics = evaluate_split(result.model, test_items, result.class_names, spec, config.batch_size,
                             thresholds=thresholds, ordinal=result.ordinal) if test_items else None
    if metrics is not None:
        metrics["split"] = "test" if result.folder.splits.get("test") else "val"
    if metrics is not None and spec.kind == "text":
        _text_baseline_note(result, test_items)
    if metrics is not None and not result.folder.multi_label and spec.kind == "image":
        worst = top_losses(result.model, test_items, result.class_names, spec.size, k=16, resize=spec.resize)
        images, heatmaps = _heatmaps(result, worst)
        plot_worst_mistakes(worst, run_dir / "worst.png", heatmaps=heatmaps, images=images)
    if trackers:
        log_final_metrics(trackers, metrics or {})
    save_run(result, run_dir, metrics)
    shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
    return run_dir, result, metrics


def _text_baseline_note(result: FineTuneResult, test_items) -> None:
    """What a bag-of-words model scores on the same split: the line every text report carries, so the user sees
    what fine-tuning bought (skipped, with a note, when scikit-learn is missing)."""
    try:
        from .evaluation.text_baseline import tfidf_baseline
    except ImportError:
        return
    splits = result.folder.splits
    # what finetune learned from (train, and val when a test split is scored), never the scored texts
    train = splits["train"] + ((splits.get("val") or []) if splits.get("test") else [])
    if result.folder.multi_label:
        return
    try:
        baseline = tfidf_baseline([t for t, _ in train], [y for _, y in train], [t for t, _ in test_items],
                                  [y for _, y in test_items], seed=result.config.seed)
    except Exception as err:  # noqa: BLE001 - the baseline is a yardstick; it never fails a finished run
        result.notes.append(f"bag-of-words baseline not computed: {err}")
        return
    result.notes.append(baseline.describe())


def _default_name(config: TrainConfig) -> str:
    return f"{Path(config.data).name or 'data'}-{config.backbone}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _heatmaps(result: FineTuneResult, rows) -> tuple:
    """``(images, heatmaps)``: the rows' images as the model saw them and their Grad-CAM (``None``s without one)."""
    from .data import load_images
    from .evaluation.explain import CannotExplain, grad_cam

    if not rows:
        return None, None
    images = load_images([r.path for r in rows], result.spec)
    try:
        return images, [e.heatmap for e in grad_cam(result.model, images)]
    except CannotExplain:
        return None, None


def ensemble_runs(run_dirs, output: str | Path = "runs", name: str | None = None) -> tuple[Path, dict[str, Any]]:
    """A run folder whose model averages the probabilities of the runs in ``run_dirs``, and its test metrics.

    The runs must classify the same classes at the same input size and resize policy (e.g. one recipe
    trained with several ``--seed``s); ``evaluate``, ``predict``, ``serve`` and ``export`` read the new
    folder like any run. It is scored on the first run's test split, beside each member.

    Returns:
        ``(folder, metrics)``: ``metrics["members"]`` holds each member's test metrics.

    Raises:
        RunError: fewer than 2 runs, a missing run, or runs that disagree on classes, input size or
            resize policy, or that carry a decision rule (``ordinal.json``, multi-label thresholds)
            an average of probabilities would drop.
    """
    from .models.ensemble import average_models

    run_dirs = [Path(r) for r in run_dirs]
    if len(run_dirs) < 2:
        raise RunError(f"an ensemble needs at least 2 runs, got {len(run_dirs)}")
    runs = [load_run(r) for r in run_dirs]
    first = runs[0]
    first_config, first_names = first.config, first.classes
    for run in runs[1:]:
        for what, mine, theirs in (("classes", run.classes, first.classes), ("input spec", run.spec, first.spec)):
            if mine != theirs:
                raise RunError(f"{run.path} has {what} {mine!r} but {run_dirs[0]} has {theirs!r}: an ensemble's "
                               "members must agree on it (train them with the same options and --split-seed, other --seed)")
    for run in runs:
        for rule in ("ordinal.json", "thresholds.json"):
            if (run.path / rule).exists():
                raise RunError(f"{run.path} decides with {rule}, which an average of probabilities would drop; "
                               "ensembles of runs with decision rules are not supported")
    splits = [run.splits() for run in runs]  # splits.csv: no scan (older runs are scanned)
    held_out = [sorted(p for split in ("val", "test") for p, _ in s.get(split, [])) for s in splits]
    for run, mine in zip(runs[1:], held_out[1:]):
        if mine != held_out[0]:
            raise RunError(f"{run.path} was validated and tested on other images than {run_dirs[0]} (the split is "
                           "drawn from --seed): members would be scored on images others trained on. Train them "
                           "with the same --split-seed and different --seed, or on a folder split into train/val/test")
    model = average_models([run.model for run in runs])
    items = splits[0].get("test") or splits[0].get("val") or []
    metrics: dict[str, Any] = {"members": {str(r): {} for r in run_dirs}}
    if items:  # decoded once; the ensemble's probabilities are its members' mean (what its Average layer computes)
        ds = make_inputs(items, first.spec, batch_size=first_config.batch_size, binary=len(first_names) == 2,
                         cache="auto")
        member_probs = [probabilities(run.model, ds) for run in runs]
        labels = member_probs[0][1]
        metrics = {**classification_metrics(labels, np.mean([p for p, _ in member_probs], axis=0), first_names),
                   "members": {str(r): classification_metrics(labels, p, first_names)
                               for r, (p, _) in zip(run_dirs, member_probs)}}
    run_dir = new_run_dir(output, name or f"ensemble-{run_dirs[0].name}")
    atomic_write(run_dir / "model.keras", model.save)
    config = TrainConfig.from_dict({**first_config.to_dict(), "name": run_dir.name})
    atomic_text(run_dir / "config.yaml", yaml_text(config.to_dict(), "finetune ensemble: the first member's config "
                                                   "(data, split, input size and resize are shared by all members)"))
    atomic_text(run_dir / "labels.txt", "\n".join(first_names) + "\n")
    atomic_text(run_dir / "spec.json", json.dumps(first.spec.to_dict(), indent=2))
    if (first.path / SPLITS_FILE).exists():
        shutil.copyfile(first.path / SPLITS_FILE, run_dir / SPLITS_FILE)
    atomic_text(run_dir / "members.txt", "\n".join(str(r.resolve()) for r in run_dirs) + "\n")
    atomic_text(run_dir / "metrics.json", json.dumps({"test": metrics, "class_names": first_names}, indent=2))
    images = []
    if metrics.get("n") and "confusion_matrix" in metrics:
        plot_confusion(metrics["confusion_matrix"], first_names, run_dir / "confusion.png")
        images.append("confusion.png")
    members = "; ".join(f"`{r.name}` {m['accuracy']:.2%}" for r, m in zip(run_dirs, metrics["members"].values())
                        if m.get("n"))
    summary = {"ensemble": f"the mean of {len(run_dirs)} runs' probabilities: " + ", ".join(f"`{r}`" for r in run_dirs),
               "data": f"`{first_config.data}`, test split of the first run ({len(items)} images)",
               **({"members' test accuracy": members} if members else {})}
    report = markdown_report(title=f"finetune ensemble `{run_dir.name}`", summary=summary, metrics=metrics or None,
                             skipped=[], images=images)
    atomic_text(run_dir / "report.md", report)
    atomic_text(run_dir / "report.html", html_report(report, run_dir))
    return run_dir, metrics
