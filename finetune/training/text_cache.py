"""Phase 2 of a text run on cached hidden states: the frozen bottom of the encoder runs once per text.

The encoder is cut before its first unfrozen transformer layer. Each text's hidden states there (its own
tokens only, padding dropped: ragged storage) are computed once, in inference mode as the live model runs
its encoder, so cached and live phase 2 see the same numbers. Phase 1's pooled features come from the
same cache (the frozen top runs on it), and phase 2 trains only the top layers on length-bucketed batches
padded to their longest text. A family is cut only where every transformer layer takes the previous
layer's states and the padding mask alone (BERT, DistilBERT, RoBERTa); layers that need more (DeBERTa's
relative embeddings) leave phase 2 live.

Example:
    >>> cached = CachedStates(np.zeros((5, 4), np.float32), np.array([2, 3]), np.array([0, 1]))
    >>> [s.shape for s in cached.per_text()]
    [(2, 4), (3, 4)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from ..data.text import bucketed_batches, batch_order
from ..models.text_backbones import input_names


@dataclass
class CachedStates:
    """One split's hidden states at the cut.

    Attributes:
        states: ``(total tokens, width)``: each text's tokens, back to back in the split's order.
        lengths: Tokens of each text (its padding mask's sum).
        labels: The split's labels.
        weights: Class weights per text, or ``None``.
    """

    states: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    weights: np.ndarray | None = None

    def per_text(self) -> list[np.ndarray]:
        return np.split(self.states, np.cumsum(self.lengths)[:-1])

    @property
    def nbytes(self) -> int:
        return int(self.states.nbytes)


@dataclass
class TextCut:
    """An encoder cut before ``layer``: ``bottom`` (token inputs -> states there) and the unfrozen ``top``."""

    layer: str
    bottom: keras.Model
    top: list
    width: int

    def describe(self, n_texts: int, total_tokens: int) -> str:
        return (f"phase 2 trained on cached hidden states before {self.layer} ({self.width} per token, "
                f"{total_tokens:,} tokens of {n_texts} training texts, padding dropped)")

    def run_top(self, states, mask):
        """The unfrozen layers in inference mode, as the live model runs its encoder."""
        for layer in self.top:
            states = layer(states, padding_mask=mask, training=False)
        return states

    def top_model(self, parts) -> keras.Model:
        """Cached states and their padding mask -> the top layers -> masked mean -> the head."""
        states = keras.Input((None, self.width), name="states")
        mask = keras.Input((None,), dtype="bool", name="padding_mask")
        pooled = parts.pool(self.run_top(states, mask), mask=mask)
        return keras.Model({"states": states, "padding_mask": mask}, parts.classifier(pooled), name="finetune_text_top")

    def compute(self, spec, texts, labels, weights=None, *, batch_size: int = 32, verbose: int = 0) -> CachedStates:
        """The states at the cut of ``texts`` (tokenized by ``spec``), in length-ordered batches."""
        import tensorflow as tf

        inputs = spec.tokenize(texts)
        lengths = inputs["padding_mask"].sum(axis=1).astype(np.int64)
        names = [n for n in inputs if n in input_names(self.bottom)]
        signature = {n: tf.TensorSpec([None, None], tf.as_dtype(inputs[n].dtype)) for n in names}
        bottom = tf.function(lambda x: self.bottom(x, training=False), input_signature=[signature])
        rows: list[Any] = [None] * len(texts)
        batches = batch_order(lengths, batch_size, None)
        progress = keras.utils.Progbar(len(batches), unit_name="batch") if verbose else None
        for i, indices in enumerate(batches):
            longest = int(lengths[indices].max())
            out = bottom({n: tf.constant(inputs[n][indices, :longest]) for n in names}).numpy()
            for j, row in zip(indices, out):
                rows[j] = row[:lengths[j]]
            if progress is not None:
                progress.update(i + 1)
        width = self.width
        states = np.concatenate(rows) if rows else np.zeros((0, width), np.float32)
        return CachedStates(states.astype(np.float32), lengths, np.asarray(labels), weights)

    def pooled(self, parts, cached: CachedStates, batch_size: int = 64) -> np.ndarray:
        """Phase 1's features from the cache: the frozen top and the masked mean, one row per text."""
        import tensorflow as tf

        pool = tf.function(lambda s, m: parts.pool(self.run_top(s, m), mask=m),
                           input_signature=[tf.TensorSpec([None, None, self.width]), tf.TensorSpec([None, None], tf.bool)])
        texts, out = cached.per_text(), np.zeros((len(cached.lengths), self.width), np.float32)
        for indices in batch_order(cached.lengths, batch_size, None):
            states, mask = _padded([texts[i] for i in indices])
            out[indices] = pool(tf.constant(states), tf.constant(mask)).numpy()
        return out


def text_cut(encoder: keras.Model, first_unfrozen: int) -> TextCut | str:
    """The cut of ``encoder`` before ``encoder.layers[first_unfrozen]``, or why there is none (a sentence)."""
    layers = list(getattr(encoder, "transformer_layers", []))
    names = [layer.name for layer in layers]
    first = encoder.layers[first_unfrozen].name
    if first not in names:
        return f"the unfreeze point {first} is not a transformer layer"
    index = names.index(first)
    if index == 0:
        return "every transformer layer is unfrozen: nothing frozen to cache"
    mask_input = _input_tensor(encoder, "padding_mask")
    for layer in layers:
        nodes = getattr(layer, "_inbound_nodes", [])
        if len(nodes) != 1:
            return f"{layer.name} is called {len(nodes)} times in the encoder"
        kwargs = dict(nodes[0].arguments.kwargs)
        if set(kwargs) - {"padding_mask", "training"} or kwargs.get("padding_mask") is not mask_input:
            return f"{layer.name} takes more than the states and the padding mask ({', '.join(sorted(kwargs))})"
    output = encoder.output["sequence_output"] if isinstance(encoder.output, dict) else None
    if output is None or output is not layers[-1].output:
        return "the encoder's sequence output is not its last transformer layer's"
    bottom = keras.Model(encoder.input, layers[index - 1].output, name=f"{encoder.name}_bottom")
    return TextCut(first, bottom, layers[index:], int(layers[-1].output.shape[-1]))


def state_batches(cached: CachedStates, *, batch_size: int, seed: int | None, epochs: tuple[int, int] | None = None):
    """``({"states", "padding_mask"}, labels[, weights])`` batches from the cache, bucketed by length
    (seeded per epoch as live token batches are, so ``--resume`` replays them), each padded to its longest text."""
    import tensorflow as tf

    from .inputs import _host_tensor

    ragged = tf.RaggedTensor.from_row_lengths(_host_tensor(cached.states), cached.lengths)
    extra = [tf.constant(cached.labels)] + ([tf.constant(cached.weights)] if cached.weights is not None else [])

    def gather(indices):
        picked = tf.gather(ragged, indices)
        mask = tf.sequence_mask(picked.row_lengths())
        return ({"states": picked.to_tensor(), "padding_mask": mask}, *(tf.gather(t, indices) for t in extra))

    return bucketed_batches(cached.lengths, gather, batch_size=batch_size, seed=seed, epochs=epochs)


def _padded(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    longest = max(len(r) for r in rows)
    states = np.zeros((len(rows), longest, rows[0].shape[-1]), np.float32)
    mask = np.zeros((len(rows), longest), bool)
    for i, row in enumerate(rows):
        states[i, :len(row)], mask[i, :len(row)] = row, True
    return states, mask


def _input_tensor(encoder: keras.Model, name: str):
    return encoder.input.get(name) if isinstance(encoder.input, dict) else None
