"""finetune: turn a pretrained network into a strong image classifier, on Keras 3.

Example:
    >>> import finetune
    >>> result = finetune.fine_tune("flowers/", head_epochs=10, tune_epochs=5)   # doctest: +SKIP
    >>> result.model.predict(images)                                           # doctest: +SKIP
"""

import os as _os

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from ._quiet import import_tensorflow_quietly as _import_tensorflow_quietly  # noqa: E402

_import_tensorflow_quietly()

__version__ = "0.1.0"

from .augment import augmentation  # noqa: E402
from .backbones import Backbone, get_backbone, list_backbones, register  # noqa: E402
from .config import ConfigError, TrainConfig  # noqa: E402
from .data import DataError, ImageFolder, load_image, make_dataset, scan_folder  # noqa: E402
from .heads import HeadConfig, build_classifier  # noqa: E402
from .metrics import classification_metrics  # noqa: E402
from .runs import RunError, evaluate_split, load_run, train  # noqa: E402
from .training import FineTuneResult, ModelParts, build_model, fine_tune  # noqa: E402
from .transfer import UnfreezePolicy, freeze  # noqa: E402
from .trainer import Trainer  # noqa: E402
from .lr_find import lr_find  # noqa: E402
from .optim import discriminative_optimizer, make_optimizer, make_schedule  # noqa: E402
from .reuse import reuse  # noqa: E402
from .uncertainty import mc_predict  # noqa: E402
from .training import TrainingDiverged  # noqa: E402

__all__ = [
    "Backbone", "ConfigError", "DataError", "FineTuneResult", "HeadConfig", "ImageFolder", "ModelParts",
    "RunError", "TrainConfig", "UnfreezePolicy", "augmentation", "build_classifier", "build_model",
    "classification_metrics", "evaluate_split", "fine_tune", "freeze", "get_backbone", "list_backbones",
    "load_image", "load_run", "make_dataset", "register", "scan_folder", "train",
    "Trainer", "lr_find", "make_optimizer", "make_schedule", "discriminative_optimizer", "reuse", "mc_predict",
    "TrainingDiverged",
]
