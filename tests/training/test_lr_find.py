import keras
import numpy as np
import pytest
import tensorflow as tf

from finetune.training.lr_find import LRFindResult, lr_find


def classifier(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.BatchNormalization(),
        keras.layers.Dense(3),
    ])


def blobs(n: int = 512, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = rng.normal(scale=2.0, size=(3, 8))
    x = centers[y] + rng.normal(size=(n, 8))
    return x.astype("float32"), y.astype("int32")


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def sweep():
    model = classifier()
    before = [v.numpy().copy() for v in model.variables]
    x, y = blobs()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(512, seed=0).batch(32)
    result = lr_find(model, ds, loss=LOSS, steps=150)
    return model, before, result


def test_suggestion_is_sensible(sweep):
    _, _, result = sweep
    assert 1e-4 <= result.suggestion <= 1.0
    assert 1e-5 <= result.min_loss_lr <= 1.0
    assert len(result.lrs) == len(result.losses) == len(result.raw_losses)
    assert result.lrs == sorted(result.lrs) and result.lrs[0] == pytest.approx(1e-7)
    ratios = np.diff(np.log(result.lrs))
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-6)  # exponential sweep


def test_stops_when_loss_explodes(sweep):
    _, _, result = sweep
    assert len(result.lrs) < 150
    assert result.lrs[-1] < 10


def test_model_restored_bit_for_bit(sweep):
    model, before, _ = sweep
    for var, value in zip(model.variables, before):
        np.testing.assert_array_equal(var.numpy(), value)


def test_numpy_input_compiled_loss_and_optimizer_instance_restored():
    model = classifier()
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)
    x, y = blobs(256)
    model.fit(x, y, epochs=1, verbose=0)
    opt_state = [v.numpy().copy() for v in model.optimizer.variables]
    result = lr_find(model, (x, y), steps=30, optimizer=model.optimizer)
    assert len(result.lrs) == 30
    assert float(model.optimizer.learning_rate) == pytest.approx(0.05)
    for var, value in zip(model.optimizer.variables, opt_state):
        np.testing.assert_array_equal(var.numpy(), value)


def test_plot_writes_png(sweep, tmp_path):
    _, _, result = sweep
    path = result.plot(tmp_path / "plots" / "lr_find.png")
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000


def test_plot_of_a_handmade_result(tmp_path):
    result = LRFindResult([1e-3, 1e-2, 1e-1], [1.0, 0.5, 2.0], suggestion=1e-2)
    assert result.plot(tmp_path / "r.png").exists()
