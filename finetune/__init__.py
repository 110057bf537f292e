"""finetune: turn a pretrained network into a strong image classifier, on Keras 3.

The package is layered: :mod:`finetune.data` (where images come from),
:mod:`finetune.models` (networks), :mod:`finetune.training` (the recipe as
phases), :mod:`finetune.evaluation` (reads models, never trains), and on top
:mod:`finetune.config`, :mod:`finetune.runs`, :mod:`finetune.export`,
:mod:`finetune.tracking` and :mod:`finetune.cli`. Everything a user needs is
importable from here.

Example:
    >>> import finetune
    >>> "fine_tune" in finetune.__all__
    True
    >>> result = finetune.fine_tune("flowers/", head_epochs=10, tune_epochs=5)   # doctest: +SKIP
    >>> result.model.predict(images)                                           # doctest: +SKIP
"""

import importlib as _importlib
import importlib.abc as _abc
import importlib.util as _util
import os as _os
import sys as _sys
import types as _types
import warnings as _warnings

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"

#: The public API: name -> the module that defines it. Imported on first use, so that
#: ``import finetune.cli`` (and ``finetune --help``) does not start TensorFlow.
_PUBLIC = {
    "ConfigError": "finetune.errors", "TrainConfig": "finetune.config",
    "ExportError": "finetune.errors", "FinetuneError": "finetune.errors", "UnknownBackboneError": "finetune.errors",
    "DataError": "finetune.errors", "ImageFolder": "finetune.data", "load_image": "finetune.data",
    "make_dataset": "finetune.data", "scan_folder": "finetune.data",
    "augmentation": "finetune.data.augment",
    "classification_metrics": "finetune.evaluation",
    "mc_predict": "finetune.evaluation.uncertainty",
    "Backbone": "finetune.models", "HeadConfig": "finetune.config", "ModelParts": "finetune.models",
    "UnfreezePolicy": "finetune.models", "build_classifier": "finetune.models", "build_model": "finetune.models",
    "freeze": "finetune.models", "get_backbone": "finetune.models", "list_backbones": "finetune.models",
    "register": "finetune.models", "reuse": "finetune.models",
    "RunError": "finetune.errors", "evaluate_split": "finetune.runs", "load_run": "finetune.runs", "Run": "finetune.run_folder",
    "ImageSpec": "finetune.data.spec", "Recipe": "finetune.training.resolve", "resolve": "finetune.training.resolve",
    "train": "finetune.runs",
    "FineTuneResult": "finetune.training", "Phase": "finetune.training", "TrainingDiverged": "finetune.training",
    "fine_tune": "finetune.training", "fit_phase": "finetune.training",
    "Trainer": "finetune.training.loop",
    "lr_find": "finetune.training.lr_find",
    "discriminative_optimizer": "finetune.training.optim", "make_optimizer": "finetune.training.optim",
    "make_schedule": "finetune.training.optim",
    "TextSpec": "finetune.data.text", "load_yolo": "finetune.models.yolo", "Detection": "finetune.models.yolo",
    "draw_detections": "finetune.evaluation.boxes", "train_detection": "finetune.detection_runs",
    "load_detector": "finetune.detection_runs", "evaluate_detection_run": "finetune.detection_runs",
}
__all__ = sorted(_PUBLIC)


def _public(name: str):
    module = _PUBLIC[name]
    if module not in ("finetune.config", "finetune.errors"):
        from ._compat import import_tensorflow_quietly

        import_tensorflow_quietly()
    return getattr(_importlib.import_module(module), name)


#: Subpackages and modules reachable as attributes after a bare ``import finetune``.
_SUBMODULES = ("cache", "choices", "cli", "config", "data", "errors", "evaluation", "export", "models", "run_folder", "runs", "tracking",
               "training", "util")


def __getattr__(name: str):
    if name in _PUBLIC:
        value = _public(name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return _importlib.import_module(f"finetune.{name}")
    raise AttributeError(f"module 'finetune' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))


#: Module paths of finetune 0.1 and where they live now. They keep working, with a DeprecationWarning.
MOVED_MODULES = {
    "finetune.augment": "finetune.data.augment",
    "finetune.backbones": "finetune.models.backbones",
    "finetune.distribute": "finetune.training.distribute",
    "finetune.features": "finetune.training.features",
    "finetune.heads": "finetune.models.heads",
    "finetune.inspect": "finetune.evaluation.diagnostics",
    "finetune.lr_find": "finetune.training.lr_find",
    "finetune.metrics": "finetune.evaluation",
    "finetune.optim": "finetune.training.optim",
    "finetune.report": "finetune.evaluation.report",
    "finetune.reuse": "finetune.models.reuse",
    "finetune.trainer": "finetune.training.loop",
    "finetune.transfer": "finetune.models.freeze",
    "finetune.uncertainty": "finetune.evaluation.uncertainty",
}


class _MovedModuleFinder(_abc.MetaPathFinder, _abc.Loader):
    """Serves an old module path (and its submodules) from the module's new home."""

    def __init__(self):
        self._own_specs: dict[int, object] = {}

    def find_spec(self, name, path=None, target=None):
        old = next((o for o in MOVED_MODULES if name == o or name.startswith(o + ".")), None)
        if old is None:
            return None
        return _util.spec_from_loader(name, self)

    def create_module(self, spec):
        old = next(o for o in MOVED_MODULES if spec.name == o or spec.name.startswith(o + "."))
        new = MOVED_MODULES[old] + spec.name[len(old):]
        if spec.name == old:
            # stacklevel 2: Python drops its import-machinery frames, so this names the importing line.
            _warnings.warn(f"{old} moved to {MOVED_MODULES[old]}; the old path will be removed in finetune 0.3",
                           DeprecationWarning, stacklevel=2)
        module = _importlib.import_module(new)
        self._own_specs[id(module)] = module.__spec__
        return module

    def exec_module(self, module):
        # The import system has just set __spec__ to the alias's; the module keeps its own.
        module.__spec__ = self._own_specs.pop(id(module), module.__spec__)


class _Package(_types.ModuleType):
    """Keeps ``finetune.reuse`` and ``finetune.lr_find`` the functions after their old module paths are imported.

    Importing ``finetune.reuse`` as a module makes Python set the package attribute
    ``reuse`` to that module; these properties ignore the assignment.
    """

    reuse = property(lambda self: _public("reuse"), lambda self, value: None)
    lr_find = property(lambda self: _public("lr_find"), lambda self, value: None)


_sys.modules[__name__].__class__ = _Package
if not any(isinstance(f, _MovedModuleFinder) for f in _sys.meta_path):
    _sys.meta_path.insert(0, _MovedModuleFinder())  # before the path finder, which would load a second copy
