"""The command line parses and prints help without starting TensorFlow (the everyday issue: --help < 1 s)."""

import subprocess
import sys

import pytest

PROBE = (
    "import sys\n"
    "from click.testing import CliRunner\n"
    "from finetune.cli import main\n"
    "result = CliRunner().invoke(main, {args!r})\n"
    "assert result.exit_code == 0, result.output\n"
    "heavy = sorted(m for m in ('tensorflow', 'keras', 'matplotlib') if m in sys.modules)\n"
    "print('HEAVY', heavy)\n"
)


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["predict", "--help"], ["export", "--help"]])
def test_help_imports_neither_tensorflow_nor_keras(args):
    out = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout
