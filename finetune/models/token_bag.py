"""A bag-of-n-grams linear model on a text model's own token ids, and its blend with the network.

A fine-tuned encoder and a TF-IDF logistic regression make different mistakes; averaging their
probabilities beats both (bench/README.md, Text). :class:`TokenBag` computes the linear model inside the
Keras graph from the ``token_ids`` and ``padding_mask`` the encoder already reads, so the blended model
stays one plain ``keras.Model`` with the same inputs: predict, serve, explain and export take it as they
take the network alone. Features: every token id, every pair of neighbouring ids (hashed into
``bigram_bins``) and, when the layer holds a table of them, each token's character 2-5-grams (a word's
first piece padded with a space in front, every piece behind, as scikit-learn's ``char_wb``; hashed into
``char_bins``), counted per text, sublinear (``1 + log count``), times IDF, L2-normalised per text
(scikit-learn's ``TfidfTransformer(sublinear_tf=True)``); the weights are fitted by
:func:`finetune.training.bag_blend.fit_token_bag`. TensorFlow ops only (``unique``, segment sums, gathers:
TFLite builtins).

Example:
    >>> bag = TokenBag(vocabulary_size=10, units=1, bigram_bins=16)
    >>> ids = np.array([[1, 4, 4, 2, 0]]); mask = ids > 0
    >>> [float(v) for v in np.asarray(bag([ids, mask]))[0]]  # zero weights: the sigmoid of 0
    [0.5]
"""

from __future__ import annotations

import keras
import numpy as np

__all__ = ["BIGRAM_BINS", "CHAR_BINS", "ProbabilityBlend", "TokenBag", "bag_keys", "char_gram_table", "vocabulary_size",
           "with_token_bag"]

#: Hash buckets of the token pairs (scikit-learn's ``HashingVectorizer`` uses 2**20 for all features).
BIGRAM_BINS = 2**18
#: Hash buckets of the tokens' character n-grams.
CHAR_BINS = 2**18


def char_gram_table(tokens: list[str], bins: int = CHAR_BINS) -> np.ndarray:
    """``(len(tokens), most n-grams)`` int32: each token's distinct character 2-5-grams hashed (CRC-32) into
    ``bins``, padded with -1. ``##`` marks a WordPiece continuing a word (no space in front)."""
    import zlib

    rows = []
    for token in tokens:
        body = (token[2:] if token.startswith("##") else " " + token) + " "
        grams = sorted({body[i:i + n] for n in range(2, 6) for i in range(len(body) - n + 1)}) if token else []
        rows.append([zlib.crc32(g.encode("utf-8")) % bins for g in grams])
    table = np.full((len(rows), max(map(len, rows), default=0) or 1), -1, np.int32)
    for i, row in enumerate(rows):
        table[i, :len(row)] = row
    return table


def bag_keys(token_ids: np.ndarray, padding_mask: np.ndarray, vocabulary_size: int,
             bigram_bins: int = BIGRAM_BINS, chars: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, features)``: one entry per token, per neighbouring pair and per character n-gram (with a
    :func:`char_gram_table` ``chars``) of each text, as :class:`TokenBag` counts them (NumPy, for fitting)."""
    ids = np.asarray(token_ids).astype(np.int64) % vocabulary_size
    mask = np.asarray(padding_mask).astype(bool)
    rows = np.broadcast_to(np.arange(len(ids), dtype=np.int64)[:, None], ids.shape)
    pairs = vocabulary_size + (ids[:, :-1] * vocabulary_size + ids[:, 1:]) % bigram_bins
    both = mask[:, :-1] & mask[:, 1:]
    text, gram = [rows[mask], rows[:, :-1][both]], [ids[mask], pairs[both]]
    if chars is not None:
        grams = chars[ids[mask]]
        valid = grams >= 0
        text.append(np.broadcast_to(rows[mask][:, None], grams.shape)[valid])
        gram.append(vocabulary_size + bigram_bins + grams[valid].astype(np.int64))
    return np.concatenate(text), np.concatenate(gram)


@keras.saving.register_keras_serializable(package="finetune")
class TokenBag(keras.layers.Layer):
    """Class probabilities of a linear model on TF-IDF token 1-2-grams (see the module docstring).

    Args:
        vocabulary_size: Token ids are taken modulo this (the encoder's vocabulary).
        units: 1 (a sigmoid: two classes) or the number of classes (a softmax).
        bigram_bins: Hash buckets of the token pairs.
        char_bins: Hash buckets of the tokens' character n-grams (0: none).
        char_grams: Columns of the :func:`char_gram_table` it holds (its ``char_grams`` weight).
    Call it on ``[token_ids, padding_mask]``; its weights (``idf``, ``kernel``, ``bias``, ``char_grams``) are
    not trainable.
    """

    def __init__(self, vocabulary_size: int, units: int, bigram_bins: int = BIGRAM_BINS, char_bins: int = 0,
                 char_grams: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size, self.units, self.bigram_bins = int(vocabulary_size), int(units), int(bigram_bins)
        self.char_bins, self.char_grams = int(char_bins), int(char_grams)
        size = self.vocabulary_size + self.bigram_bins + self.char_bins
        self.idf = self.add_weight(shape=(size,), initializer="ones", trainable=False, name="idf")
        self.kernel = self.add_weight(shape=(size, self.units), initializer="zeros", trainable=False, name="kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", trainable=False, name="bias")
        self.chars = (self.add_weight(shape=(self.vocabulary_size, self.char_grams), initializer="zeros",
                                      dtype="int32", trainable=False, name="char_grams") if self.char_bins else None)
        self.built = True

    def call(self, inputs):
        import tensorflow as tf

        token_ids, padding_mask = inputs
        vocab = self.vocabulary_size
        size = vocab + self.bigram_bins + self.char_bins
        ids = tf.math.floormod(tf.cast(token_ids, tf.int64), vocab)
        mask = tf.cast(padding_mask, tf.bool)
        batch = tf.shape(ids)[0]
        rows = tf.broadcast_to(tf.range(tf.cast(batch, tf.int64))[:, None], tf.shape(ids))
        pairs = vocab + tf.math.floormod(ids[:, :-1] * vocab + ids[:, 1:], self.bigram_bins)
        both = mask[:, :-1] & mask[:, 1:]
        text = [tf.boolean_mask(rows, mask), tf.boolean_mask(rows[:, :-1], both)]
        gram = [tf.boolean_mask(ids, mask), tf.boolean_mask(pairs, both)]
        if self.chars is not None:
            grams = tf.gather(tf.convert_to_tensor(self.chars), tf.boolean_mask(ids, mask))
            valid = grams >= 0
            text.append(tf.boolean_mask(tf.broadcast_to(text[0][:, None], tf.shape(grams, out_type=tf.int64)), valid))
            gram.append(vocab + self.bigram_bins + tf.cast(tf.boolean_mask(grams, valid), tf.int64))
        text, gram = tf.concat(text, 0), tf.concat(gram, 0)
        unique, index = tf.unique(text * size + gram)
        found = tf.size(unique)
        counts = tf.math.unsorted_segment_sum(tf.ones_like(index), index, found)
        # each unique key's text from int32 sums (TFLite has no int64 division, ONNX no segment max), then its n-gram
        row = tf.math.unsorted_segment_sum(tf.cast(text, tf.int32), index, found) // counts
        feature = unique - tf.cast(row, tf.int64) * size
        value = (1.0 + tf.math.log(tf.cast(counts, tf.float32))) * tf.gather(tf.convert_to_tensor(self.idf), feature)
        norm = tf.math.unsorted_segment_sum(value * value, row, batch)
        logits = tf.math.unsorted_segment_sum(value[:, None] * tf.gather(tf.convert_to_tensor(self.kernel), feature),
                                              row, batch)
        logits = logits * tf.math.rsqrt(tf.maximum(norm, 1e-12))[:, None] + self.bias
        return tf.sigmoid(logits) if self.units == 1 else tf.nn.softmax(logits)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.units)

    def get_config(self):
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size, "units": self.units,
                "bigram_bins": self.bigram_bins, "char_bins": self.char_bins, "char_grams": self.char_grams}


@keras.saving.register_keras_serializable(package="finetune")
class ProbabilityBlend(keras.layers.Layer):
    """``weight * first + (1 - weight) * second``: two models' probabilities averaged.

    Example:
        >>> float(ProbabilityBlend(0.25)([np.ones((1, 1)), np.zeros((1, 1))])[0, 0])
        0.25
    """

    def __init__(self, weight: float, **kwargs):
        super().__init__(**kwargs)
        self.weight = float(weight)

    def call(self, inputs):
        first, second = inputs
        return self.weight * first + (1.0 - self.weight) * second

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


def vocabulary_size(model: keras.Model) -> int:
    """The largest ``Embedding`` input size inside ``model``: its token vocabulary (BERT's or GloVe's)."""
    from .graph import walk_layers

    sizes = [layer.input_dim for layer in walk_layers(model) if isinstance(layer, keras.layers.Embedding)]
    if not sizes:
        raise ValueError(f"{model.name} has no Embedding layer: no token vocabulary to count")
    return int(max(sizes))


def with_token_bag(model: keras.Model, bag: TokenBag, weight: float) -> keras.Model:
    """``model`` with ``bag`` beside it on the same token inputs, their probabilities blended (``weight`` on the
    network). The layers are ``model``'s own: nothing is copied."""
    inputs = model.input
    blended = ProbabilityBlend(weight, name="bag_blend")([model.output, bag([inputs["token_ids"],
                                                                               inputs["padding_mask"]])])
    return keras.Model(inputs, blended, name=model.name)


def token_bag_of(model: keras.Model) -> TokenBag | None:
    """The :class:`TokenBag` blended into ``model``, if any."""
    return next((layer for layer in model.layers if isinstance(layer, TokenBag)), None)
