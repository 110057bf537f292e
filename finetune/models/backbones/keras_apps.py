"""keras.applications backbones.

``weights="imagenet"`` downloads from the internet on first use (fine for users
online; tests never do it). ``weights=None`` gives random weights, and a path
loads a local weights file.
"""

from __future__ import annotations

from typing import Callable

import keras

from .registry import Backbone, register


def _builder(fn_name: str) -> Callable[[tuple[int, int, int], str | None], keras.Model]:
    def build(input_shape: tuple[int, int, int], weights: str | None) -> keras.Model:
        fn = getattr(keras.applications, fn_name)
        kwargs = {}
        if fn_name.startswith("MobileNetV3") or fn_name.startswith("EfficientNetV2"):
            kwargs["include_preprocessing"] = True
        local = weights not in (None, "imagenet")
        model = fn(include_top=False, weights=None if local else weights, input_shape=input_shape, **kwargs)
        if local:
            model.load_weights(weights)
        return model

    build.__name__ = f"build_{fn_name}"
    return build


#            name              keras fn             family         size  prep    min  params  unfreeze points                                           block regex
_SPECS = [
    ("vgg16",             "VGG16",             "VGG",           224, "caffe", 32, 14.7, {"top": "block5_conv1", "block4": "block4_conv1"}, r"^(block\d+)_"),
    ("vgg19",             "VGG19",             "VGG",           224, "caffe", 32, 20.0, {"top": "block5_conv1", "block4": "block4_conv1"}, r"^(block\d+)_"),
    ("resnet50",          "ResNet50",          "ResNet",        224, "caffe", 32, 23.6, {"top": "conv5_block1_1_conv", "conv4": "conv4_block1_1_conv"}, r"^(conv\d_block\d+)_"),
    ("resnet50v2",        "ResNet50V2",        "ResNet",        224, "tf",    32, 23.6, {"top": "conv5_block1_preact_bn", "conv4": "conv4_block1_preact_bn"}, r"^(conv\d_block\d+)_"),
    ("inceptionv3",       "InceptionV3",       "Inception",     299, "tf",    75, 21.8, {"top": "mixed9", "mixed8": "mixed8"}, r"^(mixed\d+)"),
    ("xception",          "Xception",          "Xception",      299, "tf",    71, 20.9, {"top": "block13_sepconv1_act", "block12": "block12_sepconv1_act"}, r"^(block\d+)_"),
    ("mobilenetv2",       "MobileNetV2",       "MobileNet",     224, "tf",    32, 2.3,  {"top": "block_16_expand", "block_13": "block_13_expand"}, r"^(block_\d+)_"),
    ("mobilenetv3small",  "MobileNetV3Small",  "MobileNet",     224, "none",  32, 0.9,  {"top": "expanded_conv_10_expand", "conv_1": "conv_1"}, r"^(expanded_conv_\d+)_"),
    ("mobilenetv3large",  "MobileNetV3Large",  "MobileNet",     224, "none",  32, 3.0,  {"top": "expanded_conv_14_expand", "conv_1": "conv_1"}, r"^(expanded_conv_\d+)_"),
    ("efficientnetb0",    "EfficientNetB0",    "EfficientNet",  224, "none",  32, 4.0,  {"top": "block6a_expand_conv", "block7": "block7a_expand_conv"}, r"^(block\d[a-z])_"),
    ("efficientnetb1",    "EfficientNetB1",    "EfficientNet",  240, "none",  32, 6.6,  {"top": "block6a_expand_conv", "block7": "block7a_expand_conv"}, r"^(block\d[a-z])_"),
    ("efficientnetb2",    "EfficientNetB2",    "EfficientNet",  260, "none",  32, 7.8,  {"top": "block6a_expand_conv", "block7": "block7a_expand_conv"}, r"^(block\d[a-z])_"),
    ("efficientnetb3",    "EfficientNetB3",    "EfficientNet",  300, "none",  32, 10.8, {"top": "block6a_expand_conv", "block7": "block7a_expand_conv"}, r"^(block\d[a-z])_"),
    ("efficientnetv2b0",  "EfficientNetV2B0",  "EfficientNetV2", 224, "none", 32, 5.9,  {"top": "block6a_expand_conv", "block5": "block5a_expand_conv"}, r"^(block\d[a-z])_"),
]

for _name, _fn, _family, _size, _prep, _min, _params, _points, _regex in _SPECS:
    register(Backbone(
        name=_name, family=_family, input_size=_size, preprocessing=_prep,
        build=_builder(_fn), unfreeze_points=_points, block_pattern=_regex,
        min_input_size=_min, params_millions=_params,
    ))
