"""Training: the recipe as phases, the one function that fits a phase, and what it needs.

Callbacks with resumable state, checkpoints, the feature cache, the
GradientTape loop, optimizers and schedules, the learning-rate finder, and
tf.distribute strategies.
"""

from .._compat import import_tensorflow_quietly

import_tensorflow_quietly()  # before Keras starts TensorFlow

from ..models import ModelParts, build_model, loss_for
from .checkpoint import RunCheckpoint
from .phase import FitContext, Phase, PhaseData, TrainingDiverged, compile_phase, fit_phase
from .recipe import FineTuneResult, RecipeRun, fine_tune, recipe_phases

__all__ = [
    "FineTuneResult", "FitContext", "ModelParts", "Phase", "PhaseData", "RecipeRun", "RunCheckpoint",
    "TrainingDiverged", "build_model", "compile_phase", "fine_tune", "fit_phase", "loss_for", "recipe_phases",
]
