"""Session-wide test hygiene, for the tests in tests/ and the doctests in finetune/ alike.

Every test session gets its own temporary folder: ``TMPDIR`` and
``tempfile.tempdir`` point at it from the start, so this process and every
subprocess it starts (including ones a test kills) create their temporary
files there instead of in the system temp dir. At the end of the session the
folder must be empty: whatever a test, a doctest or a subprocess left there is
listed and the session fails. The folder is removed either way.

Tests that need files use pytest's ``tmp_path`` / ``tmp_path_factory`` (kept
by pytest under ``pytest-of-<user>/`` in the system temp dir, the three newest
sessions only); doctests that write files clean up after themselves.

Under pytest-xdist (``make test`` runs two workers) the workers inherit the
controller's folder and the controller checks it once they are done.

Known writers outside our control, tolerated and removed with the folder:

- TensorFlow's AutoGraph writes each converted function's source to
  ``__autograph_generated_file*.py`` (``delete=False``) and removes it in an
  ``atexit`` hook, i.e. after the session ends (never, in a killed subprocess).
- onnxruntime (1.32) writes ``.ses``, its telemetry SDK's session file (51
  bytes, one fixed name, rewritten on each import), on ``import onnxruntime``;
  ``disable_telemetry_events()`` comes too late to stop it.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from pathlib import Path

import pytest

#: File names that third-party code leaves in the temp dir by design (see the module docstring).
TOLERATED = ("__autograph_generated_file*.py", ".ses")

_STATE = pytest.StashKey[dict]()


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput") or os.environ.get("PYTEST_XDIST_WORKER"):
        return  # a pytest-xdist worker: it inherits the controller's folder (TMPDIR), which the controller checks
    system_tmp = tempfile.gettempdir()
    # pytest's own tmp_path folders stay where pytest keeps them (pytest-of-<user>/), outside the checked folder
    saved = {name: os.environ.get(name) for name in ("TMPDIR", "PYTEST_DEBUG_TEMPROOT")}
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", system_tmp)
    folder = Path(tempfile.mkdtemp(prefix="finetune-tests-", dir=system_tmp))
    config.stash[_STATE] = {"folder": folder, "env": saved, "tempdir": tempfile.tempdir, "left": []}
    os.environ["TMPDIR"] = str(folder)  # inherited by subprocesses
    tempfile.tempdir = str(folder)


def leftovers(folder: Path) -> list[str]:
    """Files (and empty folders) under ``folder``, relative to it, except the tolerated ones."""
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_dir() and any(path.iterdir()):
            continue
        if not any(fnmatch.fnmatch(path.name, pattern) for pattern in TOLERATED):
            found.append(str(path.relative_to(folder)) + ("/" if path.is_dir() else ""))
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(_STATE, None)
    if state is None or not state["folder"].exists():
        return
    state["left"] = leftovers(state["folder"])
    if state["left"] and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state and state["left"]:
        terminalreporter.section("files left in the temp dir", sep="=", red=True, bold=True)
        terminalreporter.line(f"the session fails: tests left {len(state['left'])} path(s) in {state['folder']} "
                              "(TMPDIR); write them under tmp_path, or remove them:", red=True)
        for name in state["left"][:50]:
            terminalreporter.line(f"  {name}")
        if len(state["left"]) > 50:
            terminalreporter.line(f"  ... and {len(state['left']) - 50} more")


@pytest.fixture(autouse=True)
def _doctest_cache(tmp_path_factory, monkeypatch):
    """finetune's cache under pytest's basetemp for doctests too (``from_arrays`` writes PNGs), as tests/ has it."""
    monkeypatch.setenv("FINETUNE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is None:
        return
    shutil.rmtree(state["folder"], ignore_errors=True)
    tempfile.tempdir = state["tempdir"]
    for name, value in state["env"].items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
