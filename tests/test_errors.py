"""finetune.errors: one hierarchy of ValueErrors, and the command line's exit code and one line for each kind."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

import finetune
from finetune import errors
from finetune.cli import main
from finetune.cli.app import EXIT_DIVERGED, EXIT_USAGE, FinetuneGroup, exit_code, exit_codes

KINDS = [errors.ConfigError, errors.UnknownBackboneError, errors.CannotTap, errors.DistributeError, errors.DataError,
         errors.RunError, errors.ExportError, errors.CannotExplain]


@pytest.mark.parametrize("cls", [errors.FinetuneError, *KINDS], ids=lambda c: c.__name__)
def test_every_error_is_a_finetune_error_and_a_value_error(cls):
    assert issubclass(cls, errors.FinetuneError) and issubclass(cls, ValueError)
    assert cls.__name__ in errors.__all__


def test_config_kinds_are_config_errors():
    for cls in (errors.UnknownBackboneError, errors.CannotTap, errors.DistributeError):
        assert issubclass(cls, errors.ConfigError), cls


def test_the_old_homes_still_export_the_same_classes():
    from finetune.config import ConfigError
    from finetune.data import DataError
    from finetune.evaluation.explain import CannotExplain
    from finetune.export import ExportError
    from finetune.models.backbones import UnknownBackboneError
    from finetune.models.taps import CannotTap
    from finetune.runs import RunError
    from finetune.training.distribute import DistributeError

    assert (ConfigError, DataError, CannotExplain, ExportError, UnknownBackboneError, CannotTap, RunError,
            DistributeError) == (errors.ConfigError, errors.DataError, errors.CannotExplain, errors.ExportError,
                                 errors.UnknownBackboneError, errors.CannotTap, errors.RunError, errors.DistributeError)
    for name in ("FinetuneError", "ConfigError", "UnknownBackboneError", "DataError", "RunError", "ExportError"):
        assert getattr(finetune, name) is getattr(errors, name) and name in finetune.__all__


def test_missing_dependencies_for_asked_features_are_config_errors_and_keep_their_old_base():
    from finetune.models.backbones.efficientnet_lite import MissingWeightsPackageError
    from finetune.tracking import TrackingError

    assert issubclass(TrackingError, errors.ConfigError) and issubclass(TrackingError, RuntimeError)
    assert issubclass(MissingWeightsPackageError, errors.ConfigError) and issubclass(MissingWeightsPackageError, ImportError)


def test_the_exit_code_table():
    from finetune.training import TrainingDiverged

    codes = exit_codes()
    assert codes[errors.FinetuneError] == EXIT_USAGE == 2 and codes[FileNotFoundError] == 2
    assert codes[TrainingDiverged] == EXIT_DIVERGED == 3
    assert all(code == 2 for cls, code in codes.items() if issubclass(cls, errors.FinetuneError))
    assert exit_code(errors.UnknownBackboneError("x")) == 2 and exit_code(TrainingDiverged("x")) == 3
    assert exit_code(ValueError("x")) is None and exit_code(KeyError("x")) is None


def _raising_cli(err: BaseException) -> click.Group:
    """A tiny group with the real error handling, whose one command raises ``err``."""

    @click.group(cls=FinetuneGroup)
    @click.option("--debug", is_flag=True)
    def cli(debug):
        pass

    @cli.command()
    def boom():
        raise err

    return cli


def _diverged(message):
    from finetune.training import TrainingDiverged

    return TrainingDiverged(message)


@pytest.mark.parametrize("make, code", [
    *[(cls, 2) for cls in KINDS],
    (FileNotFoundError, 2),
    (_diverged, 3),
], ids=lambda v: getattr(v, "__name__", str(v)))
def test_the_cli_prints_each_kind_as_one_line_with_its_exit_code(make, code):
    result = CliRunner().invoke(_raising_cli(make("something the user can fix")), ["boom"])
    assert result.exit_code == code, result.output
    assert result.output == "error: something the user can fix\n"


def test_an_unexpected_error_names_its_type_exits_1_and_debug_raises():
    cli = _raising_cli(ValueError("a bug"))
    result = CliRunner().invoke(cli, ["boom"])
    assert result.exit_code == 1
    assert result.output == "error: ValueError: a bug\n(run with --debug for the traceback)\n"
    result = CliRunner().invoke(cli, ["--debug", "boom"])
    assert isinstance(result.exception, ValueError) and str(result.exception) == "a bug"


def test_train_on_a_missing_folder_is_one_line_naming_it(tmp_path):
    missing = tmp_path / "no_such_data"
    result = CliRunner().invoke(main, ["train", str(missing), "-q"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert lines == [f"error: data folder {str(missing)!r} does not exist"], result.output
    assert "ValueError" not in result.output and "Traceback" not in result.output


def test_a_bad_unfreeze_point_was_a_raw_value_error_and_is_now_a_config_error(image_folder, tmp_path):
    result = CliRunner().invoke(main, ["train", str(image_folder), "--backbone", "tiny_cnn", "--weights", "none",
                                       "--image-size", "32", "--unfreeze-from", "no_such_layer", "-q",
                                       "--output", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert "error: no layer named or starting with 'no_such_layer'" in result.output
    assert "ValueError" not in result.output


def test_the_errors_module_imports_nothing_heavy():
    probe = ("import sys\nimport finetune.errors\n"
             "print('HEAVY', sorted(m for m in ('tensorflow', 'keras', 'numpy') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout
