import numpy as np
import pytest
import keras

from finetune.models.reuse import reuse

RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 6)).astype("float32")
Y_BINARY = (X[:, 0] > 0).astype("float32")


def sequential_source():
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation="selu"),
         keras.layers.Dense(5, activation="selu"), keras.layers.Dense(3, activation="softmax")]
    )
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    return model


def functional_source():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((6,))
    a = keras.layers.Dense(8, activation="relu")(inputs)
    b = keras.layers.Dense(8, activation="relu")(inputs)
    merged = keras.layers.Concatenate()([a, b])
    hidden = keras.layers.BatchNormalization()(keras.layers.Dense(5)(merged))
    outputs = keras.layers.Dense(3, activation="softmax")(hidden)
    return keras.Model(inputs, outputs)


def train_briefly(model):
    model.compile(loss="binary_crossentropy", optimizer=keras.optimizers.SGD(0.1))
    model.fit(X, Y_BINARY, epochs=2, batch_size=8, verbose=0)


def assert_same_weights(before, model):
    after = model.get_weights()
    assert len(before) == len(after)
    for w0, w1 in zip(before, after):
        np.testing.assert_array_equal(w0, w1)


@pytest.mark.parametrize("make_source", [sequential_source, functional_source])
def test_training_the_new_model_leaves_the_source_bit_identical(make_source):
    source = make_source()
    before = [w.copy() for w in source.get_weights()]
    new = reuse(source, num_outputs=1, freeze=False)
    assert not {id(layer) for layer in new.layers} & {id(layer) for layer in source.layers}
    train_briefly(new)
    assert_same_weights(before, source)
    assert new.outputs[0].shape == (None, 1)


def test_new_model_starts_from_the_source_weights():
    source = sequential_source()
    new = reuse(source, drop_top=0)
    np.testing.assert_allclose(new.predict(X, verbose=0), source.predict(X, verbose=0))
    assert isinstance(new, keras.Sequential)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_reuse_from_file(tmp_path, suffix):
    source = sequential_source()
    path = tmp_path / f"model{suffix}"
    source.save(path)
    before = [w.copy() for w in source.get_weights()]
    np.testing.assert_allclose(
        reuse(path).predict(X, verbose=0), reuse(source).predict(X, verbose=0), rtol=1e-6
    )
    new = reuse(path, num_outputs=1)
    train_briefly(new)
    assert_same_weights(before, source)
    reloaded = keras.models.load_model(path, compile=False)
    assert_same_weights(before, reloaded)


def test_frozen_layers_are_not_trainable_and_do_not_change():
    new = reuse(functional_source(), num_outputs=4)
    head = new.get_layer("reuse_head")
    assert head.trainable and head.activation.__name__ == "softmax"
    reused = [layer for layer in new.layers if layer is not head and layer.weights]
    assert reused and not any(layer.trainable for layer in reused)
    frozen_before = [w.numpy().copy() for layer in reused for w in layer.weights]
    new.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(0.1))
    new.fit(X, (X[:, 0] > 0).astype("int32"), epochs=1, batch_size=8, verbose=0)
    for w0, w1 in zip(frozen_before, [w.numpy() for layer in reused for w in layer.weights]):
        np.testing.assert_array_equal(w0, w1)


def test_drop_top_two_and_custom_head():
    source = sequential_source()
    head = [keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2, activation="softmax")]
    new = reuse(source, drop_top=2, head=head)
    assert [layer.name for layer in new.layers[:-2]] == [source.layers[0].name]
    assert new.layers[-2:] == head
    assert new.outputs[0].shape == (None, 2)


def test_drop_top_too_large_is_a_clear_error():
    with pytest.raises(ValueError, match=r"drop_top=3 but the model has 3 layers"):
        reuse(sequential_source(), drop_top=3, num_outputs=1)


def test_cutting_off_a_branch_is_an_error():
    inputs = keras.Input((6,))
    a = keras.layers.Dense(4, name="a")(inputs)
    b = keras.layers.Dense(4, name="b")(inputs)
    model = keras.Model(inputs, keras.layers.Add(name="add")([a, b]))
    with pytest.raises(ValueError, match="does not use"):
        reuse(model, drop_top=1, num_outputs=1)


def test_lambda_in_file_needs_unsafe(tmp_path):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Lambda(lambda t: t * 2), keras.layers.Dense(2)])
    for suffix in (".keras", ".h5"):
        path = tmp_path / f"lambda{suffix}"
        model.save(path)
        with pytest.raises(ValueError):
            reuse(path, num_outputs=1)
        with pytest.warns(UserWarning, match="unsafe=True"):
            new = reuse(path, num_outputs=1, unsafe=True)
        assert new.outputs[0].shape == (None, 1)
