"""The ``finetune`` command group: error handling and TensorFlow start-up. It prints and sets exit codes."""

from __future__ import annotations

import os
import sys

import click

from .._compat import import_tensorflow_quietly

EXIT_USAGE = 2  # a FinetuneError (or a missing file): the user can fix it
EXIT_DIVERGED = 3  # TrainingDiverged: the loss became NaN or infinite


def _defaults():
    from ..config import TrainConfig

    return TrainConfig()


class FinetuneGroup(click.Group):
    """Turns known errors into one actionable line and an exit code from :func:`exit_codes` (traceback with --debug)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as err:  # noqa: BLE001 - every error reaches the user as one line
            if ctx.params.get("debug") or os.environ.get("FINETUNE_DEBUG"):
                raise
            code = exit_code(err)
            if code is not None:
                click.secho(f"error: {err}", fg="red", err=True)
                sys.exit(code)
            click.secho(f"error: {type(err).__name__}: {err}\n(run with --debug for the traceback)", fg="red", err=True)
            sys.exit(1)


def exit_codes() -> dict[type[BaseException], int]:
    """Exit code by error kind: these print ``error: <message>``; any other error exits 1 with its type name.

    Every :class:`~finetune.errors.FinetuneError` is something the user can fix (an option, the data, a run
    folder, an export request): 2, as click's usage errors. A diverged training is 3. Building the table
    imports nothing heavy, so an error raised before TensorFlow starts exits without starting it.
    """
    from ..errors import ConfigError, DataError, ExportError, FinetuneError, RunError, TrainingDiverged

    return {FinetuneError: EXIT_USAGE, ConfigError: EXIT_USAGE, DataError: EXIT_USAGE, RunError: EXIT_USAGE,
            ExportError: EXIT_USAGE, FileNotFoundError: EXIT_USAGE, TrainingDiverged: EXIT_DIVERGED}


def exit_code(err: BaseException) -> int | None:
    """The code of the most specific class of ``err`` in :func:`exit_codes`, or ``None`` for an unexpected error."""
    codes = exit_codes()
    return next((codes[cls] for cls in type(err).__mro__ if cls in codes), None)


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
    from ..errors import DataError
    if found != expected:
        raise DataError(f"{data_dir!r} has classes {found}, but the model was trained on {expected}")
