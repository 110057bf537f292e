"""Every decision of a run, made once, by one pure function, before any network is built.

:func:`gather_facts` reads what the decisions depend on (the scan's classes and
balance, the images' typical size and colour, the backbone); :func:`resolve` turns
a config and those facts into a frozen :class:`Recipe`: the input size and spec,
the phase-2 learning rate and unfreeze point, the cached copies, the inputs of
phase 2, the training loop, and a note for every choice made on the user's behalf.
The recipe is saved in the run (``recipe.json``), printed by ``finetune train
--dry-run``, and replayed by ``--resume``.

Example:
    >>> from finetune.config import TrainConfig
    >>> from finetune.models import get_backbone
    >>> facts = Facts(get_backbone("efficientnet_lite0"), num_classes=4, train_counts=(700, 200, 80, 230),
    ...               typical_size=300, grayscale_fraction=1.0)
    >>> recipe = resolve(TrainConfig(data="cells/"), facts)
    >>> recipe.config.image_size, recipe.config.tune_lr, recipe.config.cache_variants, recipe.spec.resize
    (224, 0.0001, 2, 'crop')
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..data.spec import ImageSpec
from ..errors import ConfigError, RunError

#: Augmented copies cached per image when augmentation is on and the config leaves it open.
DEFAULT_COPIES = 2
#: Word vectors: the most words of the task an embedding holds (by frequency in the training and validation texts).
VOCABULARY_LIMIT = 50_000


@dataclass(frozen=True)
class Facts:
    """What a run's decisions depend on, read from the data and the backbone (see :func:`gather_facts`).

    Args:
        backbone: The :class:`~finetune.models.backbones.Backbone` (or the one ``--from`` a saved model makes).
        num_classes: Classes (labels, for a multi-label task).
        train_counts: Training examples per class.
        multi_label: Several labels per example.
        typical_size: Median shorter side of the training images, in pixels (``None``: unknown).
        grayscale_fraction: Share of the training images that are grayscale.
        has_val: Whether there is a validation split.
        data_root: Where the data lives (for arrays and datasets: the folder of their PNG files).
        kind: ``"image"`` or ``"text"``: what the examples are.
        token_lengths: For texts: ``(p50, p90, p95, p99, max)`` tokens per training text, before any cut.
        text_lengths: For texts: every training text's token count (to say how many a cap cuts).
        vocabulary: For word vectors: the most frequent words of the training and validation texts.
    """

    backbone: Any
    num_classes: int
    train_counts: tuple[int, ...] = ()
    multi_label: bool = False
    typical_size: int | None = None
    grayscale_fraction: float = 0.0
    has_val: bool = True
    data_root: str = ""
    kind: str = "image"
    token_lengths: tuple[int, ...] = ()
    text_lengths: tuple[int, ...] = ()
    vocabulary: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recipe:
    """The fully resolved recipe of a run: every field of the config decided, the input spec and the notes.

    Immutable: :attr:`config` hands out a fresh :class:`~finetune.config.TrainConfig` each time.
    """

    values: tuple[tuple[str, Any], ...]
    spec: Any
    loop: str
    unfreeze: str
    notes: tuple[str, ...] = ()

    @property
    def config(self) -> TrainConfig:
        """The resolved configuration (a new copy: changing it changes nothing here)."""
        return TrainConfig(**{k: list(v) if isinstance(v, tuple) else v for k, v in self.values})

    def to_dict(self) -> dict[str, Any]:
        return {"format": 1, "config": self.config.to_dict(), "spec": self.spec.to_dict(), "loop": self.loop,
                "unfreeze": self.unfreeze, "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Recipe":
        return cls(_frozen(TrainConfig.from_dict(values["config"])), spec_from_dict(values["spec"]),
                   values["loop"], values["unfreeze"], tuple(values.get("notes", ())))

    def save(self, path: str | Path) -> Path:
        from ..util import atomic_text

        atomic_text(Path(path), json.dumps(self.to_dict(), indent=2))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "Recipe":
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise RunError(f"{path}: not a readable recipe ({err}); start a new run instead") from None

    def describe(self) -> str:
        """The recipe as ``--dry-run`` prints it: the decisions, then why."""
        c, unfreeze = self.config, self.unfreeze
        lines = [
            f"data           {c.data}",
            f"backbone       {c.from_model or c.backbone} ({c.weights} weights)",
            (f"input          {self.spec.size}x{self.spec.size} RGB 0-255, resize {self.spec.resize}"
             if self.spec.kind == "image" else
             f"input          texts, {self.spec.sequence_length} "
             + (f"words (GloVe's word tokens, {len(self.spec.vocabulary):,}-word vocabulary)" if self.spec.word_level
                else f"tokens ({self.spec.tokenizer}'s tokenizer)")),
            f"split          val {c.val_split:g}, test {c.test_split:g}, seed {c.resolved_split_seed}",
            f"phase 1        {c.head_epochs} epochs at lr {c.lr:g}, {c.optimizer}, {c.schedule}"
            + (" on cached features" if c.cache_features else " on live inputs")
            + (f" (+{c.cache_variants} augmented copies, {c.augment})" if c.cache_variants else ""),
            f"phase 2        {c.tune_epochs} epochs at lr {c.tune_lr:g}, unfreeze {unfreeze}, on "
            + ("cached activations" if c.resolved_tune_inputs == "activations" else "live inputs"),
            f"head           {c.pooling} pooling, hidden {c.hidden or 'none'}, dropout {c.dropout:g}",
            f"loop           {self.loop}, batch {c.batch_size}, patience {c.patience}",
        ]
        return "\n".join(lines + [f"chosen         {n}" for n in self.notes])


def spec_from_dict(values: dict[str, Any]):
    """An :class:`~finetune.data.spec.ImageSpec` or :class:`~finetune.data.text.TextSpec`, by its ``kind``."""
    if values.get("kind") == "text":
        from ..data.text import TextSpec

        return TextSpec.from_dict(values)
    return ImageSpec.from_dict(values)


def _frozen(config: TrainConfig) -> tuple[tuple[str, Any], ...]:
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in config.to_dict().items())


def resolve(config: TrainConfig, facts: Facts) -> Recipe:
    """Decide what ``config`` leaves open, from ``facts``; raise :class:`ConfigError` for what the data rules out.

    Pure: reads its arguments, changes neither, and returns the same recipe for the same inputs.
    """
    from ..models.build import check_image_size, input_size_for, is_small

    if config.images:
        raise ConfigError("--images: only for boxes (a COCO .json, VOC or YOLO folder); drop it for classification")
    if facts.kind == "text":
        from .resolve_text import resolve_text  # the text modality's decisions

        return resolve_text(config, facts)
    if config.bag_blend:
        raise ConfigError("bag_blend: a bag of words is for text tasks; drop --bag-blend")
    decided, notes = config.to_dict(), []
    backbone, from_model = facts.backbone, bool(config.from_model)
    _check_against_data(config, facts)
    if not decided["data"]:
        decided["data"] = facts.data_root
    if decided["image_size"] is None:
        if from_model:
            decided["image_size"] = backbone.input_size
        else:
            decided["image_size"], why = input_size_for(backbone, facts.typical_size)
            notes.append(why)
    decided["image_size"] = check_image_size(backbone, decided["image_size"])
    unfreeze_given = any(decided[k] is not None for k in ("unfreeze_from", "unfreeze_blocks", "unfreeze_fraction"))
    if not from_model and is_small(backbone, facts.typical_size) and not unfreeze_given and config.tune_lr is None:
        decided["unfreeze_fraction"], decided["tune_lr"] = 1.0, config.lr
        unfreeze_given = True
        notes.append(f"images far smaller than the backbone's input: the whole network is fine-tuned at lr "
                     f"{config.lr:g} (its features were learned at another scale; at this size it is cheap)")
    if decided["cache_variants"] is None:
        decided["cache_variants"] = 0 if config.augment == "none" else DEFAULT_COPIES
        if decided["cache_variants"]:
            notes.append(f"{decided['cache_variants']} augmented copies per image cached: phase 1 trains on them "
                         "too, so phase 2 meets no new input distribution (bench/results/unfreeze_shock.md)")
    if decided["tune_lr"] is None:
        gray = facts.grayscale_fraction >= 0.9
        decided["tune_lr"] = config.lr / (10 if gray else 100)
        notes.append(f"phase-2 learning rate {decided['tune_lr']:g}: " + (
            "grayscale images, far from ImageNet's photos: the unfrozen block must move further (lr/10)"
            if gray else "colour photos, close to ImageNet: lr/100, as the Keras transfer-learning guide"))
    decided["split_seed"] = config.resolved_split_seed
    resolved = TrainConfig(**decided)
    decided["tune_inputs"] = resolved.resolved_tune_inputs
    spec = ImageSpec(decided["image_size"], config.resize, normalization=backbone.preprocessing)
    return _recipe(decided, spec, "blocks", backbone.default_unfreeze, notes)


def _recipe(decided: dict[str, Any], spec, blocks: str, default_unfreeze: str, notes: list[str]) -> Recipe:
    """The :class:`Recipe` of the ``decided`` config values: its loop and where phase 2 starts, in words."""
    unfreeze = (f"last {decided['unfreeze_blocks']} {blocks}" if decided["unfreeze_blocks"] else
                f"top {decided['unfreeze_fraction']:.0%} of the layers" if decided["unfreeze_fraction"] else
                f"from {decided['unfreeze_from'] or default_unfreeze}")
    # model.fit fails under MultiWorkerMirroredStrategy (keras-team/keras #20585)
    loop = "trainer" if decided["strategy"] == "multiworker" else decided["loop"]
    return Recipe(_frozen(TrainConfig(**decided)), spec, loop, unfreeze, tuple(notes))


def _check_against_data(config: TrainConfig, facts: Facts) -> None:
    """The config errors only the data can reveal (class count, labels per example)."""
    if config.decision == "balanced" and facts.multi_label:
        raise ConfigError("decision: 'balanced' corrects one-label class priors; a multi-label run has per-label "
                          "thresholds chosen on val instead (drop --decision)")
    if config.ordinal and (facts.multi_label or facts.num_classes < 3):
        raise ConfigError("ordinal: needs one label per image and at least 3 ordered classes (class folders sort "
                          f"in grade order); this task has {facts.num_classes} classes"
                          + (", several labels per image" if facts.multi_label else "") + " (drop --ordinal)")
    if config.class_weight == "balanced" and facts.multi_label:
        raise ConfigError("class_weight: 'balanced' weighs one label per image; a multi-label task takes none "
                          "(drop --class-weight)")


def gather_facts(config: TrainConfig, folder) -> Facts:
    """Read the :class:`Facts` of ``config`` on the scanned ``folder`` (image headers and a sample of pixels, or
    the texts' token lengths)."""
    from ..data import grayscale_fraction, typical_size

    backbone = lookup_backbone(config, folder.kind)
    common = dict(num_classes=folder.num_classes, train_counts=tuple(folder.counts("train")),
                  multi_label=folder.multi_label, has_val=bool(folder.splits.get("val")), data_root=str(folder.root))
    if folder.kind == "text":
        from ..data.text import TextSpec

        from ..data.words import uses_words, vocabulary_of

        spec = TextSpec(tokenizer=backbone.name)
        texts = [t for t, _ in folder.splits["train"]]
        lengths = spec.token_lengths(texts)
        summary = tuple(int(v) for v in np.percentile(lengths, [50, 90, 95, 99, 100]).round())
        words = ()
        if uses_words(backbone.name):  # the texts the run trains and validates on, never the test split
            seen = texts + [t for t, _ in folder.splits.get("val") or []]
            words = vocabulary_of((spec.normalize(t) for t in seen), VOCABULARY_LIMIT)
        return Facts(backbone, kind="text", token_lengths=summary, text_lengths=tuple(int(n) for n in lengths),
                     vocabulary=words, **common)
    paths = [p for p, _ in folder.splits["train"]]
    return Facts(backbone, typical_size=typical_size(paths), grayscale_fraction=grayscale_fraction(paths), **common)


def lookup_backbone(config: TrainConfig, kind: str = "image"):
    """The backbone object ``config`` names for data of ``kind`` (for text, the offline text default when the config
    names the image default).

    Raises:
        ConfigError: a text encoder for images, or an image backbone for texts.
    """
    if kind == "text":
        from ..models.text_backbones import DEFAULT_TEXT_BACKBONE, get_text_backbone, is_text_backbone

        if config.from_model:
            raise ConfigError("from_model: reusing a saved image model is for images; drop --from for a text task")
        if is_text_backbone(config.backbone):
            return get_text_backbone(config.backbone)
        if config.backbone == TrainConfig().backbone:
            return get_text_backbone(DEFAULT_TEXT_BACKBONE)
        raise ConfigError(f"backbone: {config.backbone!r} is an image network and the data is text; use "
                          f"--backbone {DEFAULT_TEXT_BACKBONE} or leave --backbone out")
    from ..models import backbone_from_model, get_backbone
    from ..models.text_backbones import is_text_backbone

    if config.from_model:
        return backbone_from_model(config.from_model, config.drop_top)
    if is_text_backbone(config.backbone):
        raise ConfigError(f"backbone: {config.backbone!r} is a text encoder and the data is images; pick an image "
                          "backbone (`finetune backbones`)")
    return get_backbone(config.backbone)


def replace_config(recipe: Recipe, **changes: Any) -> Recipe:
    """``recipe`` with config fields changed (for tests and tools that vary one decision)."""
    return dataclasses.replace(recipe, values=_frozen(dataclasses.replace(recipe.config, **changes)))
