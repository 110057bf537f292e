"""Word tokens as GloVe was trained on them, and a task's word vocabulary.

GloVe 6B's vectors come from lower-cased Wikipedia and Gigaword text split by the Stanford tokenizer:
punctuation marks are tokens of their own and clitics are split off (``don't`` -> ``do n't``,
``tea's`` -> ``tea 's``); hyphenated words and numbers stay whole. Ids: 0 pads, 1 is any word outside
the vocabulary, the vocabulary's words follow from 2.

Example:
    >>> word_tokens("I don't like the tea's taste -- 4.5 stars, well-priced!")
    ['i', 'do', "n't", 'like', 'the', 'tea', "'s", 'taste', '--', '4.5', 'stars', ',', 'well-priced', '!']
    >>> encode_words(["great tea", ""], ("tea", "great"), 4)["token_ids"].tolist()
    [[3, 2, 0, 0], [1, 0, 0, 0]]
"""

from __future__ import annotations

import collections
import re
from typing import Iterable, Sequence

import numpy as np

PAD, OOV = 0, 1


def patterns(word: str = r"\w", word_chars: str = r"\w", digit: str = r"\d") -> tuple[str, str]:
    """``(clitic, token)`` regular expressions; the defaults are Python's Unicode classes, and an exported graph
    passes RE2's spelling of the same classes (``[\\p{L}\\p{N}_]``...)."""
    clitic = rf"({word})(n't|'s|'re|'ve|'m|'ll|'d)\b"
    token = (rf"n't|'(?:s|re|ve|m|ll|d)\b|{digit}+(?:[.,]{digit}+)*|{word}+(?:[-']{word}+)*|-{{2,}}|\.{{2,}}"
             rf"|[^{word_chars}\s]")
    return clitic, token


_CLITIC, _TOKEN = (re.compile(p) for p in patterns())


def uses_words(source: str) -> bool:
    """Whether a text backbone named ``source`` reads word tokens: GloVe vectors (``glove_6b_50d``, ``glove:PATH``)."""
    return source.startswith("glove")


def word_tokens(text: str) -> list[str]:
    """``text``'s GloVe tokens: lower case, punctuation and clitics split."""
    return _TOKEN.findall(_CLITIC.sub(r"\1 \2", text.lower()))


def vocabulary_of(texts: Iterable[str], limit: int) -> tuple[str, ...]:
    """The ``limit`` most frequent words of ``texts`` (ties in alphabetical order)."""
    counts = collections.Counter(token for text in texts for token in word_tokens(text))
    return tuple(word for word, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit])


def encode_words(texts: Sequence[str], vocabulary: Sequence[str], sequence_length: int) -> dict[str, np.ndarray]:
    """``{"token_ids", "padding_mask"}`` of shape (N, sequence_length), texts cut to their first words. A text
    without a word is one out-of-vocabulary token (pooling over nothing is undefined)."""
    index = {word: i + 2 for i, word in enumerate(vocabulary)}
    ids = np.zeros((len(texts), sequence_length), np.int32)
    for row, text in enumerate(texts):
        tokens = [index.get(token, OOV) for token in word_tokens(text)[:sequence_length]] or [OOV]
        ids[row, :len(tokens)] = tokens
    return {"token_ids": ids, "padding_mask": ids != PAD}
