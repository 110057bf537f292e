"""Text recipe choices scored on held-out *training* reviews: the official test set is never read.

Draw d of N reviews is ``bench/text_accuracy.py``'s draw (``train_test_split(stratify=label,
random_state=d)`` of the 4,000 training reviews). Each configuration trains on those N (its own 15%
validation split carved from them, as the benchmark does) and is scored on ``--outside`` reviews of the
4,000 that are *not* in the draw (a stratified sample, seed ``100 + d``): a held-out set several times
larger than a run's validation split, so a choice is made on train data with a fraction of the noise.
The TF-IDF baseline is fitted on the same N and scored on the same reviews, and every configuration is
also scored as a 50/50 probability blend with it (the blend lever in bench/README.md, Text). Two cells
train no network: ``wordpiece`` (logistic regression on TF-IDF of the MiniLM WordPiece 1-2-grams, C by
5-fold CV) and ``wordpiece_chars`` (the same plus each WordPiece's character 2-5-grams): what a bag inside
the Keras model can compute from its token inputs. ``wordbag`` and ``wordbag512`` merge a text's first 256 /
512 WordPieces back into words and fit the TF-IDF baseline's features on them (what that bag lacks against TF-IDF).

Probabilities are kept in ``bench/out/heldout/`` (one ``.npz`` per cell) so later summaries reuse them.

    HF_HUB_OFFLINE=1 flock /tmp/finetune-cpu.lock .venv/bin/python bench/text_heldout.py --n 1000 --draw 0 \\
        --config default '{}' --config four '{"unfreeze_blocks": 4}'
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

_START = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import child_main, in_child  # noqa: E402
from bench.text_accuracy import draw_subset, train_and_predict  # noqa: E402
from bench.text_data import DEST, read_split  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "heldout"


def _data(n: int, draw: int, outside: int):
    from sklearn.model_selection import train_test_split

    texts, labels = read_split("train", str(DEST))
    inside = draw_subset(labels, n, draw)
    rest = sorted(set(range(len(labels))) - set(inside))
    if outside < len(rest):
        rest, _ = train_test_split(rest, train_size=outside, stratify=[labels[i] for i in rest],
                                   random_state=100 + draw)
    pick = lambda rows: ([texts[i] for i in rows], [labels[i] for i in rows])  # noqa: E731
    return pick(inside), pick(rest)


def measure(name: str, overrides: str, n: int, draw: int, outside: int) -> dict[str, Any]:
    import numpy as np

    (train_texts, train_labels), (held_texts, held_labels) = _data(n, draw, outside)
    path = OUT / f"{name}_n{n}_d{draw}.npz"
    if name == "tfidf":
        from finetune.evaluation.text_baseline import tfidf_baseline

        result = tfidf_baseline(train_texts, train_labels, held_texts, held_labels)
        probs, classes, extra = result.probabilities, list(result.classes), {"C": result.C}
    elif name in ("wordpiece", "wordpiece_chars"):
        probs, classes, extra = _wordpiece_bag(train_texts, train_labels, held_texts, chars=name.endswith("chars"))
    elif name.startswith("wordbag"):  # wordbag, wordbag512: the sequence cap after the name
        probs, classes, extra = _merged_word_bag(train_texts, train_labels, held_texts, int(name[7:] or 256))
    else:
        probs, classes, _, result = train_and_predict(train_texts, train_labels, held_texts, draw,
                                                      json.loads(overrides), prefix="text-heldout-")
        best = min((r["val_loss"] for r in result.history if r.get("phase") == result.kept_phase), default=None)
        extra = {"kept": result.kept_phase, "best_val_loss": best,
                 "timings": {k: round(v, 1) for k, v in result.timings.items()}}
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(path, probs=probs, classes=np.array(classes), labels=np.array(held_labels))
    return {"name": name, "n": n, "draw": draw, "wall_s": round(time.perf_counter() - _START, 1), **extra}


def _wordpiece_bag(train_texts, train_labels, held_texts, chars=False):
    """Logistic regression on TF-IDF of the model's own WordPiece ids (1-2-grams, bigrams hashed), C by CV: what a
    bag-of-words branch inside the Keras model could compute from its token inputs."""
    import numpy as np
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    from finetune.data.text import TextSpec
    from finetune.models.token_bag import char_gram_table

    spec = TextSpec(tokenizer="minilm_l6", sequence_length=256)
    vocab, bins = 30522, 2**18
    table = char_gram_table(spec.token_strings(), bins) if chars else None  # the product's own table

    def counts(texts):
        inputs = spec.tokenize(texts)
        ids, mask = inputs["token_ids"].astype(np.int64), inputs["padding_mask"].astype(bool)
        rows, cols = [], []
        for r, (row, m) in enumerate(zip(ids, mask)):
            tokens = row[m][1:-1]
            grams = list(tokens) + [vocab + (a * vocab + b) % bins for a, b in zip(tokens[:-1], tokens[1:])]
            if table is not None:
                grams += [vocab + bins + int(g) for t in tokens for g in table[t] if g >= 0]
            rows += [r] * len(grams)
            cols += grams
        return sparse.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(texts), vocab + 2 * bins))

    tfidf = TfidfTransformer(sublinear_tf=True)
    x = tfidf.fit_transform(counts(train_texts))
    search = GridSearchCV(LogisticRegression(max_iter=2000), {"C": [0.3, 1, 3, 10, 30, 100]}, cv=5)
    search.fit(x, train_labels)
    probs = search.predict_proba(tfidf.transform(counts(held_texts)))
    return probs, [str(c) for c in search.classes_], {"C": search.best_params_["C"]}


def _merged_word_bag(train_texts, train_labels, held_texts, cap: int):
    """TF-IDF (word 1-2-grams + char_wb 2-5-grams) + logistic regression (C by CV on log loss) on the texts as the
    model sees them: its first ``cap`` WordPieces, merged back into words (``##`` pieces joined)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_union

    from finetune.data.text import TextSpec

    spec = TextSpec(tokenizer="minilm_l6", sequence_length=cap)
    vocab = spec.token_strings()

    def words(texts):
        inputs, out = spec.tokenize(texts), []
        for row, mask in zip(inputs["token_ids"], inputs["padding_mask"]):
            merged: list[str] = []
            for piece in (vocab[t] for t in row[mask][1:-1]):
                if piece.startswith("##") and merged:
                    merged[-1] += piece[2:]
                else:
                    merged.append(piece)
            out.append(" ".join(merged))
        return out

    union = make_union(TfidfVectorizer(ngram_range=(1, 2), token_pattern=r"\S+", sublinear_tf=True),
                       TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True))
    search = GridSearchCV(LogisticRegression(max_iter=2000), {"C": [0.3, 1, 3, 10, 30, 100]}, cv=5,
                          scoring="neg_log_loss").fit(union.fit_transform(words(train_texts)), train_labels)
    probs = search.predict_proba(union.transform(words(held_texts)))
    return probs, [str(c) for c in search.classes_], {"C": search.best_params_["C"]}


def scores(name: str, n: int, draw: int, blend_with: str | None = "tfidf") -> dict[str, float]:
    """Accuracy, balanced accuracy and log loss of a kept cell, alone and blended 50/50 with ``blend_with``."""
    import numpy as np

    def load(cell):
        saved = np.load(OUT / f"{cell}_n{n}_d{draw}.npz")
        return saved["probs"], [str(c) for c in saved["classes"]], [str(x) for x in saved["labels"]]

    probs, classes, labels = load(name)
    truth = np.array([classes.index(x) for x in labels])

    def measured(p):
        predicted = p.argmax(1)
        recalls = [np.mean(predicted[truth == k] == k) for k in range(len(classes)) if np.any(truth == k)]
        loss = -np.mean(np.log(np.clip(p[np.arange(len(truth)), truth], 1e-7, 1)))
        return {"accuracy": float(np.mean(predicted == truth)), "balanced": float(np.mean(recalls)), "loss": float(loss)}

    out = measured(probs)
    if blend_with and blend_with != name and (OUT / f"{blend_with}_n{n}_d{draw}.npz").exists():
        other, other_classes, _ = load(blend_with)
        other = other[:, [other_classes.index(c) for c in classes]]
        out.update({f"blend_{k}": v for k, v in measured((probs + other) / 2).items()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--draw", type=int, default=0)
    parser.add_argument("--outside", type=int, default=1500, help="held-out training reviews outside the draw")
    parser.add_argument("--config", nargs=2, action="append", default=[], metavar=("NAME", "JSON"),
                        help="a TrainConfig override set to train (repeatable); 'tfidf' is always scored")
    parser.add_argument("--summary", action="store_true", help="only print the kept cells' scores")
    args = parser.parse_args()
    cells = [("tfidf", "{}")] + args.config
    if not args.summary:
        for name, overrides in cells:
            if (OUT / f"{name}_n{args.n}_d{args.draw}.npz").exists():
                continue
            print(json.dumps(in_child(__file__, "measure", {"name": name, "overrides": overrides, "n": args.n,
                                                            "draw": args.draw, "outside": args.outside})), flush=True)
    for name in sorted({p.name.split("_n")[0] for p in OUT.glob(f"*_n{args.n}_d{args.draw}.npz")}):
        s = scores(name, args.n, args.draw)
        blend = (f"; blended 50/50 with TF-IDF {s['blend_accuracy']:.1%} / {s['blend_balanced']:.1%} / "
                 f"{s['blend_loss']:.3f}" if "blend_accuracy" in s else "")
        print(f"N={args.n} draw {args.draw} {name:<12} accuracy {s['accuracy']:.1%} balanced {s['balanced']:.1%} "
              f"log loss {s['loss']:.3f}{blend}", flush=True)


if __name__ == "__main__":
    if not child_main({"measure": measure}):
        main()
