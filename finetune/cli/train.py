"""``finetune train``: every TrainConfig field as an option, with its default shown."""

from __future__ import annotations

from pathlib import Path

import click

from ..choices import (
    AUGMENT_PRESETS, BN_STATS, CACHE_DTYPES, CLASS_WEIGHTS, DECISIONS, LOOPS, OPTIMIZERS, POOLINGS, PRECISIONS, RESIZE_POLICIES, SCHEDULES,
    STRATEGIES, TUNE_INPUTS,
)
from .app import _defaults, _start_tensorflow, main


NONE_DEFAULTS = {"image_size": "the backbone's, or the images' own size if smaller",
                 "sequence_length": "the 95th percentile of the training texts' tokens, rounded up to 32",
                 "tune_lr": "lr/100 for colour photos, lr/10 for grayscale images",
                 "cache_variants": "2 with augmentation, 0 without",
                 "unfreeze_from": "the backbone's top block", "name": "DATA-BACKBONE-TIMESTAMP",
                 "from_model": "none: use --backbone", "images": "the annotation file's folder", "split_seed": "--seed"}


def _opt(name: str, type_, help_: str, field: str | None = None, **kw):
    field = field or name.lstrip("-").replace("-", "_")
    default = getattr(_defaults(), field, None)
    shown = NONE_DEFAULTS.get(field, "none") if default is None else default
    return click.option(name, field, type=type_, default=None, help=f"{help_} [default: {shown}]", **kw)


TRAIN_OPTIONS = [
    _opt("--images", str, "Boxes: the folder the annotations' file names are relative to (COCO `file_name`, VOC "
         "`filename`)."),
    _opt("--backbone", str, "Pretrained network (see `finetune backbones`)."),
    _opt("--weights", str, "'imagenet', 'none' (random) or a path to a weights file."),
    _opt("--from", str, "Start from a saved model's layers instead of a backbone (a .keras or .h5 file).", field="from_model"),
    _opt("--drop-top", int, "With --from: how many top layers of the saved model to drop."),
    _opt("--image-size", int, "Square input size in pixels."),
    _opt("--sequence-length", int, "Texts: tokens per text (longer texts are cut at the head)."),
    _opt("--resize", click.Choice(RESIZE_POLICIES), "Fit images to the square input: crop (centre, keeps the shape), "
         "pad (black borders) or squash."),
    _opt("--batch-size", int, "Images per batch."),
    _opt("--val-split", float, "Validation fraction per class when DATA_DIR is not pre-split."),
    _opt("--test-split", float, "Test fraction per class when DATA_DIR is not pre-split."),
    _opt("--seed", int, "Seed of initialisation and shuffling, and of the split unless --split-seed is given."),
    _opt("--split-seed", int, "Seed of the val/test split only (default: --seed); keep it fixed and vary --seed to "
         "train runs for `finetune ensemble` on one split."),
    _opt("--augment", click.Choice(AUGMENT_PRESETS), "Augmentation preset: light (flip, small rotation and zoom), flips (horizontal and vertical flips, for images without an up: cells, microscopy), seed (seed 002's ImageDataGenerator), none."),
    _opt("--pooling", click.Choice(POOLINGS), "How the feature map becomes a vector."),
    _opt("--feature-taps", int, "Also pool the ends of this many earlier stages of the base beside its top "
         "(finer detail; e.g. 2 for EfficientNet-Lite: blocks 6 and 5)."),
    _opt("--hidden", str, "Hidden Dense sizes of the head, comma separated, e.g. 256 or 512,128."),
    _opt("--activation", str, "Activation of the hidden head layers."),
    _opt("--dropout", float, "Dropout rate in the head."),
    _opt("--l1", float, "L1 kernel regularization of the head."),
    _opt("--l2", float, "L2 kernel regularization of the head."),
    _opt("--max-norm", float, "Max-norm constraint on head kernels."),
    _opt("--optimizer", click.Choice(OPTIMIZERS), "Optimizer."),
    _opt("--lr", float, "Learning rate of phase 1 (frozen base)."),
    _opt("--head-epochs", int, "Epochs of phase 1 (0 skips it)."),
    _opt("--tune-lr", float, "Learning rate of phase 2."),
    _opt("--tune-epochs", int, "Epochs of phase 2 with the top of the base unfrozen (0 skips it)."),
    _opt("--unfreeze-from", str, "Unfreeze from this layer name or prefix (e.g. block6, block5_conv1)."),
    _opt("--unfreeze-blocks", int, "Instead: unfreeze the last N blocks."),
    _opt("--unfreeze-fraction", float, "Instead: unfreeze this top fraction of the base's layers."),
    _opt("--schedule", click.Choice(SCHEDULES), "Learning-rate schedule within each phase."),
    _opt("--schedule-boundaries", str, "With --schedule piecewise (required there): epochs of each phase where the "
         "rate steps down, comma separated, e.g. 3,6."),
    _opt("--schedule-values", str, "With --schedule piecewise: the rate in each interval as a factor of the phase's "
         "rate, one more than the boundaries, e.g. 1,0.1,0.01 [default: 1, 0.1, 0.01, ...]."),
    _opt("--warmup-epochs", float, "Linear warm-up epochs of the cosine schedule."),
    click.option("--discriminative/--no-discriminative", "discriminative", default=None,
                 help="Phase 2: base blocks learn at rates spread geometrically from tune-lr/100 to tune-lr. [default: off]"),
    _opt("--clipnorm", float, "Clip gradients to this global norm."),
    _opt("--time-budget", float, "Minutes the training may take on this machine: each phase stops (best weights "
         "kept) when its next epoch, timed on the last one, would overrun; phase 1 gets at most a third."),
    _opt("--loop", click.Choice(LOOPS), "Training loop: Keras fit, or finetune's GradientTape Trainer."),
    _opt("--strategy", click.Choice(STRATEGIES), "tf.distribute strategy (multiworker reads TF_CONFIG)."),
    _opt("--precision", click.Choice(PRECISIONS), "mixed = mixed_float16 (GPU)."),
    click.option("--jit/--no-jit", "jit", default=None, help="XLA-compile training steps (GPU; slow on CPU). [default: off]"),
    _opt("--patience", int, "Early-stopping patience on val loss, best weights restored (0 disables)."),
    _opt("--tune-patience", int, "Phase 2's patience, when it differs from --patience (text: 3, as phase 2 "
         "overfits within a few epochs)."),
    _opt("--label-smoothing", float, "Smooth the training targets by this much (0.1 in timm and Model Maker): "
         "the true class gets 1 - s + s/K."),
    _opt("--mixup", float, "Mixup alpha (0 = off; fastai 0.4): each training batch mixed with a shuffled copy of "
         "itself, inputs and targets, on whatever the phase trains on (images, cached activations or features)."),
    _opt("--class-weight", click.Choice(CLASS_WEIGHTS), "Weight classes inversely to their frequency."),
    _opt("--decision", click.Choice(DECISIONS), "accuracy: predict the most probable class; balanced: divide by the "
         "class priors (power fitted on val, written into the last layer's bias) for balanced accuracy on imbalanced data."),
    click.option("--ordinal/--no-ordinal", "ordinal", default=None,
                 help="Ordered classes (folders sort in grade order): decide by the expected grade, cut at points "
                      "fitted on val for accuracy (balanced accuracy with --decision balanced). [default: off]"),
    click.option("--bag-blend/--no-bag-blend", "bag_blend", default=None,
                 help="Text: blend a TF-IDF bag of token 1-2-grams (logistic regression fitted on the training texts) "
                      "into the model, half and half with the network. [default: on for one-label text tasks]"),
    click.option("--cache-features/--no-cache-features", "cache_features", default=None,
                 help="Run the frozen base once and train the head on cached features. [default: on]"),
    _opt("--cache-variants", int, "K augmented copies per image in the caches: phase 1 trains on the original and all "
         "K copies every epoch; phase 2 (cached) on one of the 1+K per epoch."),
    _opt("--tune-inputs", click.Choice(TUNE_INPUTS), "Phase 2 on cached activations at the unfreeze point (the frozen "
         "bottom runs once per image and copy) or on live images; auto: cached unless that would drop augmentation."),
    _opt("--bn-stats", click.Choice(BN_STATS), "BatchNormalization statistics of the frozen base: imagenet (as "
         "trained), or adapt: re-estimated on the training images before caching (AdaBN), for data far from photos."),
    _opt("--cache-dtype", click.Choice(CACHE_DTYPES), "Storage of cached phase-2 activations (float16 halves memory)."),
    click.option("--tensorboard/--no-tensorboard", "tensorboard", default=None, help="TensorBoard logs in RUN/tensorboard. [default: off]"),
    _opt("--mlflow", str, "MLflow tracking URI (e.g. sqlite:///mlflow.db); needs `pip install mlflow`."),
    _opt("--output", str, "Folder that receives run folders."),
    _opt("--name", str, "Run folder name."),
]


def _apply(options):
    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn
    return decorate


@main.command()
@click.argument("data_dir", required=False, type=click.Path())
@click.option("--config", "config_path", type=click.Path(), help="A config.yaml (e.g. from a run folder); options given here override it.")
@_apply(TRAIN_OPTIONS)
@click.option("--overwrite", is_flag=True, help="Replace a run folder of the same --name instead of making a new one.")
@click.option("--resume", "resume_dir", type=click.Path(), help="Continue an interrupted run from its last completed epoch.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the final lines (phase table, kept weights, test accuracy, paths).")
@click.option("--dry-run", is_flag=True, help="Check the options, scan the data, print the resolved recipe and exit "
              "(builds and trains nothing).")
def train(data_dir, config_path, overwrite, resume_dir, quiet, dry_run, **options):
    """Fine-tune on DATA_DIR (one subfolder per class, or train/ val/ [test/]) or on a CSV of path,label[,split]
    (several labels in a cell, separated by ; or spaces, make a multi-label task). Texts: a CSV of
    text,label[,split] or a folder of <class>/*.txt (the default backbone is then minilm_l6). Boxes: a COCO
    instances .json, a folder of train.json/val.json[/test.json], a Pascal VOC folder or a YOLO folder (the
    detector yolov4_tiny is fine-tuned)."""
    from ..config import TrainConfig

    if resume_dir:
        config_path = config_path or str(Path(resume_dir) / "config.yaml")
        if not Path(config_path).exists():
            raise click.UsageError(f"{resume_dir!r} is not a run folder (no config.yaml)")
    base = TrainConfig.load(config_path).to_dict() if config_path else TrainConfig().to_dict()
    given = {k: v for k, v in options.items() if v is not None}
    for key, kind in (("hidden", int), ("schedule_boundaries", float), ("schedule_values", float)):
        if key in given:
            given[key] = _number_list(key, given[key], kind)
    if data_dir:
        given["data"] = data_dir
    config = TrainConfig.from_dict({**base, **given})  # every static check, before TensorFlow starts
    if not config.data:
        raise click.UsageError("give DATA_DIR or a --config with a `data:` entry")
    from ..data.boxes import is_box_data

    if is_box_data(config.data):
        return _train_detector(config, overwrite, resume_dir, quiet, dry_run)
    _start_tensorflow()
    from ..runs import plan, train as run_training

    if dry_run:
        folder, recipe = plan(config, resume_from=resume_dir)
        click.echo(f"data           {folder.summary()}")
        click.echo(recipe.describe())
        click.echo("dry run: nothing built or trained")
        return
    source = config.from_model or config.backbone
    if not quiet:
        click.echo(f"finetune: {'resuming' if resume_dir else 'training'} {source} on {config.data}")
    run_dir, result, metrics = run_training(config, overwrite=overwrite, verbose=0 if quiet else 1, resume=resume_dir)
    if result.folder.skipped:
        click.secho(f"skipped {len(result.folder.skipped)} unreadable file(s); see {run_dir / 'report.md'}", fg="yellow")
    click.echo(result.phase_table())
    click.echo(result.kept_reason())
    if metrics and metrics.get("multi_label"):
        click.echo(f"{metrics['split']} exact match: {metrics['accuracy']:.2%} on {metrics['n']} images "
                   f"(micro F1 {metrics['micro_f1']:.3f}, macro F1 {metrics['macro_f1']:.3f})")
    elif metrics:
        click.echo(f"{metrics['split']} accuracy: {metrics['accuracy']:.2%} on {metrics['n']} images")
    click.echo(f"run folder: {run_dir}\nreport: {run_dir / 'report.md'}")


def _train_detector(config, overwrite: bool, resume_dir, quiet: bool, dry_run: bool) -> None:
    """Boxes (COCO JSON, a folder of train/val/test.json, VOC or YOLO folders): the detection recipe."""
    _start_tensorflow()
    from ..detection_runs import plan_detection, train_detection

    if dry_run:
        splits, recipe, _ = plan_detection(config)
        for name, boxes in splits.items():
            click.echo(f"{name:<14} {boxes.summary()}")
        click.echo(recipe.describe())
        click.echo("dry run: nothing built or trained")
        return
    if not quiet:
        click.echo(f"finetune: {'resuming' if resume_dir else 'training'} a detector on the boxes of {config.data}")
    run_dir, result, metrics = train_detection(config, overwrite=overwrite, log=(lambda _: None) if quiet else click.echo,
                                               resume=resume_dir)
    click.echo(f"kept: {result.kept} ({result.reason})")
    if metrics and metrics.get("map50") is not None:
        click.echo(f"test mAP@0.5: {metrics['map50']:.1%}, mAP (0.5:0.95): {metrics['map']:.1%} on {metrics['images']} "
                   f"images, {metrics['boxes']} boxes")
    click.echo(f"run folder: {run_dir}\nreport: {run_dir / 'report.md'}")


def _number_list(key: str, text: str, kind: type) -> list:
    from ..config import ConfigError

    try:
        return [kind(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        example = "256,128" if kind is int else "3,6"
        raise ConfigError(f"--{key.replace('_', '-')}: expected comma-separated {'integers' if kind is int else 'numbers'}"
                          f" such as {example}, got {text!r}") from None
