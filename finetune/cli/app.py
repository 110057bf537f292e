"""The ``finetune`` command group: error handling and TensorFlow start-up. It prints and sets exit codes."""

from __future__ import annotations

import os
import sys

import click

from .._compat import import_tensorflow_quietly

EXIT_USAGE = 2


def _defaults():
    from ..config import TrainConfig

    return TrainConfig()


class FinetuneGroup(click.Group):
    """Turns known errors into one actionable line and exit code 2 (traceback with --debug)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as err:  # noqa: BLE001 - every error reaches the user as one line
            if ctx.params.get("debug") or os.environ.get("FINETUNE_DEBUG"):
                raise
            from ..training.phase import TrainingDiverged

            if isinstance(err, TrainingDiverged):
                click.secho(f"error: {err}", fg="red", err=True)
                sys.exit(3)
            known = _known_errors()
            if isinstance(err, known):
                click.secho(f"error: {err}", fg="red", err=True)
                sys.exit(EXIT_USAGE)
            click.secho(f"error: {type(err).__name__}: {err}\n(run with --debug for the traceback)", fg="red", err=True)
            sys.exit(1)


def _known_errors() -> tuple[type[BaseException], ...]:
    from ..config import ConfigError
    from ..data import DataError
    from ..export import ExportError
    from ..models.backbones import UnknownBackboneError
    from ..runs import RunError

    return (DataError, ConfigError, UnknownBackboneError, RunError, ExportError, FileNotFoundError)


@click.group(cls=FinetuneGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="keras-finetune")
def main(debug: bool) -> None:
    """Fine-tune a pretrained image classifier on a folder of images.

    \b
    finetune train DATA_DIR            two-phase fine-tuning, writes runs/<name>/
    finetune evaluate RUN_DIR          metrics on the test split (or another folder)
    finetune predict RUN_DIR IMAGES... top-k classes per image
    finetune export RUN_DIR            SavedModel / TFLite / ONNX with a parity check
    finetune lr-find DATA_DIR          suggest a learning rate
    finetune ensemble RUN_DIR...       one run averaging several runs' probabilities
    finetune backbones                 the available pretrained networks
    finetune explain RUN_DIR IMAGES... Grad-CAM: where the network looked
    finetune cache [--clear]           what the cache holds (converted weights, features)
    """


def _start_tensorflow() -> None:
    """Import TensorFlow quietly, once a command is about to run (never for --help)."""
    import_tensorflow_quietly()


#: How an option whose config default is None behaves when it is not given.


def _load(run_dir, unsafe: bool):
    from ..runs import load_run

    if unsafe:
        click.secho("warning: --unsafe loads Lambda layers, which run code stored in the model file", fg="yellow", err=True)
    return load_run(run_dir, safe_mode=not unsafe)


def _check_classes(found, expected, data_dir):
    from ..data import DataError
    if found != expected:
        raise DataError(f"{data_dir!r} has classes {found}, but the model was trained on {expected}")
