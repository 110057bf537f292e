"""The ``finetune`` command. It prints and sets exit codes; the library only returns and raises.

Importing this package builds the command group; no command imports TensorFlow
until it runs, so ``finetune --help`` answers at once.
"""

from . import inference, serve, tools, train  # noqa: F401  (each registers its commands on `main`)
from .app import EXIT_USAGE, main

__all__ = ["EXIT_USAGE", "main"]
