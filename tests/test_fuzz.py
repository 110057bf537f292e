"""Property tests: random configs, bytes and CLI values get a clear answer, never a crash."""

from __future__ import annotations

import dataclasses
import io
import math
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from finetune.cli import main
from finetune.config import ConfigError, TrainConfig
from finetune.data import check_image, load_image

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = [f.name for f in dataclasses.fields(TrainConfig)]

any_value = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.lists(st.integers(-5, 300), max_size=3), st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
config_keys = st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=15))


@FUZZ
@given(st.dictionaries(config_keys, any_value, max_size=6))
def test_config_from_random_dict_is_valid_or_names_the_key(values):
    try:
        config = TrainConfig.from_dict(values)
    except ConfigError as err:
        assert any(_names(str(err), key) for key in values), str(err)
        return
    assert all(math.isfinite(v) for v in dataclasses.asdict(config).values() if isinstance(v, float))
    assert 0 <= config.seed < 2**32


def _names(message: str, key: str) -> bool:
    """Whether a ConfigError message names ``key`` (as ``key: ...``, ``'key'``, or in a list of known keys)."""
    return message.startswith(f"{key}:") or repr(key) in message or (key in KEYS and key in message)


@FUZZ
@given(st.sampled_from(KEYS), any_value)
def test_one_bad_value_is_a_config_error_naming_its_key(key, value):
    try:
        TrainConfig.from_dict({key: value})
    except ConfigError as err:
        assert key in str(err)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    """One folder for the module's generated files (hypothesis runs many examples per test; tmp_path is per test)."""
    return tmp_path_factory.mktemp("fuzz")


def _write(folder: Path, data: bytes) -> str:
    handle = tempfile.NamedTemporaryFile(suffix=".png", dir=folder, delete=False)
    with handle:
        handle.write(data)
    return handle.name


def _valid_image_bytes(fmt: str, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (12, 10, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


@FUZZ
@given(st.binary(max_size=2048))
def test_check_image_on_random_bytes_returns_a_reason_or_none(fuzz_dir, data):
    _assert_answered(_write(fuzz_dir, data))


@FUZZ
@given(st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "WEBP"]), st.integers(0, 3),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
       st.one_of(st.none(), st.integers(0, 10**6)))
def test_check_image_on_corrupted_images_returns_a_reason_or_none(fuzz_dir, fmt, seed, flips, cut):
    data = bytearray(_valid_image_bytes(fmt, seed))
    for position, value in flips:
        data[position % len(data)] = value
    _assert_answered(_write(fuzz_dir, bytes(data[:cut] if cut is not None else data)))


def _assert_answered(path: str) -> None:
    """check_image answers; load_image either decodes or fails in a way check_image reports."""
    try:
        reason = check_image(path)
        assert reason is None or (isinstance(reason, str) and reason and "\n" not in reason)
        try:
            pixels = load_image(path, 8)
        except Exception:  # noqa: BLE001 - whatever it is, check_image must have reported the file
            assert reason is not None
            return
        assert pixels.shape == (8, 8, 3) and pixels.dtype == np.uint8
    finally:
        Path(path).unlink()


NUMERIC_OPTIONS = ["--image-size", "--batch-size", "--val-split", "--test-split", "--seed", "--dropout", "--l1",
                   "--l2", "--max-norm", "--lr", "--head-epochs", "--tune-lr", "--tune-epochs", "--unfreeze-blocks",
                   "--unfreeze-fraction", "--patience", "--cache-variants"]
option_value = st.one_of(st.integers(-10**9, 10**9).map(str), st.floats().map(str),
                         st.text(alphabet="0123456789.-e+xnaif", max_size=8))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(NUMERIC_OPTIONS), option_value), min_size=1, max_size=4))
def test_cli_numeric_options_never_give_a_traceback(options):
    args = ["train", "/nonexistent/finetune-fuzz-data"] + [part for pair in options for part in pair]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, (args, result.output)
    assert "Traceback" not in result.output and not isinstance(result.exception, AssertionError)
    assert re.search(r"error|Error", result.output), result.output


def test_train_help_lists_every_fuzzed_option():
    help_text = CliRunner().invoke(main, ["train", "--help"]).output
    assert all(option in help_text for option in NUMERIC_OPTIONS)
