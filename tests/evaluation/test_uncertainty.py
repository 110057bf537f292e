import numpy as np
import pytest
import keras

from finetune.evaluation.uncertainty import expected_calibration_error, mc_predict, predictive_entropy

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 5)).astype("float32")


def model_with(*hidden, outputs=3):
    keras.utils.set_random_seed(0)
    last = keras.layers.Dense(outputs, activation="sigmoid" if outputs == 1 else "softmax")
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(16, activation="relu"), *hidden, last])


def with_trained_batchnorm(model):
    # Move BN's moving statistics away from their initial values.
    model.compile(loss="binary_crossentropy", optimizer="sgd")
    model.fit(X * 3 + 1, (X[:, 0] > 0).astype("float32"), epochs=2, batch_size=8, verbose=0)
    return model


@pytest.mark.parametrize(
    "make_model",
    [lambda: model_with(outputs=3),
     lambda: with_trained_batchnorm(model_with(keras.layers.BatchNormalization(), outputs=1))],
    ids=["softmax", "sigmoid-with-batchnorm"],
)
def test_without_dropout_mc_equals_the_deterministic_prediction(make_model):
    model = make_model()
    result = mc_predict(model, X, samples=5)
    expected = model.predict(X, verbose=0)
    np.testing.assert_allclose(result.mean, expected, rtol=1e-6)
    assert np.all(result.std == 0)
    assert result.samples.shape == (5, *expected.shape)
    assert result.entropy.shape == (len(X),)


def test_dropout_samples_differ_and_a_fixed_seed_repeats():
    model = model_with(keras.layers.Dropout(0.5), outputs=3)
    first = mc_predict(model, X, samples=20, seed=7)
    assert first.samples.shape == (20, len(X), 3)
    assert not np.allclose(first.samples[0], first.samples[1])
    assert first.std.max() > 0
    np.testing.assert_allclose(first.mean.sum(axis=-1), 1, rtol=1e-6)
    second = mc_predict(model, X, samples=20, seed=7)
    np.testing.assert_allclose(first.mean, second.mean)
    # Dropout is off in the model itself afterwards.
    np.testing.assert_array_equal(model.predict(X, verbose=0), model.predict(X, verbose=0))


def test_batchnorm_stays_in_inference_mode_and_keeps_its_statistics():
    inner = keras.Sequential([keras.Input((16,)), keras.layers.BatchNormalization(), keras.layers.Dropout(0.3)])
    model = with_trained_batchnorm(model_with(inner, outputs=1))
    bn = inner.layers[0]
    stats_before = [bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()]
    assert not np.allclose(stats_before[0], 0)
    result = mc_predict(model, X, samples=8, seed=0)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), stats_before[0])
    np.testing.assert_array_equal(bn.moving_variance.numpy(), stats_before[1])
    # With rate 0 the MC clone must reproduce inference-mode BN exactly.
    inner.layers[1].rate = 0.0
    no_drop = mc_predict(model, X, samples=2, seed=0)
    np.testing.assert_allclose(no_drop.mean, model.predict(X, verbose=0), rtol=1e-5, atol=1e-6)
    assert result.samples.shape == (8, len(X), 1)


def test_predictive_entropy():
    np.testing.assert_allclose(predictive_entropy(np.array([[0.5], [1.0]])), [np.log(2), 0], atol=1e-9)
    np.testing.assert_allclose(predictive_entropy(np.full((1, 4), 0.25)), [np.log(4)])


def test_expected_calibration_error():
    assert expected_calibration_error(np.array([1.0, 0.0]), np.array([1, 0])) == 0
    assert expected_calibration_error(np.array([0.9, 0.2, 0.6]), np.array([1, 0, 0])) == pytest.approx(0.3)
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    # Two bins: (0.6, 0.7] correct with conf 0.7, (0.5, 0.6] wrong with conf 0.6.
    assert expected_calibration_error(probs, np.array([0, 2])) == pytest.approx((0.3 + 0.6) / 2)
    with pytest.raises(ValueError):
        expected_calibration_error(probs, np.array([0]))
