"""A tiny registered backbone, so tests train in seconds (and adding one is shown to be one call)."""

import keras

from finetune.models.backbones import Backbone, register


def build_tiny(input_shape, weights):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, padding="same", name="block1_conv")(inputs)
    x = keras.layers.BatchNormalization(name="block1_bn")(x)
    x = keras.layers.ReLU(name="block1_relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="block2_conv")(x)
    x = keras.layers.BatchNormalization(name="block2_bn")(x)
    x = keras.layers.ReLU(name="block2_relu")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", name="block3_conv")(x)
    x = keras.layers.ReLU(name="block3_relu")(x)
    model = keras.Model(inputs, x, name="tiny_base")
    if weights:
        model.load_weights(weights)
    return model


TINY = register(Backbone(
    name="tiny_cnn", family="test", input_size=32, preprocessing="tf", build=build_tiny,
    unfreeze_points={"top": "block3_conv", "block2": "block2_conv"}, block_pattern=r"^(block\d+)_",
    min_input_size=16, params_millions=0.003,
))
