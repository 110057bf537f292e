"""Which words of a text moved the prediction: occlusion, one word at a time, as highlighted HTML.

Each word (all its word pieces) is taken out of the text in turn (its padding-mask positions switched
off, so attention and pooling skip it; for GloVe its id set to padding too) and the drop in the
explained class's probability is the word's score: positive, the word spoke for the class; negative,
against it. One batch holds the text and every occluded copy, so a text costs one forward pass per
word, batched. Model-agnostic: BERT-family encoders and GloVe models alike, nothing but the saved model
and its spec.

Example:
    >>> found = TokenAttribution(["great", "tea", "!"], np.array([0.4, 0.01, -0.02]), 0, np.array([0.9, 0.1]))
    >>> found.strongest(1)
    [('great', 0.4)]
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class TokenAttribution:
    """Words of one text, each with its occlusion score for class ``class_index``."""

    words: list[str]
    scores: np.ndarray
    class_index: int
    probabilities: np.ndarray

    @property
    def probability(self) -> float:
        return float(self.probabilities[self.class_index])

    def strongest(self, k: int = 5) -> list[tuple[str, float]]:
        order = np.argsort(-np.abs(self.scores))[:k]
        return [(self.words[i], round(float(self.scores[i]), 4)) for i in order]

    def to_dict(self, class_names: Sequence[str]) -> dict:
        return {"label": class_names[self.class_index], "probability": self.probability,
                "words": [{"word": w, "score": float(s)} for w, s in zip(self.words, self.scores)]}


def _words(spec, text: str, ids: np.ndarray, mask: np.ndarray) -> list[tuple[str, list[int]]]:
    """``[(word, its positions)]`` of one tokenized text: word pieces (``##ing``, or pieces without RoBERTa's
    word-start mark) joined to the word they continue; the special tokens left out."""
    positions = np.flatnonzero(mask)
    if spec.word_level:
        from ..data.words import word_tokens

        tokens = word_tokens(spec.normalize(text)) or ["(no word)"]
        return [(tokens[p], [int(p)]) for p in positions]
    from ..data.text import _packer

    tokenizer = _packer(spec.tokenizer, spec.sequence_length).tokenizer
    special = set(getattr(tokenizer, "special_token_ids", None) or [])
    pieces = [(int(p), tokenizer.id_to_token(int(ids[p]))) for p in positions if int(ids[p]) not in special]
    marked = any(piece.startswith("\u0120") for _, piece in pieces)  # byte-level BPE marks word starts
    words: list[tuple[str, list[int]]] = []
    for p, piece in pieces:
        continues = piece.startswith("##") or (marked and not piece.startswith("\u0120"))
        text = piece[2:] if piece.startswith("##") else piece.lstrip("\u0120")
        if continues and words:
            words[-1] = (words[-1][0] + text, words[-1][1] + [p])
        else:
            words.append((text, [p]))
    return words


def occlusion(model, spec, text: str, class_index: int | None = None, *, batch_size: int = 32,
              forward=None) -> TokenAttribution:
    """Occlusion scores of every word of ``text`` (cut at the spec's cap) for ``class_index`` (default: the
    predicted class). ``model`` is a text run's model; ``spec`` its :class:`~finetune.data.text.TextSpec`;
    ``forward``: ``inference_fn(model)`` when the caller already holds one (a server, traced once)."""
    from .predict import as_class_probs, inference_fn

    inputs = spec.prepare([text])
    longest = max(1, int(inputs["padding_mask"][0].sum()))
    inputs = {k: v[:, :longest] for k, v in inputs.items()}
    words = _words(spec, text, inputs["token_ids"][0], inputs["padding_mask"][0])
    copies = {k: np.repeat(v, len(words) + 1, axis=0) for k, v in inputs.items()}
    for row, (_, positions) in enumerate(words, start=1):
        copies["padding_mask"][row, positions] = False
        if spec.word_level:
            copies["token_ids"][row, positions] = 0
    forward = forward or inference_fn(model)
    probs = np.concatenate([as_class_probs(forward({k: v[i:i + batch_size] for k, v in copies.items()}))
                            for i in range(0, len(words) + 1, batch_size)])
    target = int(np.argmax(probs[0])) if class_index is None else int(class_index)
    return TokenAttribution([w for w, _ in words], probs[0, target] - probs[1:, target], target, probs[0])


def attribution_html(found: TokenAttribution, class_names: Sequence[str], title: str = "") -> str:
    """A small self-contained HTML page: the words highlighted green (for the class) or red (against it)."""
    scale = max(float(np.abs(found.scores).max()) if len(found.scores) else 0.0, 1e-6)
    spans = []
    for word, score in zip(found.words, found.scores):
        alpha = min(1.0, abs(float(score)) / scale)
        colour = f"rgba(22,163,74,{alpha:.2f})" if score > 0 else f"rgba(220,38,38,{alpha:.2f})"
        spans.append(f'<span class="w" style="background:{colour}" title="{float(score):+.3f}">{html.escape(word)}</span>')
    label = html.escape(class_names[found.class_index])
    return ("<!doctype html><meta charset='utf-8'><title>finetune explain</title><style>body{font:16px/1.9 system-ui,"
            "sans-serif;max-width:760px;margin:24px auto;padding:0 12px}.w{padding:1px 3px;border-radius:3px;"
            "margin-right:2px}</style>"
            f"<h1 style='font-size:18px'>{html.escape(title)}</h1>"
            f"<p>predicted <b>{label}</b> {found.probability:.1%}; green words spoke for it, red against "
            "(the drop in its probability when the word is left out; hover for the number)</p>"
            f"<p>{' '.join(spans)}</p>")
