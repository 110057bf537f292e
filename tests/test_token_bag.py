"""The bag-of-words blend of text runs: the in-graph TF-IDF equals the fitted one, val picks the share, runs keep it."""

import numpy as np
import pytest
from click.testing import CliRunner

from finetune import TrainConfig, fine_tune, load_run, train
from finetune.cli import main
from finetune.errors import ConfigError
from finetune.models.token_bag import TokenBag, token_bag_of
from finetune.training.bag_blend import _counts, _tfidf, fit_token_bag, log_losses
from tiny_text import make_tiny_bert, reviews

FAST = dict(head_epochs=20, tune_epochs=1, batch_size=8, lr=0.05, patience=20)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return str(make_tiny_bert(tmp_path_factory.mktemp("tiny_bert")))


def _token_batch(rng, n=40, length=12, vocab=50):
    ids = rng.integers(1, vocab, (n, length))
    ids[:, :3] = rng.integers(1, 4, (n, 3))  # repeated tokens: counts above 1
    lengths = rng.integers(2, length + 1, n)
    mask = np.arange(length)[None, :] < lengths[:, None]
    return {"token_ids": np.where(mask, ids, 0).astype(np.int32), "padding_mask": mask}


TOKENS = ["[PAD]", "[CLS]", "[SEP]"] + [f"{'##' if i % 4 == 0 else ''}{w}" for i, w in
                                         enumerate(f"tea{'s' * (i % 3)}café{i}" for i in range(47))]


@pytest.mark.parametrize("classes,tokens", [(2, None), (3, None), (2, TOKENS)])
def test_the_layer_computes_the_fitted_logistic_regression(classes, tokens):
    """TokenBag's TensorFlow features (unique, segment sums, the character n-gram table) give scikit-learn's
    probabilities on the same TF-IDF, and survive a save and load."""
    import keras

    from finetune.models.token_bag import char_gram_table

    rng = np.random.default_rng(0)
    inputs = _token_batch(rng)
    labels = inputs["token_ids"][:, 3] % classes  # learnable from one token
    fitted = fit_token_bag(inputs, labels, classes, vocabulary_size=50, bigram_bins=64, tokens=tokens, char_bins=32)
    layer = fitted.layer
    idf, kernel, bias, *table = layer.get_weights()
    chars = char_gram_table(tokens, 32) if tokens else None
    if tokens:
        np.testing.assert_array_equal(table[0], chars)
        assert TOKENS[3] == "##teacafé0" and (chars[3] >= 0).sum() == 8 + 7 + 6 + 5  # the n-grams of "teacafé0 "
    logits = _tfidf(_counts(inputs, 50, 64, chars, 32 if tokens else 0), idf) @ kernel + bias
    expected = 1 / (1 + np.exp(-logits)) if classes == 2 else np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    got = np.asarray(layer([inputs["token_ids"], inputs["padding_mask"]]))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got.shape == (40, 1 if classes == 2 else 3) and fitted.C in (0.3, 1, 3, 10, 30, 100)
    # padding is ignored: the same texts padded further give the same probabilities
    wider = {k: np.pad(v, ((0, 0), (0, 5))) for k, v in inputs.items()}
    np.testing.assert_allclose(layer([wider["token_ids"], wider["padding_mask"]]), got, atol=1e-6)
    ids = keras.Input((None,), dtype="int32"), keras.Input((None,), dtype="bool")
    model = keras.Model(list(ids), layer(list(ids)))
    path = f"/tmp/token_bag_{classes}_{bool(tokens)}_{rng.integers(1 << 30)}.keras"
    model.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_allclose(again([inputs["token_ids"], inputs["padding_mask"]]), got, atol=1e-6)


def test_the_val_log_losses_of_the_parts_and_the_blend():
    labels = np.array([0, 1, 0, 1])
    half_right = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.1, 0.9]])  # wrong on text 1
    other_half = np.array([[0.9, 0.1], [0.1, 0.9], [0.1, 0.9], [0.1, 0.9]])  # wrong on text 2
    losses = log_losses(half_right, other_half, labels)
    assert losses["blend"] < min(losses["network"], losses["bag"])
    assert log_losses(half_right, half_right, labels, share=0.3)["blend"] == pytest.approx(losses["network"])


def test_a_text_run_blends_the_bag_and_reloads_it(tiny_bert, tmp_path):
    """The bag is fitted on the training texts and blended in; the run folder's model (plain keras.Model, same
    token inputs) predicts as the trained one, and the raw-string SavedModel carries the bag's ops."""
    from finetune.export import export

    texts, labels = reviews(100)
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\n" + "\n".join(f"{t},{y}" for t, y in zip(texts, labels)) + "\n")
    run_dir, result, _ = train(TrainConfig(data=str(path), backbone=tiny_bert, **FAST, output=str(tmp_path / "runs"),
                                           name="bag"), verbose=0)
    assert result.config.bag_blend and token_bag_of(result.model) is not None
    note = next(n for n in result.notes if n.startswith("bag-of-words blend: TF-IDF"))
    assert "half and half" in note and "val log loss network" in note and result.timings["bag"] > 0
    inputs = result.spec.tokenize(["great tasty tea", "awful stale bread"])
    alone = token_bag_of(result.model)([inputs["token_ids"], inputs["padding_mask"]])
    assert np.asarray(alone)[:, 0] @ [-1, 1] > 0.3  # p(other): the bag alone tells the sentiment words apart
    run = load_run(run_dir)
    assert token_bag_of(run.model) is not None
    probe = ["great tasty tea", "awful stale bread", "the cookie was not very good"]
    np.testing.assert_allclose(run.predict(probe), result.predict(probe), atol=1e-5)
    assert "bag-of-words blend" in (run_dir / "report.md").read_text()
    saved = export(run_dir, "savedmodel", images=probe)  # the bag's ops inside the raw-string graph
    assert saved.parity.max_abs_diff < 1e-5, saved.summary()
    for format in ("tflite", "onnx"):  # TFLite builtins only; ONNX through tf2onnx, run by onnxruntime
        out = CliRunner().invoke(main, ["export", str(run_dir), "--format", format])
        assert out.exit_code == 0 and "top-1 100.0%" in out.output, out.output


def test_no_bag_blend_keeps_the_network_alone(tiny_bert):
    texts, labels = reviews(60)
    result = fine_tune((texts, labels), backbone=tiny_bert, **FAST, bag_blend=False, verbose=0)
    assert token_bag_of(result.model) is None and "bag" not in result.timings
    assert not any(n.startswith("bag-of-words blend") for n in result.notes)


def test_the_bag_blend_option_is_checked_against_the_task(tiny_bert, image_folder):
    texts, labels = reviews(40)
    with pytest.raises(ConfigError, match="bag_blend: a bag of words is for text tasks"):
        fine_tune(image_folder, bag_blend=True, head_epochs=1, tune_epochs=0, verbose=0)
    with pytest.raises(ConfigError, match="bag_blend: .* not with --decision balanced"):
        fine_tune((texts, labels), backbone=tiny_bert, bag_blend=True, decision="balanced", verbose=0)
    multi = [f"{y};fresh" if i % 3 == 0 else y for i, y in enumerate(labels)]
    result = fine_tune((texts, multi), backbone=tiny_bert, **{**FAST, "head_epochs": 2},
                       verbose=0)
    assert token_bag_of(result.model) is None
    assert "no bag-of-words blend: not with a task with several labels per text" in result.notes


def test_without_scikit_learn_or_time_the_network_stays_alone(tiny_bert, monkeypatch):
    """A missing scikit-learn is found before any work (a note, or an error naming the install when asked for);
    a spent --time-budget skips the fit: a finished run is never lost to the blend."""
    import importlib.util

    texts, labels = reviews(60)
    result = fine_tune((texts, labels), backbone=tiny_bert, **FAST, time_budget=1e-4, verbose=0)
    assert token_bag_of(result.model) is None
    assert "bag-of-words blend: the time budget is spent; not fitted" in result.notes
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a))
    with pytest.raises(ConfigError, match="pip install scikit-learn"):
        fine_tune((texts, labels), backbone=tiny_bert, bag_blend=True, verbose=0)
    result = fine_tune((texts, labels), backbone=tiny_bert, **{**FAST, "tune_epochs": 0}, verbose=0)
    assert token_bag_of(result.model) is None and any("scikit-learn, which is not installed" in n for n in result.notes)
