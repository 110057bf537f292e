"""Mixup (``--mixup ALPHA``): mixed batches, seeded by the step, in every kind of phase input."""

import numpy as np
import pytest

from finetune.config import ConfigError


def _batches(first_step=0, seed=0, n=16, weights=False):
    import tensorflow as tf

    from finetune.training.mixup import mixup_batches

    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    y = np.arange(n) % 4
    parts = (x, y, np.linspace(1, 2, n).astype(np.float32)) if weights else (x, y)
    ds = tf.data.Dataset.from_tensor_slices(parts).batch(8)
    return [tuple(t.numpy() for t in b) for b in mixup_batches(ds, alpha=0.4, num_classes=4, one_hot=True, seed=seed,
                                                            first_step=first_step)], x, y


def test_each_image_mixes_with_another_and_keeps_the_larger_part():
    batches, x, y = _batches(weights=True)
    mx, my, mw = batches[0]
    assert my.shape == (8, 4) and np.allclose(my.sum(axis=1), 1.0)
    lam = my[np.arange(8), y[:8]]
    assert np.all(lam >= 0.5 - 1e-6) and np.any(lam < 0.99)  # folded to the larger part, and really mixed
    # x = lam * x_i + (1 - lam) * x_j: the partner row is recovered exactly
    partner = (mx - lam[:, None] * x[:8]) / np.clip(1 - lam[:, None], 1e-6, None)
    mixed = lam < 0.999
    assert all(np.any(np.all(np.isclose(p, x[:8], atol=1e-2), axis=1)) for p in partner[mixed])
    assert np.all((mw >= 1) & (mw <= 2))


def test_draws_depend_only_on_seed_and_step():
    a, _, _ = _batches()
    b, _, _ = _batches()
    c, _, _ = _batches(first_step=5)
    d, _, _ = _batches(seed=1)
    assert all(np.array_equal(p[0], q[0]) for p, q in zip(a, b))
    assert not np.array_equal(a[0][0], c[0][0]) and not np.array_equal(a[0][0], d[0][0])


@pytest.mark.parametrize("classes", [3, 2])
def test_fine_tune_with_mixup_trains_both_phases(tmp_path, classes):
    """Phase 1 on features and phase 2 on cached activations, softmax (3 classes) and one sigmoid (2):
    the run finishes, validation (unmixed) reads plain accuracy, the config keeps alpha."""
    from conftest import TINY_RUN, make_image_folder

    from finetune.config import TrainConfig
    from finetune.training import fine_tune

    data = make_image_folder(tmp_path / "data", classes=classes, per_class=10)
    result = fine_tune(str(data), **TINY_RUN, head_epochs=8, tune_epochs=2, val_split=0.2, test_split=0.0,
                       mixup=0.4, verbose=0)
    assert [r["phase"] for r in result.history].count("tune") == 2
    assert result.history[-1]["val_accuracy"] > 0.6  # colours tell the class; mixing does not stop learning it
    assert all(np.isfinite(r["loss"]) for r in result.history)
    assert TrainConfig.from_dict(result.config.to_dict()).mixup == 0.4


def test_mixup_needs_the_fit_loop():
    from finetune.config import TrainConfig

    with pytest.raises(ConfigError, match="mixup: needs loop 'fit'"):
        TrainConfig(mixup=0.4, loop="trainer").validate()
