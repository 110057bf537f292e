import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from finetune.training.loop import Trainer

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def tiny_model(seed: int = 0, regularize: bool = False) -> keras.Model:
    keras.utils.set_random_seed(seed)
    reg = keras.regularizers.L2(1e-2) if regularize else None
    return keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(8, activation="relu", kernel_regularizer=reg),
        keras.layers.Dense(3),
    ])


def data(n: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype("float32"), rng.integers(0, 3, n).astype("int32")


def batches(x, y, batch_size):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


def assert_same_weights(a: keras.Model, b: keras.Model, atol: float = 1e-5):
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, atol=atol)


def test_one_epoch_matches_model_fit():
    x, y = data()
    reference, model = tiny_model(regularize=True), tiny_model(regularize=True)
    reference.compile(keras.optimizers.Adam(1e-2), LOSS, metrics=["accuracy"])
    expected = reference.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0,
                             validation_data=(x[:16], y[:16]))
    trainer = Trainer(model, keras.optimizers.Adam(1e-2), LOSS, metrics=["accuracy"])
    got = trainer.fit(batches(x, y, 16), epochs=1, verbose=0,
                      validation_data=batches(x[:16], y[:16], 16))
    assert_same_weights(reference, model)
    assert isinstance(got, keras.callbacks.History)
    assert got.history.keys() == expected.history.keys()
    for key, values in expected.history.items():
        assert got.history[key] == pytest.approx(values, abs=1e-5)
    assert got.params == {**expected.params, "verbose": 0}


def test_uses_compiled_model_and_numpy_input():
    x, y = data(32)
    model = tiny_model()
    model.compile("sgd", LOSS, metrics=["accuracy"])
    history = Trainer(model).fit((x, y), epochs=2, batch_size=8, verbose=0)
    assert sorted(history.history) == ["accuracy", "loss"]
    assert len(history.history["loss"]) == 2 and history.epoch == [0, 1]
    assert int(model.optimizer.iterations) == 8


def test_accumulation_equals_big_batch():
    x, y = data(64)
    big, accumulated = tiny_model(regularize=True), tiny_model(regularize=True)
    Trainer(big, keras.optimizers.SGD(0.1), LOSS).fit(batches(x, y, 32), epochs=2, verbose=0)
    trainer = Trainer(accumulated, keras.optimizers.SGD(0.1), LOSS, accumulate=4)
    trainer.fit(batches(x, y, 8), epochs=2, verbose=0)
    assert int(accumulated.optimizer.iterations) == int(big.optimizer.iterations) == 4
    assert_same_weights(big, accumulated)


def test_accumulation_flushes_incomplete_group_at_epoch_end():
    x, y = data(48)
    big, accumulated = tiny_model(), tiny_model()
    Trainer(big, keras.optimizers.SGD(0.1), LOSS).fit(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(32), epochs=1, verbose=0)
    Trainer(accumulated, keras.optimizers.SGD(0.1), LOSS, accumulate=4).fit(
        batches(x, y, 8), epochs=1, verbose=0)  # 6 micro-batches: 4 then 2
    assert int(accumulated.optimizer.iterations) == 2
    assert_same_weights(big, accumulated)


def test_clipnorm_limits_the_global_gradient_norm():
    x, y = data(16)
    model = tiny_model()
    before = [w.copy() for w in model.get_weights()]
    Trainer(model, keras.optimizers.SGD(1.0), LOSS, clipnorm=1e-3).fit(
        batches(x, y, 16), epochs=1, verbose=0)
    step = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(model.get_weights(), before)))
    assert step == pytest.approx(1e-3, rel=1e-4)


class Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin", self.model is not None))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, sorted(logs)))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, sorted(logs)))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end",))


def stock_callbacks(path):
    return [
        keras.callbacks.ModelCheckpoint(path, monitor="val_loss", save_best_only=True),
        keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=1e9),
        keras.callbacks.EarlyStopping(monitor="loss", patience=2, min_delta=1e9),
    ]


def test_callbacks_protocol_and_stock_callbacks_like_fit(tmp_path):
    x, y = data(32)
    reference = tiny_model()
    reference.compile(keras.optimizers.SGD(0.1), LOSS, metrics=["accuracy"])
    expected = reference.fit(x, y, batch_size=16, epochs=10, initial_epoch=1, shuffle=False,
                             verbose=0, validation_data=(x, y),
                             callbacks=stock_callbacks(tmp_path / "fit.keras"))
    model, recorder = tiny_model(), Recorder()
    trainer = Trainer(model, keras.optimizers.SGD(0.1), LOSS, metrics=["accuracy"])
    history = trainer.fit(batches(x, y, 16), epochs=10, initial_epoch=1, verbose=0,
                          validation_data=batches(x, y, 16),
                          callbacks=[recorder] + stock_callbacks(tmp_path / "best.keras"))
    assert history.epoch == expected.epoch == [1, 2, 3]  # stopped early
    assert model.stop_training
    assert float(model.optimizer.learning_rate) == pytest.approx(
        float(reference.optimizer.learning_rate)) == pytest.approx(0.025)
    assert (tmp_path / "best.keras").exists()
    for key, values in expected.history.items():
        assert history.history[key] == pytest.approx(values, abs=1e-5)
    assert recorder.calls[:3] == [("train_begin", True), ("epoch_begin", 1),
                                  ("batch_end", 0, ["accuracy", "loss"])]
    assert recorder.calls[4] == ("epoch_end", 1, ["accuracy", "loss", "val_accuracy", "val_loss"])
    assert recorder.calls[-1] == ("train_end",)


def test_stop_training_mid_epoch():
    x, y = data(64)
    model = tiny_model()

    class StopAfterTwo(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.stop_training = True

    Trainer(model, "sgd", LOSS).fit(batches(x, y, 8), epochs=3, verbose=0,
                                    callbacks=[StopAfterTwo()])
    assert int(model.optimizer.iterations) == 2


def test_evaluate_matches_model_evaluate():
    x, y = data(40)
    model = tiny_model()
    model.compile("adam", LOSS, metrics=["accuracy"])
    expected = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    got = Trainer(model).evaluate(batches(x, y, 16))
    assert got == pytest.approx(expected, abs=1e-6)


def test_one_device_strategy_matches_plain_loop():
    x, y = data(32)
    plain = tiny_model()
    Trainer(plain, keras.optimizers.SGD(0.1), LOSS).fit(batches(x, y, 8), epochs=1, verbose=0)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = tiny_model()
        trainer = Trainer(model, keras.optimizers.SGD(0.1), LOSS, metrics=["accuracy"])
    history = trainer.fit(batches(x, y, 8), epochs=1, verbose=0)
    assert sorted(history.history) == ["accuracy", "loss"]
    assert_same_weights(plain, model)


def _two_logical_cpus() -> bool:
    """Split the CPU in two for MirroredStrategy, if TF's runtime is not started yet."""
    try:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    except RuntimeError:  # already initialised: fall back to a subprocess
        pass
    return len(tf.config.list_logical_devices("CPU")) >= 2


IN_PROCESS_MIRRORED = _two_logical_cpus()  # at import, before any test starts TF

def check_mirrored_matches_plain() -> None:
    """One epoch under MirroredStrategy on two logical CPUs equals one without."""
    x, y = data(32)
    plain = tiny_model()
    expected = Trainer(plain, keras.optimizers.SGD(0.1), LOSS, metrics=["accuracy"]).fit(
        batches(x, y, 8), epochs=1, verbose=0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        mirrored = tiny_model()
        trainer = Trainer(mirrored, keras.optimizers.SGD(0.1), LOSS, metrics=["accuracy"])
    history = trainer.fit(batches(x, y, 8), epochs=1, verbose=0, validation_data=batches(x, y, 8))
    assert sorted(history.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    for key in ("loss", "accuracy"):
        assert history.history[key] == pytest.approx(expected.history[key], abs=1e-5)
    assert_same_weights(plain, mirrored)


def test_mirrored_strategy_on_two_logical_cpus():
    if IN_PROCESS_MIRRORED:
        check_mirrored_matches_plain()
        return
    code = f"import runpy; runpy.run_path({__file__!r})['check_mirrored_matches_plain']()"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


def test_optimizer_override_on_compiled_model_and_discriminative_rates():
    from finetune.training.optim import discriminative_optimizer, layer_groups

    x, y = data(32)
    reference, model = tiny_model(), tiny_model()
    reference.compile(discriminative_optimizer("adam", 1e-2, layer_groups(reference, 2)), LOSS)
    reference.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    model.compile("sgd", LOSS)
    trainer = Trainer(model, discriminative_optimizer("adam", 1e-2, layer_groups(model, 2)))
    assert model.optimizer is trainer.optimizer
    trainer.fit(batches(x, y, 8), epochs=1, verbose=0)
    assert_same_weights(reference, model)


def test_dataset_of_unknown_length():
    x, y = data(40)
    model = tiny_model()
    ds = batches(x, y, 8).filter(lambda a, b: True)
    assert int(ds.cardinality()) < 0
    history = Trainer(model, "sgd", LOSS).fit(ds, epochs=2, verbose=0, validation_data=ds)
    assert int(model.optimizer.iterations) == 10
    assert sorted(history.history) == ["loss", "val_loss"]


def test_unfreezing_between_fits_retraces():
    x, y = data(32)
    model = tiny_model()
    model.layers[0].trainable = False
    frozen = model.layers[0].get_weights()[0].copy()
    trainer = Trainer(model, keras.optimizers.SGD(0.1), LOSS, accumulate=2)
    trainer.fit(batches(x, y, 8), epochs=1, verbose=0)
    np.testing.assert_array_equal(model.layers[0].get_weights()[0], frozen)
    model.layers[0].trainable = True
    trainer.model.optimizer = keras.optimizers.SGD(0.01)  # a fresh optimizer, as after recompiling
    trainer.fit(batches(x, y, 8), epochs=1, verbose=0)
    assert not np.array_equal(model.layers[0].get_weights()[0], frozen)
