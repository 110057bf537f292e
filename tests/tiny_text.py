"""A tiny BERT (2 layers, hidden 16) with a 60-word vocabulary, saved as a keras-hub preset folder: text tests train
in seconds, offline, through the same code path as a real checkpoint folder."""

from __future__ import annotations

from pathlib import Path

WORDS = ("good great tasty fresh lovely fine nice yummy perfect excellent bad awful stale bland nasty poor "
         "horrible rotten gross terrible tea coffee food snack cookie bread soup taste flavor price box the a "
         "it was is and very not this my of").split()
POSITIVE, NEGATIVE = WORDS[:10], WORDS[10:20]


def make_tiny_bert(folder: Path) -> Path:
    """Write the preset into ``folder`` (once) and return it."""
    import keras
    import keras_hub

    if (folder / "config.json").exists():
        return folder
    keras.utils.set_random_seed(0)  # the same tiny network in every session
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "!", ".", ","]
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(vocabulary), num_layers=2, num_heads=2,
                                             hidden_dim=16, intermediate_dim=32, max_sequence_length=64,
                                             dropout=0.0, name="tiny_bert")
    folder.mkdir(parents=True, exist_ok=True)
    backbone.save_to_preset(str(folder))
    tokenizer.save_to_preset(str(folder))
    return folder


def reviews(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` synthetic reviews whose sentiment words tell the label."""
    import numpy as np

    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        good = i % 2 == 0
        words = list(rng.choice(POSITIVE if good else NEGATIVE, 2)) + list(rng.choice(WORDS[20:], 4))
        rng.shuffle(words)
        texts.append(" ".join(words) + ("!" if i % 3 == 0 else "."))
        labels.append("great" if good else "other")
    return texts, labels


def make_tiny_glove(path: Path) -> Path:
    """A GloVe-format text file of 8-dimensional vectors for the first 30 words: dimension 0 is +1 for the positive
    words, -1 for the negative ones and 0 for the rest (so a model can learn sentiment from it quickly)."""
    import numpy as np

    rng = np.random.default_rng(0)
    lines = []
    for i, word in enumerate(WORDS[:30]):
        vector = rng.normal(0, 0.3, 8)
        vector[0] = 1.0 if i < 10 else -1.0 if i < 20 else 0.0
        lines.append(word + " " + " ".join(f"{v:.4f}" for v in vector))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
