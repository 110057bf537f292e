"""The ``finetune`` command. It prints and sets exit codes; the library only returns and raises."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import click

from ._compat import import_tensorflow_quietly
from .choices import (
    AUGMENT_PRESETS, CLASS_WEIGHTS, EXPORT_FORMATS, LOOPS, OPTIMIZERS, POOLINGS, PRECISIONS, QUANTIZATIONS, SCHEDULES,
    STRATEGIES, TUNE_INPUTS, CACHE_DTYPES, RESIZE_POLICIES,
)

EXIT_USAGE = 2


def _defaults():
    from .config import TrainConfig

    return TrainConfig()


class FinetuneGroup(click.Group):
    """Turns known errors into one actionable line and exit code 2 (traceback with --debug)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as err:  # noqa: BLE001 - every error reaches the user as one line
            if ctx.params.get("debug") or os.environ.get("FINETUNE_DEBUG"):
                raise
            from .training.phase import TrainingDiverged

            if isinstance(err, TrainingDiverged):
                click.secho(f"error: {err}", fg="red", err=True)
                sys.exit(3)
            known = _known_errors()
            if isinstance(err, known):
                click.secho(f"error: {err}", fg="red", err=True)
                sys.exit(EXIT_USAGE)
            click.secho(f"error: {type(err).__name__}: {err}\n(run with --debug for the traceback)", fg="red", err=True)
            sys.exit(1)


def _known_errors() -> tuple[type[BaseException], ...]:
    from .config import ConfigError
    from .data import DataError
    from .export import ExportError
    from .models.backbones import UnknownBackboneError
    from .runs import RunError

    return (DataError, ConfigError, UnknownBackboneError, RunError, ExportError, FileNotFoundError)


@click.group(cls=FinetuneGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="keras-finetune")
def main(debug: bool) -> None:
    """Fine-tune a pretrained image classifier on a folder of images.

    \b
    finetune train DATA_DIR            two-phase fine-tuning, writes runs/<name>/
    finetune evaluate RUN_DIR          metrics on the test split (or another folder)
    finetune predict RUN_DIR IMAGES... top-k classes per image
    finetune export RUN_DIR            SavedModel / TFLite / ONNX with a parity check
    finetune lr-find DATA_DIR          suggest a learning rate
    finetune backbones                 the available pretrained networks
    finetune cache [--clear]           what the cache holds (converted weights, features)
    """


def _start_tensorflow() -> None:
    """Import TensorFlow quietly, once a command is about to run (never for --help)."""
    import_tensorflow_quietly()


#: How an option whose config default is None behaves when it is not given.
NONE_DEFAULTS = {"image_size": "the backbone's, or the images' own size if smaller", "tune_lr": "lr/100",
                 "unfreeze_from": "the backbone's top block", "name": "DATA-BACKBONE-TIMESTAMP",
                 "from_model": "none: use --backbone"}


def _opt(name: str, type_, help_: str, field: str | None = None, **kw):
    field = field or name.lstrip("-").replace("-", "_")
    default = getattr(_defaults(), field, None)
    shown = NONE_DEFAULTS.get(field, "none") if default is None else default
    return click.option(name, field, type=type_, default=None, help=f"{help_} [default: {shown}]", **kw)


TRAIN_OPTIONS = [
    _opt("--backbone", str, "Pretrained network (see `finetune backbones`)."),
    _opt("--weights", str, "'imagenet', 'none' (random) or a path to a weights file."),
    _opt("--from", str, "Start from a saved model's layers instead of a backbone (a .keras or .h5 file).", field="from_model"),
    _opt("--drop-top", int, "With --from: how many top layers of the saved model to drop."),
    _opt("--image-size", int, "Square input size in pixels."),
    _opt("--resize", click.Choice(RESIZE_POLICIES), "Fit images to the square input: crop (centre, keeps the shape), "
         "pad (black borders) or squash."),
    _opt("--batch-size", int, "Images per batch."),
    _opt("--val-split", float, "Validation fraction per class when DATA_DIR is not pre-split."),
    _opt("--test-split", float, "Test fraction per class when DATA_DIR is not pre-split."),
    _opt("--seed", int, "Seed of the split, initialisation and shuffling."),
    _opt("--augment", click.Choice(AUGMENT_PRESETS), "Augmentation preset ('seed' = seed 002's ImageDataGenerator)."),
    _opt("--pooling", click.Choice(POOLINGS), "How the feature map becomes a vector."),
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
    _opt("--warmup-epochs", float, "Linear warm-up epochs of the cosine schedule."),
    click.option("--discriminative/--no-discriminative", "discriminative", default=None,
                 help="Phase 2: base blocks learn at rates spread geometrically from tune-lr/100 to tune-lr. [default: off]"),
    _opt("--clipnorm", float, "Clip gradients to this global norm."),
    _opt("--loop", click.Choice(LOOPS), "Training loop: Keras fit, or finetune's GradientTape Trainer."),
    _opt("--strategy", click.Choice(STRATEGIES), "tf.distribute strategy (multiworker reads TF_CONFIG)."),
    _opt("--precision", click.Choice(PRECISIONS), "mixed = mixed_float16 (GPU)."),
    click.option("--jit/--no-jit", "jit", default=None, help="XLA-compile training steps (GPU; slow on CPU). [default: off]"),
    _opt("--patience", int, "Early-stopping patience on val loss, best weights restored (0 disables)."),
    _opt("--class-weight", click.Choice(CLASS_WEIGHTS), "Weight classes inversely to their frequency."),
    click.option("--cache-features/--no-cache-features", "cache_features", default=None,
                 help="Run the frozen base once and train the head on cached features. [default: on]"),
    _opt("--cache-variants", int, "K augmented copies per image in the caches: phase 1 trains on the original and all "
         "K copies every epoch; phase 2 (cached) on one of the 1+K per epoch."),
    _opt("--tune-inputs", click.Choice(TUNE_INPUTS), "Phase 2 on cached activations at the unfreeze point (the frozen "
         "bottom runs once per image and copy) or on live images; auto: cached unless that would drop augmentation."),
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
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def train(data_dir, config_path, overwrite, resume_dir, quiet, **options):
    """Fine-tune on DATA_DIR (one subfolder per class, or train/ val/ [test/])."""
    _start_tensorflow()
    from .config import ConfigError, TrainConfig
    from .runs import train as run_training

    if resume_dir:
        config_path = config_path or str(Path(resume_dir) / "config.yaml")
        if not Path(config_path).exists():
            raise click.UsageError(f"{resume_dir!r} is not a run folder (no config.yaml)")
    base = TrainConfig.load(config_path).to_dict() if config_path else TrainConfig().to_dict()
    given = {k: v for k, v in options.items() if v is not None}
    if "hidden" in given:
        try:
            given["hidden"] = [int(h) for h in str(given["hidden"]).split(",") if h.strip()]
        except ValueError:
            raise ConfigError(f"--hidden: expected comma-separated integers such as 256,128, got {options['hidden']!r}") from None
    if data_dir:
        given["data"] = data_dir
    config = TrainConfig.from_dict({**base, **given})
    if not config.data:
        raise click.UsageError("give DATA_DIR or a --config with a `data:` entry")
    source = config.from_model or config.backbone
    click.echo(f"finetune: {'resuming' if resume_dir else 'training'} {source} on {config.data}")
    run_dir, result, metrics = run_training(config, overwrite=overwrite, verbose=0 if quiet else 1, resume=resume_dir)
    if result.folder.skipped:
        click.secho(f"skipped {len(result.folder.skipped)} unreadable file(s); see {run_dir / 'report.md'}", fg="yellow")
    click.echo(result.phase_table())
    click.echo(result.kept_reason())
    if metrics:
        click.echo(f"{metrics['split']} accuracy: {metrics['accuracy']:.2%} on {metrics['n']} images")
    click.echo(f"run folder: {run_dir}\nreport: {run_dir / 'report.md'}")


@main.command()
@click.argument("run_dir", type=click.Path())
@click.option("--data", "data_dir", type=click.Path(), help="Evaluate on this class-folder tree instead of the run's test split.")
@click.option("--tta", is_flag=True, help="Also report accuracy with test-time augmentation (flips and crops averaged).")
@click.option("--unsafe", is_flag=True, help="Allow models with Lambda layers (runs code stored in the model).")
def evaluate(run_dir, data_dir, tta, unsafe):
    """Accuracy, per-class precision/recall/F1 and confusion matrix of a trained run."""
    _start_tensorflow()
    from .data import as_image_folder, scan_folder
    from .runs import evaluate_split

    model, config, class_names = _load(run_dir, unsafe)
    if data_dir:
        folder = scan_folder(data_dir, val_split=0, test_split=0)
        _check_classes(folder.class_names, class_names, data_dir)
        items = [item for split in folder.splits.values() for item in split]
    else:
        folder = as_image_folder(config.data, val_split=config.val_split, test_split=config.test_split, seed=config.seed)
        items = folder.splits.get("test") or folder.splits.get("val")
    metrics = evaluate_split(model, items, class_names, config.image_size, config.batch_size, config.resize)
    click.echo(f"accuracy: {metrics['accuracy']:.2%} on {metrics['n']} images "
               f"(balanced {metrics['balanced_accuracy']:.2%}, macro F1 {metrics['macro_f1']:.3f})")
    from .evaluation.report import metrics_table

    click.echo(metrics_table(metrics))
    if tta:
        from .evaluation.diagnostics import evaluate_tta

        result = evaluate_tta(model, items, class_names, config.image_size, batch_size=config.batch_size,
                              resize=config.resize)
        click.echo(f"TTA accuracy: {result['accuracy_tta']:.2%} (without TTA: {result['accuracy']:.2%})")


@main.command()
@click.argument("args", nargs=-1, required=True, type=click.Path())
@click.option("-k", "--top-k", default=3, show_default=True, help="How many classes to show per image.")
@click.option("--csv", "csv_path", type=click.Path(), help="Write predictions to this CSV file instead of printing.")
@click.option("--imagenet", is_flag=True, help="No RUN_DIR: name ImageNet classes with the offline EfficientNet-Lite0 and its original head.")
@click.option("--mc-samples", type=int, default=0, show_default=True,
              help="Average this many MC-dropout passes; report the std of each probability and the predictive entropy.")
@click.option("--tta", is_flag=True, help="Average predictions over flips and crops (test-time augmentation).")
@click.option("--unsafe", is_flag=True, help="Allow models with Lambda layers (runs code stored in the model).")
def predict(args, top_k, csv_path, imagenet, mc_samples, tta, unsafe):
    """Top-k classes for images: `predict RUN_DIR IMAGE_OR_FOLDER...` or `predict --imagenet IMAGE...`."""
    _start_tensorflow()
    import numpy as np

    from .data import IMAGE_EXTENSIONS, check_image, load_images
    from .evaluation.diagnostics import predict_images

    if imagenet:
        from .models.backbones.imagenet import imagenet_classifier

        model, image_size, class_names = imagenet_classifier()
        fit = dict(resize="crop", crop_fraction=0.875, bicubic=True)  # the reference (timm) eval transform
        paths = args
    else:
        if len(args) < 2:
            raise click.UsageError("give RUN_DIR and at least one image or folder (or --imagenet IMAGE...)")
        run_dir, paths = args[0], args[1:]
        model, config, class_names = _load(run_dir, unsafe)
        image_size, fit = config.image_size, dict(resize=config.resize)
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith("."))
        elif p.exists():
            files.append(str(p))
        else:
            raise FileNotFoundError(f"image {str(p)!r} does not exist")
    good, rows = [], []
    for f in files:
        reason = check_image(f)
        if reason:
            click.secho(f"skipped {f}: {reason}", fg="yellow", err=True)
        else:
            good.append(f)
    k = min(top_k, len(class_names))
    header = ["path"] + [h for i in range(1, k + 1) for h in (f"class_{i}", f"prob_{i}")]
    if mc_samples:
        header += [f"std_{i}" for i in range(1, k + 1)] + ["entropy"]
    for start in range(0, len(good), 64):
        chunk = good[start:start + 64]
        probs, std, entropy = predict_images(model, load_images(chunk, image_size, **fit), mc_samples=mc_samples, tta=tta)
        for j, (f, p) in enumerate(zip(chunk, probs)):
            order = np.argsort(-p)[:k]
            row = [f] + [v for i in order for v in (class_names[i], f"{p[i]:.4f}")]
            if mc_samples:
                row += [f"{std[j][i]:.4f}" for i in order] + [f"{entropy[j]:.4f}"]
            rows.append(row)
    if csv_path:
        with open(csv_path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
        click.echo(f"wrote {len(rows)} predictions to {csv_path}")
    else:
        for row in rows:
            shown = []
            for n, i in enumerate(range(1, 2 * k + 1, 2)):
                text = f"{row[i]} {float(row[i + 1]):.1%}"
                if mc_samples:
                    text += f" +- {float(row[1 + 2 * k + n]):.1%}"
                shown.append(text)
            tail = f" (entropy {float(row[-1]):.3f} nats, {mc_samples} MC-dropout samples)" if mc_samples else ""
            click.echo(f"{row[0]}: {', '.join(shown)}{tail}")
    if not good:
        sys.exit(1)


@main.command()
@click.argument("run_dir", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="tflite", show_default=True,
              help="Export format (onnx needs `pip install keras-finetune[onnx]`).")
@click.option("--quantize", type=click.Choice(QUANTIZATIONS), default=None, help="TFLite weight quantization (int8 = dynamic range).")
@click.option("--out", "out_path", type=click.Path(), default=None, help="Output path [default: RUN_DIR/export/...].")
def export(run_dir, fmt, quantize, out_path):
    """Export a trained run for deployment and check it against the Keras model."""
    _start_tensorflow()
    from .export import export as export_model

    result = export_model(run_dir, fmt, out_path, quantize=quantize)
    click.echo(result.summary())


@main.command("lr-find")
@click.argument("data_dir", type=click.Path())
@click.option("--backbone", default=None, help="Pretrained network [default: efficientnet_lite0].")
@click.option("--weights", default=None, help="'imagenet', 'none' or a weights file [default: imagenet].")
@click.option("--image-size", type=int, default=None, help="Input size [default: the backbone's].")
@click.option("--optimizer", default="adam", show_default=True, help="Optimizer name.")
@click.option("--steps", default=200, show_default=True, help="Steps of the exponential sweep.")
@click.option("--plot", "plot_path", default="lr_find.png", show_default=True, type=click.Path(), help="Where to write the loss-vs-LR plot.")
def lr_find_command(data_dir, backbone, weights, image_size, optimizer, steps, plot_path):
    """Sweep the head's learning rate exponentially on cached features and suggest one."""
    _start_tensorflow()
    from .config import TrainConfig
    from .training.features import FeatureCache
    from .training.lr_find import lr_find
    from .data import scan_folder
    from .models import build_model, loss_for

    given = {k: v for k, v in (("backbone", backbone), ("weights", weights), ("image_size", image_size)) if v is not None}
    config = TrainConfig.from_dict({**TrainConfig().to_dict(), **given, "data": data_dir, "optimizer": optimizer})
    folder = scan_folder(data_dir, val_split=config.val_split, test_split=config.test_split, seed=config.seed)
    parts = build_model(config.backbone, folder.num_classes, weights=config.weights, image_size=config.image_size,
                        head=config.head_config(), augment="none", seed=config.seed)
    loader = dict(image_size=parts.image_size, batch_size=config.batch_size, binary=folder.binary)
    config.image_size = parts.image_size
    x, y = FeatureCache.for_run(config, parts).get_or_compute(folder.splits["train"], loader, parts, verbose=1)[:2]
    result = lr_find(parts.classifier, (x, y), loss=loss_for(folder.num_classes), optimizer=optimizer,
                     steps=steps, batch_size=config.batch_size)
    result.plot(plot_path)
    click.echo(f"suggested learning rate: {result.suggestion:.2g} (steepest descent; min-loss/10 = {result.min_loss_lr:.2g})")
    click.echo(f"plot: {plot_path}\nuse it: finetune train {data_dir} --lr {result.suggestion:.2g}")


@main.command()
@click.option("--clear", is_flag=True, help="Delete everything in the cache.")
def cache(clear):
    """Show (or clear) finetune's cache: converted weights and cached features/activations."""
    from . import cache as store

    root = store.cache_root()
    listed = store.entries(root) if root.exists() else []
    total = sum(size for _, size, _ in listed)
    if clear:
        click.echo(f"cleared {store.clear(root) / 2**20:.1f} MB from {root}")
        return
    click.echo(f"{root}: {len(listed)} entries, {total / 2**20:.1f} MB of {store.cache_limit() / 2**30:.1f} GB "
               "(FINETUNE_CACHE_LIMIT; least recently used entries go first)")
    for kind, mine in store.by_kind(listed).items():
        click.echo(f"  {kind:<9} {len(mine):4d} entries  {sum(e[1] for e in mine) / 2**20:9.1f} MB")


@main.command()
def backbones():
    """List the pretrained networks with their size, input size and offline availability."""
    _start_tensorflow()
    from .models import list_backbones

    click.echo(f"{'name':<20} {'family':<17} {'params':>7}  {'input':>5}  {'unfreeze from':<26} weights offline")
    for b in list_backbones():
        offline = "yes" if b.available_offline() else "no (downloads on first use)"
        click.echo(f"{b.name:<20} {b.family:<17} {b.params_millions:>6.1f}M  {b.input_size:>5}  {b.default_unfreeze:<26} {offline}")


def _load(run_dir, unsafe: bool):
    from .runs import load_run

    if unsafe:
        click.secho("warning: --unsafe loads Lambda layers, which run code stored in the model file", fg="yellow", err=True)
    return load_run(run_dir, safe_mode=not unsafe)


def _check_classes(found, expected, data_dir):
    from .data import DataError
    if found != expected:
        raise DataError(f"{data_dir!r} has classes {found}, but the model was trained on {expected}")


if __name__ == "__main__":  # pragma: no cover
    main()
