"""Pretrained backbones by name. Importing this package registers them all."""

from .registry import Backbone, UnknownBackboneError, get_backbone, list_backbones, register
from .preprocessing import preprocessing_layer, preprocess_numpy
from . import keras_apps  # noqa: F401  (registers keras.applications backbones)

try:  # the offline default; registers efficientnet_lite0/1/2
    from . import efficientnet_lite  # noqa: F401
except ImportError:  # pragma: no cover - module not written yet
    pass

__all__ = [
    "Backbone", "UnknownBackboneError", "get_backbone", "list_backbones", "register",
    "preprocessing_layer", "preprocess_numpy",
]
