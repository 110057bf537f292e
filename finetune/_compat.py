"""Every use of TensorFlow start-up details and of private Keras internals, in one place.

Keras offers no public API for these few needs; keeping them here means a
Keras upgrade breaks one small module, guarded by the Trainer-equals-fit tests
(tests/training/test_loop.py) and the reuse tests.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 pointed at /dev/null (``FINETUNE_DEBUG=1`` keeps it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules or os.environ.get("FINETUNE_DEBUG"):
        return
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr: nothing to silence
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def unsafe_deserialization() -> contextlib.AbstractContextManager:
    """A scope in which ``clone_model`` may re-create Lambda layers already in memory."""
    from keras.src.saving.serialization_lib import SafeModeScope

    return SafeModeScope(safe_mode=False)


def track_loss(model: Any, loss: Any, sample_weight: Any) -> None:
    """Add ``loss`` to the running mean that ``fit`` reports as ``loss``."""
    model._loss_tracker.update_state(loss, sample_weight=sample_weight)


def build_for(model: Any, element_spec: Any) -> None:
    """Create the model's, loss's and metrics' variables for batches like ``element_spec``."""
    model._symbolic_build(data_batch=element_spec)


def variable_key(optimizer: Any, variable: Any) -> Any:
    """The optimizer's key for ``variable`` (under TF the backing tf.Variable is passed to ``update_step``)."""
    return optimizer._var_key(variable)
