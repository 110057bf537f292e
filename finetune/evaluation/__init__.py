"""Evaluation reads models, it never trains: one predict path, metrics, diagnostics, uncertainty, report."""

from .._compat import import_tensorflow_quietly

import_tensorflow_quietly()  # before Keras starts TensorFlow

from .metrics import classification_metrics
from .predict import as_class_probs, inference_fn, predict_batches, predict_files, probabilities

__all__ = ["as_class_probs", "classification_metrics", "inference_fn", "predict_batches", "predict_files",
           "probabilities"]
