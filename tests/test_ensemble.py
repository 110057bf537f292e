"""``finetune ensemble``: several runs as one averaging model, through the commands that read runs."""

import json

import numpy as np
import pytest

from finetune.runs import RunError, ensemble_runs, load_run

from test_cli import TINY_FLAGS, run


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two tiny runs of the same recipe on one split (``--split-seed 0``), trained with different seeds."""
    from conftest import make_image_folder

    root = tmp_path_factory.mktemp("ens")
    data = make_image_folder(root / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FINETUNE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
        for seed in (0, 1):
            code, out = run("train", data, *TINY_FLAGS, "--head-epochs", 2, "--tune-epochs", 0, "--seed", seed,
                            "--split-seed", 0,
                            "--val-split", 0.2, "--test-split", 0.2, "--output", root / "runs", "--name", f"s{seed}")
            assert code == 0, out
    return root, data


def test_the_ensemble_averages_its_members_and_is_scored_beside_them(members):
    root, data = members
    code, out = run("ensemble", root / "runs" / "s0", root / "runs" / "s1", "--output", root / "runs", "--name", "ens")
    assert code == 0, out
    assert out.count("member ") == 2 and "ensemble of 2: test accuracy" in out, out
    ens = root / "runs" / "ens"
    ens_run = load_run(ens)
    model, config, names = ens_run.model, ens_run.config, ens_run.classes  # safe mode: stock layers only
    a, b = (load_run(root / "runs" / s).model for s in ("s0", "s1"))
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), (a.predict(x, verbose=0) + b.predict(x, verbose=0)) / 2,
                               atol=1e-6)
    metrics = json.loads((ens / "metrics.json").read_text())["test"]
    assert len(metrics["members"]) == 2 and 0 <= metrics["accuracy"] <= 1
    assert (ens / "members.txt").read_text().count("\n") == 2 and "members' test accuracy" in (ens / "report.md").read_text()
    code, out = run("evaluate", ens)
    assert code == 0 and f"{metrics['accuracy']:.2%}" in out, out
    image = next(data.rglob("*.png"))
    code, out = run("predict", ens, image)
    assert code == 0 and image.name in out, out
    code, out = run("explain", ens, image)
    assert code == 0 and (ens / "explain" / f"{image.stem}.gradcam.png").exists(), out


def test_an_ensemble_is_explained_by_its_members_mean_heatmap(members):
    from finetune.evaluation.explain import ensemble_members, grad_cam

    root, _ = members
    a, b = (load_run(root / "runs" / s).model for s in ("s0", "s1"))
    from finetune.models.ensemble import average_models

    both = average_models([a, b])
    assert len(ensemble_members(both)) == 2 and ensemble_members(a) == []
    x = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    found = grad_cam(both, x, 1)
    for i in range(2):
        mean = (grad_cam(a, x, 1)[i].heatmap + grad_cam(b, x, 1)[i].heatmap) / 2
        np.testing.assert_allclose(found[i].heatmap, mean / mean.max(), atol=1e-5)
        assert found[i].class_index == 1
        assert found[i].probability == pytest.approx(float(both.predict(x, verbose=0)[i, 1]), abs=1e-5)


def _copy_with(run_dir, dest, spec=None, **config):
    """A copy of a run folder with some config.yaml (and spec.json) values changed (no training needed).

    A changed split drops ``splits.csv``, as in a folder written before it: the split is then drawn again."""
    import json
    import shutil

    import yaml

    shutil.copytree(run_dir, dest)
    values = yaml.safe_load((dest / "config.yaml").read_text())
    (dest / "config.yaml").write_text(yaml.safe_dump({**values, **config}))
    if spec:
        (dest / "spec.json").write_text(json.dumps({**json.loads((dest / "spec.json").read_text()), **spec}))
    if "split_seed" in config:
        (dest / "splits.csv").unlink()
    return dest


def test_members_that_disagree_or_are_too_few_are_refused(members, tmp_path):
    root, _ = members
    with pytest.raises(RunError, match="at least 2 runs"):
        ensemble_runs([root / "runs" / "s0"], tmp_path)
    other = _copy_with(root / "runs" / "s1", tmp_path / "other", spec={"size": 40})
    code, out = run("ensemble", root / "runs" / "s0", other, "--output", tmp_path)
    assert code != 0 and "input spec" in out and "size=40" in out and "must agree" in out, out
    assert not any(p.name.startswith("ensemble") for p in tmp_path.iterdir())


def test_members_on_different_splits_are_refused(members, tmp_path):
    root, _ = members
    own_split = _copy_with(root / "runs" / "s1", tmp_path / "own-split", split_seed=None)  # split drawn from seed 1
    code, out = run("ensemble", root / "runs" / "s0", own_split, "--output", tmp_path)
    assert code != 0 and "other images" in out and "--split-seed" in out, out
    ruled = _copy_with(root / "runs" / "s1", tmp_path / "ruled")
    (ruled / "ordinal.json").write_text("{}")
    with pytest.raises(RunError, match="ordinal.json"):
        ensemble_runs([root / "runs" / "s0", ruled], tmp_path)


def test_split_seed_fixes_the_split_and_seed_still_varies_training(members):
    root, _ = members
    (a, ca), (b, cb) = ((r.model, r.config) for r in (load_run(root / "runs" / s) for s in ("s0", "s1")))
    assert (ca.seed, cb.seed, ca.resolved_split_seed, cb.resolved_split_seed) == (0, 1, 0, 0)
    assert not all(np.allclose(u, v) for u, v in zip(a.get_weights(), b.get_weights()))
