"""GloVe word vectors as a text backbone: the tokenizer, the trimmed embedding, a run and its reload."""

import numpy as np
import pytest

from finetune import TrainConfig, fine_tune, load_run, train
from finetune.data.words import encode_words, vocabulary_of, word_tokens
from tiny_text import make_tiny_glove, reviews


def test_glove_tokens_split_punctuation_and_clitics():
    assert word_tokens("It's GREAT, isn't it? We'll buy 2 more...") == [
        "it", "'s", "great", ",", "is", "n't", "it", "?", "we", "'ll", "buy", "2", "more", "..."]
    assert vocabulary_of(["b a a", "c b a"], 2) == ("a", "b")
    ids = encode_words(["a b z", "b b b b b"], ("a", "b"), 3)
    assert ids["token_ids"].tolist() == [[2, 3, 1], [3, 3, 3]] and ids["padding_mask"].all()


@pytest.fixture()
def glove_file(tmp_path):
    return make_tiny_glove(tmp_path / "glove.tiny.8d.txt")


def test_a_glove_file_trains_saves_and_reloads(glove_file, tmp_path):
    from finetune.models.glove import load_vectors

    texts, labels = reviews(80)
    run_dir, result, metrics = _train_arrays(texts, labels, f"glove:{glove_file}", tmp_path)
    spec = result.spec
    assert spec.word_level and set(spec.vocabulary) <= set(w for t in texts for w in word_tokens(t))
    embedding = result.model.get_layer(result.parts.base.name).get_layer("glove_embedding")
    words, vectors = load_vectors(f"glove:{glove_file}")
    assert embedding.input_dim == len(spec.vocabulary) + 2 and vectors.shape == (30, 8)
    assert metrics["accuracy"] >= 0.8, result.phase_table()
    run = load_run(run_dir)
    probe = ["great tasty tea", "awful stale soup", "It's GREAT, isn't it? Don't buy the soup's box...", "", "zzz",
             "Café CRÈME's 4,5 € -- tasty!"]
    np.testing.assert_allclose(run.predict(probe), result.predict(probe), atol=1e-6)
    from finetune.export import export

    saved = export(run_dir, "savedmodel", images=probe)  # GloVe's word tokens and vocabulary inside the graph
    assert saved.parity.n == len(probe) and saved.parity.max_abs_diff < 1e-5, saved.summary()
    from finetune.evaluation.explain_text import occlusion

    found = occlusion(run.model, run.spec, "the great tea was tasty")  # sentiment words carry the class
    assert found.words == ["the", "great", "tea", "was", "tasty"] and run.classes[found.class_index] == "great"
    assert found.strongest(1)[0][0] == "great", found.strongest(5)
    found = occlusion(run.model, run.spec, "the tea was awful")
    assert run.classes[found.class_index] == "other" and found.strongest(1)[0][0] == "awful", found.strongest(4)


def _train_arrays(texts, labels, backbone, tmp_path):
    import csv

    path = tmp_path / "reviews.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("text", "label"), *zip(texts, labels)])
    return train(TrainConfig(data=str(path), backbone=backbone, head_epochs=30, tune_epochs=2, batch_size=16,
                             output=str(tmp_path / "runs"), name="g"), verbose=0)


def test_the_offline_glove_embedding_starts_from_glove_and_holds_only_the_task_words():
    from finetune.models.glove import load_vectors

    texts, labels = reviews(40, seed=2)
    texts[0] += " zzqxv"  # a word GloVe lacks
    result = fine_tune((texts, labels), backbone="glove_6b_50d", head_epochs=2, tune_epochs=0, verbose=0)
    vocabulary = result.spec.vocabulary
    table = result.parts.base.get_layer("glove_embedding").embeddings.numpy()
    words, vectors = load_vectors("glove_6b_50d")
    row = {w: i for i, w in enumerate(words)}
    assert table.shape == (len(vocabulary) + 2, 50) and "zzqxv" in vocabulary
    np.testing.assert_array_equal(table[2 + vocabulary.index("tasty")], vectors[row["tasty"]])
    assert not np.any(table[0]) and np.any(table[2 + vocabulary.index("zzqxv")])
    assert any("words of the training and validation texts" in n for n in result.notes)
