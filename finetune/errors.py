"""The errors finetune raises on purpose: each one a sentence the user can act on.

Every class is a :class:`FinetuneError`, which is a :class:`ValueError` (code
written as ``except ValueError`` keeps working). ``finetune`` on the command
line prints one line, ``error: <message>``, and exits with the code of the
error's kind (see ``finetune.cli.app.exit_codes``) instead of a traceback.

This module imports nothing heavy (no TensorFlow, Keras or NumPy), so the
command line can name these classes before TensorFlow starts.

- :class:`ConfigError`: a bad option or configuration value.
  - :class:`UnknownBackboneError`: a backbone name that is not registered.
  - :class:`CannotTap`: ``feature_taps`` asks for more stages than the base has.
  - :class:`DistributeError`: a distribution strategy that cannot be built here.
- :class:`DataError`: a problem with the user's images or labels.
- :class:`RunError`: a run folder or checkpoint that is missing or incomplete.
- :class:`ExportError`: an export that cannot be done as asked.
- :class:`CannotExplain`: a model that Grad-CAM cannot explain.
- :class:`TrainingDiverged` (a :class:`RuntimeError`, not a FinetuneError): the loss became NaN or infinite.

Example:
    >>> from finetune.errors import ConfigError, FinetuneError
    >>> try:
    ...     raise ConfigError("dropout: must be in [0, 1), got 1.5")
    ... except FinetuneError as err:
    ...     print(f"error: {err}")
    error: dropout: must be in [0, 1), got 1.5
    >>> issubclass(ConfigError, ValueError)
    True
"""

from __future__ import annotations

__all__ = [
    "CannotExplain", "CannotTap", "ConfigError", "DataError", "DistributeError", "ExportError", "FinetuneError",
    "RunError", "TrainingDiverged", "UnknownBackboneError",
]


class FinetuneError(ValueError):
    """Base of every error finetune raises on purpose; its message says what to change."""


class ConfigError(FinetuneError):
    """A bad configuration key or value (an option, a ``config.yaml`` entry, an argument)."""


class UnknownBackboneError(ConfigError):
    """Raised for a backbone name that is not registered."""


class CannotTap(ConfigError):
    """The base has too few stages below its final block, or no 4-D output."""


class DistributeError(ConfigError):
    """A strategy that cannot be built here, phrased so the caller can fix it."""


class DataError(FinetuneError):
    """A problem with the user's images, phrased so they can fix it."""


class RunError(FinetuneError):
    """A run folder that is missing or incomplete."""


class ExportError(FinetuneError):
    """An export that cannot be done as asked, phrased so the caller can fix it."""


class CannotExplain(FinetuneError):
    """The model has no convolutional feature map to explain, or is not a chain of layers."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite (the last good checkpoint is kept). Not a user's mistake: a
    :class:`RuntimeError`, which the command line reports with its own exit code."""
