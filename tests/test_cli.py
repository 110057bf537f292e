import csv

import pytest
from click.testing import CliRunner

from finetune.cli import main

TINY_FLAGS = ["--backbone", "tiny_cnn", "--weights", "none", "--image-size", "32", "--batch-size", "8",
              "--augment", "none", "--lr", "0.1", "--schedule", "constant", "--warmup-epochs", "0", "-q"]


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run folder, trained once with the CLI, for the commands that read it."""
    from conftest import make_image_folder

    root = tmp_path_factory.mktemp("cli")
    image_folder = make_image_folder(root / "data")
    with pytest.MonkeyPatch.context() as mp:  # the autouse cache fixture is function-scoped
        mp.setenv("FINETUNE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
        code, out = run("train", image_folder, *TINY_FLAGS, "--head-epochs", 3, "--tune-epochs", 1,
                        "--hidden", "16", "--output", root / "runs", "--name", "e2e")
    return code, out, image_folder, root / "runs" / "e2e"


@pytest.fixture
def run_dir(trained):
    code, out, _, run_dir = trained
    if code != 0:
        pytest.fail(f"the shared training run failed (see test_train_writes_the_run_folder): {out}")
    return run_dir


def test_train_writes_the_run_folder(trained):
    code, out, _, run_dir = trained
    assert code == 0, out
    assert "test accuracy:" in out and "report:" in out
    assert (run_dir / "model.keras").exists()
    lines = out.splitlines()  # -q: only the final lines, starting with the phase table
    assert lines[0].startswith("phase  epochs") and len(lines) <= 8 and "\x1b" not in out, out


def test_report_shows_the_worst_mistakes(run_dir):
    assert (run_dir / "worst.png").exists() and "worst.png" in (run_dir / "report.md").read_text()


def test_evaluate_with_tta(run_dir):
    code, out = run("evaluate", run_dir, "--tta")
    assert code == 0, out
    assert "accuracy:" in out and "confusion matrix" in out and "class_a" in out and "TTA accuracy:" in out


def test_export_tflite(run_dir, tmp_path):
    code, out = run("export", run_dir, "--format", "tflite", "--out", tmp_path / "m.tflite")
    assert code == 0, out
    assert (tmp_path / "m.tflite").exists() and "top-1" in out.lower()


def test_predict_one_image_top_k(trained, run_dir):
    image = next((trained[2] / "class_b").iterdir())
    code, out = run("predict", run_dir, image, "-k", 2)
    assert code == 0, out
    assert str(image) in out and out.count("%") == 2


def test_predict_a_folder_to_csv(trained, run_dir, tmp_path):
    code, out = run("predict", run_dir, trained[2] / "class_a", "--csv", tmp_path / "p.csv")
    assert code == 0, out
    rows = list(csv.reader(open(tmp_path / "p.csv")))
    assert rows[0][:3] == ["path", "class_1", "prob_1"] and len(rows) == 13


def test_predict_names_bad_files_keeps_order_and_matches_the_pil_path(trained, run_dir, tmp_path):
    import numpy as np

    from finetune.evaluation.predict import predict_files
    from finetune.runs import load_run

    good = sorted((trained[2] / "class_c").iterdir())[:3]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (tmp_path / "empty.jpg").write_bytes(b"")
    files = [good[0], tmp_path / "broken.png", good[1], tmp_path / "empty.jpg", good[2]]
    result = CliRunner().invoke(main, ["predict", str(run_dir), *map(str, files), "--csv", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "broken.png" in result.output and "empty file" in result.output
    rows = list(csv.reader(open(tmp_path / "p.csv")))[1:]
    assert [r[0] for r in rows] == [str(p) for p in good]
    run = load_run(run_dir)
    model, config, names = run.model, run.config, run.classes
    reference = predict_files(model, [str(p) for p in good], config.image_size, resize=config.resize)
    for row, probs in zip(rows, reference):
        assert row[1] == names[int(np.argmax(probs))] and abs(float(row[2]) - probs.max()) < 2e-3


def test_train_again_from_the_run_config(run_dir):
    code, out = run("train", "--config", run_dir / "config.yaml", "--head-epochs", 1, "--tune-epochs", 0, "-q")
    assert code == 0, out
    assert (run_dir.parent / "e2e-2" / "model.keras").exists()


@pytest.mark.parametrize("args, message", [
    (["train", "missing_dir"], "data folder 'missing_dir' does not exist"),
    (["train", "{data}", "--backbone", "resnet5"], "Did you mean 'resnet50'"),
    (["train", "{data}", "--backbone", "tiny_cnn", "--image-size", "8"], "too small for tiny_cnn"),
    (["train", "{data}", "--dropout", "1.5"], "dropout: must be"),
    (["train", "{data}", "--hidden", "a,b"], "--hidden"),
    (["train", "--config", "{cfg}"], "unknown config key 'lerning_rate'"),
    (["train", "{single}"], "single class"),
    (["evaluate", "no_such_run"], "does not exist"),
])
def test_errors_are_one_actionable_line(image_folder, tmp_path, args, message):
    (tmp_path / "bad.yaml").write_text("lerning_rate: 0.1\n")
    (tmp_path / "single" / "only").mkdir(parents=True)
    args = [a.format(data=image_folder, cfg=tmp_path / "bad.yaml", single=tmp_path / "single") for a in args]
    code, out = run(*args)
    assert code == 2, out
    assert message in out and "Traceback" not in out


def test_help_and_backbones_listing():
    code, out = run("train", "--help")
    assert code == 0 and "--unfreeze-from" in out and "[default: efficientnet_lite0]" in out
    code, out = run("backbones")
    assert code == 0 and "vgg16" in out and "block5_conv1" in out


def test_lr_find_command_writes_plot_and_suggests(image_folder, tmp_path):
    code, out = run("lr-find", image_folder, "--backbone", "tiny_cnn", "--weights", "none", "--image-size", 32,
                    "--steps", 60, "--plot", tmp_path / "lr.png")
    assert code == 0, out
    assert "suggested learning rate:" in out and (tmp_path / "lr.png").stat().st_size > 5000


def test_divergence_stops_with_a_named_cause_and_exit_code_3(image_folder, tmp_path):
    code, out = run("train", image_folder, *TINY_FLAGS, "--optimizer", "sgd", "--lr", "10", "--l2", "10", "--head-epochs", 5,
                    "--tune-epochs", 0, "--no-cache-features", "--output", tmp_path / "runs")
    assert code == 3, out
    assert "NaN/inf" in out and "learning rate is probably too high" in out


def test_resume_flag_needs_a_run_folder(tmp_path):
    code, out = run("train", "--resume", tmp_path)
    assert code == 2 and "not a run folder" in out


def test_train_from_a_saved_model_reuses_its_layers_without_changing_it(image_folder, tmp_path):
    import keras
    import numpy as np

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv_a")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(16, activation="relu", name="dense_a")(x)
    source = keras.Model(inputs, keras.layers.Dense(5, activation="softmax", name="old_top")(x))
    source.save(tmp_path / "a.keras")
    before = [np.array(w) for w in source.get_weights()]

    code, out = run("train", image_folder, "--from", tmp_path / "a.keras", "--drop-top", 1, "--batch-size", 8,
                    "--augment", "none", "--head-epochs", 2, "--tune-epochs", 1, "-q", "--output", tmp_path / "runs", "--name", "b")
    assert code == 0, out
    model = keras.models.load_model(tmp_path / "runs" / "b" / "model.keras")
    assert model.output_shape == (None, 3)
    after = keras.models.load_model(tmp_path / "a.keras").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_predict_imagenet_names_classes_with_the_offline_lite0_head(tmp_path):
    import numpy as np
    from PIL import Image

    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(image)
    code, out = run("predict", "--imagenet", image, "-k", 2)
    assert code == 0, out
    assert str(image) in out and out.count("%") == 2
    code, out = run("predict", "only_run_dir")
    assert code == 2 and "RUN_DIR and at least one image" in out


def test_predict_with_mc_dropout_and_tta(image_folder, tmp_path):
    code, out = run("train", image_folder, *TINY_FLAGS, "--head-epochs", 2, "--tune-epochs", 0, "--dropout", 0.5,
                    "--output", tmp_path / "runs", "--name", "mc")
    assert code == 0, out
    image = next((image_folder / "class_a").iterdir())
    code, out = run("predict", tmp_path / "runs" / "mc", image, "--mc-samples", 30, "-k", 2)
    assert code == 0, out
    assert "+-" in out and "entropy" in out and "30 MC-dropout samples" in out
    code, out = run("predict", tmp_path / "runs" / "mc", image, "--mc-samples", 10, "--csv", tmp_path / "mc.csv")
    assert code == 0 and (tmp_path / "mc.csv").read_text().splitlines()[0].endswith("std_3,entropy")
    code, out = run("predict", tmp_path / "runs" / "mc", image, "--tta")
    assert code == 0 and str(image) in out
