"""Networks: the backbone registry, heads, building a model, freeze policies, reusing a saved model.

Models know nothing of where images come from: they take raw RGB [0, 255]
tensors and return probabilities.
"""

from .._compat import import_tensorflow_quietly

import_tensorflow_quietly()  # before Keras starts TensorFlow

from .backbones import Backbone, UnknownBackboneError, get_backbone, list_backbones, preprocessing_layer, register
from .build import ModelParts, build_model, check_image_size, input_size_for, is_multi_label, is_small, loss_for, metrics_for
from .freeze import UnfreezePolicy, backbone_from_model, blocks_of, freeze
from .heads import HeadConfig, build_classifier, pooling_layer
from .reuse import reuse
from . import token_bag  # noqa: F401  (registers the text models' bag-of-words layers for loading)

__all__ = [
    "Backbone", "HeadConfig", "ModelParts", "UnfreezePolicy", "UnknownBackboneError", "backbone_from_model",
    "blocks_of", "build_classifier", "build_model", "check_image_size", "input_size_for", "is_multi_label", "is_small", "freeze", "get_backbone", "list_backbones", "loss_for", "metrics_for",
    "pooling_layer", "preprocessing_layer", "register", "reuse",
]
