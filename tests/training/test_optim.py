import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from finetune.training.optim import (
    OPTIMIZERS,
    discriminative_optimizer,
    group_multipliers,
    layer_groups,
    make_optimizer,
    make_schedule,
)


def tiny_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(6, activation="relu"), keras.layers.Dense(2)])


def data(n: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype("float32"), rng.normal(size=(n, 2)).astype("float32")


# ---- optimizers by name -----------------------------------------------------

@pytest.mark.parametrize("name, cls, attrs", [
    ("sgd", keras.optimizers.SGD, {"momentum": 0.0, "nesterov": False}),
    ("momentum", keras.optimizers.SGD, {"momentum": 0.9, "nesterov": False}),
    ("nesterov", keras.optimizers.SGD, {"momentum": 0.9, "nesterov": True}),
    ("adagrad", keras.optimizers.Adagrad, {}),
    ("rmsprop", keras.optimizers.RMSprop, {"rho": 0.9}),
    ("adam", keras.optimizers.Adam, {}),
    ("adamw", keras.optimizers.AdamW, {}),
    ("nadam", keras.optimizers.Nadam, {}),
])
def test_make_optimizer_defaults(name, cls, attrs):
    opt = make_optimizer(name, 0.01)
    assert type(opt) is cls
    assert float(opt.learning_rate) == pytest.approx(0.01)
    for key, value in attrs.items():
        assert getattr(opt, key) == value
    assert name in OPTIMIZERS


def test_make_optimizer_overrides():
    opt = make_optimizer("momentum", 0.1, momentum=0.8, clipnorm=1.0)
    assert opt.momentum == 0.8 and opt.clipnorm == 1.0
    assert make_optimizer("adamw", 1e-3, weight_decay=0.1).weight_decay == 0.1


def test_unknown_optimizer_suggests_closest():
    with pytest.raises(ValueError, match="'adam'"):
        make_optimizer("adma", 0.1)


def test_unknown_override_is_named_and_valid_ones_listed():
    with pytest.raises(ValueError, match=r"'rho'.*Valid:.*momentum"):
        make_optimizer("sgd", 0.1, rho=0.9)


# ---- schedules --------------------------------------------------------------

def lr_at(schedule, step):
    return float(schedule(step))


def test_constant_and_power():
    assert lr_at(make_schedule("constant", 0.1, steps_per_epoch=10, epochs=3), 25) == pytest.approx(0.1)
    power = make_schedule("power", 0.1, steps_per_epoch=10, epochs=3, s=20, c=2)
    for step in (0, 10, 40):
        assert lr_at(power, step) == pytest.approx(0.1 / (1 + step / 20) ** 2, rel=1e-6)


def test_exponential_uses_epochs():
    sched = make_schedule("exponential", 0.1, steps_per_epoch=10, epochs=5, s=2)
    for step in (0, 5, 20, 40):
        assert lr_at(sched, step) == pytest.approx(0.1 * 0.1 ** (step / 10 / 2), rel=1e-5)


def test_piecewise_boundaries_in_epochs():
    sched = make_schedule("piecewise", 0.1, steps_per_epoch=10, epochs=6,
                          boundaries=[2, 4], values=[0.1, 0.05, 0.01])
    got = [lr_at(sched, s) for s in (0, 19, 20, 39, 40, 59)]
    assert got == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.01, 0.01])
    default = make_schedule("piecewise", 1.0, steps_per_epoch=1, epochs=3, boundaries=[1])
    assert [lr_at(default, s) for s in (0, 1)] == pytest.approx([1.0, 0.1])


def test_plateau_is_a_callback():
    cb = make_schedule("plateau", 0.1, steps_per_epoch=10, epochs=3, factor=0.2, patience=1)
    assert isinstance(cb, keras.callbacks.ReduceLROnPlateau)
    assert cb.factor == 0.2 and cb.patience == 1


def test_one_cycle_shape():
    sched = make_schedule("1cycle", 1.0, steps_per_epoch=10, epochs=10)  # 100 steps
    assert lr_at(sched, 0) == pytest.approx(0.1)
    assert lr_at(sched, 45) == pytest.approx(1.0)
    assert lr_at(sched, 22.5) == pytest.approx(0.55)
    assert lr_at(sched, 90) == pytest.approx(0.1)
    assert lr_at(sched, 95) == pytest.approx(0.1 - (0.1 - 0.001) * 0.5, rel=1e-5)
    assert lr_at(sched, 100) == pytest.approx(0.001, rel=1e-4)
    assert lr_at(sched, 500) == pytest.approx(0.001, rel=1e-4)


def test_cosine_with_warmup():
    sched = make_schedule("cosine", 0.1, steps_per_epoch=10, epochs=5, warmup_epochs=1)
    assert lr_at(sched, 0) == pytest.approx(0.0)
    assert lr_at(sched, 5) == pytest.approx(0.05)
    assert lr_at(sched, 10) == pytest.approx(0.1)
    assert lr_at(sched, 30) == pytest.approx(0.05, abs=1e-7)  # halfway through decay
    assert lr_at(sched, 50) == pytest.approx(0.0, abs=1e-7)
    step = 17
    expected = 0.1 * 0.5 * (1 + math.cos(math.pi * (step - 10) / 40))
    assert lr_at(sched, step) == pytest.approx(expected, rel=1e-5)


def test_unknown_schedule_and_bad_params():
    with pytest.raises(ValueError, match="'cosine'"):
        make_schedule("cosin", 0.1, steps_per_epoch=1, epochs=1)
    with pytest.raises(ValueError, match="boundaries"):
        make_schedule("piecewise", 0.1, steps_per_epoch=1, epochs=1)
    with pytest.raises(ValueError, match="power"):
        make_schedule("power", 0.1, steps_per_epoch=1, epochs=1, gamma=3)


@pytest.mark.parametrize("name, params", [
    ("constant", {}), ("power", {"s": 7, "c": 0.5}), ("exponential", {"s": 3}),
    ("piecewise", {"boundaries": [1, 2]}), ("1cycle", {}), ("cosine", {"warmup_epochs": 1}),
])
def test_schedules_serialize(name, params):
    sched = make_schedule(name, 0.1, steps_per_epoch=10, epochs=4, **params)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(sched))
    for step in (0, 3, 17, 39):
        assert lr_at(clone, step) == pytest.approx(lr_at(sched, step))


class RecordLR(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.lrs = []

    def on_train_batch_begin(self, batch, logs=None):
        opt = self.model.optimizer
        self.lrs.append(float(opt.learning_rate))


def test_schedule_resumes_after_save_and_load(tmp_path):
    x, y = data(32)
    steps, epochs = 4, 3  # batch 8

    def fresh():
        sched = make_schedule("cosine", 0.05, steps_per_epoch=steps, epochs=epochs, warmup_epochs=1)
        model = tiny_model()
        model.compile(make_optimizer("adam", sched), "mse")
        return model

    straight, rec = fresh(), RecordLR()
    straight.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=[rec])

    first, rec1 = fresh(), RecordLR()
    first.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[rec1])
    first.save(tmp_path / "m.keras")
    resumed = keras.saving.load_model(tmp_path / "m.keras")
    assert int(resumed.optimizer.iterations) == 2 * steps
    schedule = resumed.optimizer._learning_rate
    assert float(schedule(resumed.optimizer.iterations)) == pytest.approx(rec.lrs[2 * steps])
    rec2 = RecordLR()
    resumed.fit(x, y, batch_size=8, epochs=3, initial_epoch=2, shuffle=False, verbose=0,
                callbacks=[rec2])
    assert rec1.lrs + rec2.lrs == pytest.approx(rec.lrs, rel=1e-6)
    np.testing.assert_allclose(resumed.get_weights()[0], straight.get_weights()[0], atol=1e-5)


# ---- discriminative learning rates -------------------------------------------

def one_step(model, optimizer, x, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x) - y))
    grads = tape.gradient(loss, model.trainable_variables)
    before = [v.numpy().copy() for v in model.trainable_variables]
    optimizer.apply(grads, model.trainable_variables)
    after = [v.numpy() for v in model.trainable_variables]
    return before, after, [g.numpy() for g in grads]


def test_group_multipliers_geometric():
    assert group_multipliers(3) == pytest.approx([0.01, 0.1, 1.0])
    assert group_multipliers(1) == [1.0]
    assert group_multipliers(2, spread=10) == pytest.approx([0.1, 1.0])


def test_layer_groups_splits_backbone_and_head():
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.Input((4,))] + [keras.layers.Dense(4) for _ in range(4)],
                                name="backbone")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(backbone(inputs)))
    groups = layer_groups(model, 3)
    assert [len(g) for g in groups] == [4, 4, 2]
    assert {v.path for v in groups[-1]} == {"head/kernel", "head/bias"}
    assert [len(g) for g in layer_groups(tiny_model(), 3)] == [2, 2, 2]


def test_discriminative_sgd_step_is_rate_times_grad():
    model = tiny_model()
    x, y = data(16)
    groups = layer_groups(model, 3)
    opt = discriminative_optimizer("sgd", 0.1, groups)
    before, after, grads = one_step(model, opt, x, y)
    rates = [0.001] * 2 + [0.01] * 2 + [0.1] * 2
    for b, a, g, rate in zip(before, after, grads, rates):
        np.testing.assert_allclose(a, b - rate * g, rtol=1e-6, atol=1e-7)  # float32 ulps
        assert np.abs(b - a).max() == pytest.approx(rate * np.abs(g).max(), rel=1e-2)


def test_discriminative_adam_first_step_magnitude():
    model = tiny_model()
    x, y = data(16)
    opt = discriminative_optimizer("adam", 1e-2, layer_groups(model, 3), low=1e-4, epsilon=1e-12)
    before, after, grads = one_step(model, opt, x, y)
    rates = [1e-4] * 2 + [1e-3] * 2 + [1e-2] * 2
    for b, a, g, rate in zip(before, after, grads, rates):
        moved = np.abs(b - a)[np.abs(g) > 1e-6]
        np.testing.assert_allclose(moved, rate, rtol=1e-3)


def test_discriminative_weight_decay_scaled_per_group():
    model = tiny_model()
    x, y = data(16)
    opt = discriminative_optimizer("sgd", 0.1, layer_groups(model, 2), weight_decay=0.5)
    before, after, grads = one_step(model, opt, x, y)
    for b, a, g, rate in zip(before, after, grads, [0.001] * 4 + [0.1] * 2):
        np.testing.assert_allclose(a, b * (1 - 0.5 * rate) - rate * g, rtol=1e-5, atol=1e-7)


def test_discriminative_with_fit_and_schedule_survives_save(tmp_path):
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6), keras.layers.Dense(6)],
                                name="backbone")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(backbone(inputs)))
    sched = make_schedule("cosine", 1e-2, steps_per_epoch=2, epochs=2)
    model.compile(discriminative_optimizer("momentum", sched, layer_groups(model, 3)), "mse")
    x, y = data(16)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded.optimizer).__name__ == "DiscriminativeSGD"
    assert loaded.optimizer.lr_multipliers == model.optimizer.lr_multipliers
    assert [loaded.optimizer.multiplier(v) for v in loaded.trainable_variables] == pytest.approx(
        [0.01, 0.01, 0.1, 0.1, 1.0, 1.0])
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert int(loaded.optimizer.iterations) == 4
