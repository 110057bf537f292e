"""Import TensorFlow without its C++ start-up chatter (oneDNN and absl notices)."""

import os
import sys


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
