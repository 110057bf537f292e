"""finetune 0.1 module paths (``finetune.optim``, ``finetune.trainer``, ...) still import, with a DeprecationWarning.

Every other test imports the new paths; this module alone keeps the old ones alive.
"""

import importlib
import json
import subprocess
import sys
import textwrap
import warnings

import pytest

import finetune
from finetune import MOVED_MODULES

#: Submodules reached through an old package path (``finetune.backbones`` was a package in 0.1).
#: Library bug, reported: the finder is appended to ``sys.meta_path``, so the ordinary PathFinder finds
#: these files in the package's ``__path__`` first and runs them again as new modules named after the old
#: path (other classes, e.g. ``UnsafePickleError``; and ``from ...util import`` fails there with
#: "attempted relative import beyond top-level package").
#: Checked in a subprocess, as a second copy of a module would stay behind in this one.
OLD_SUBMODULES = ["pth", "imagenet", "preprocessing", "efficientnet_lite", "keras_apps"]


def import_quietly(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return importlib.import_module(name)


def test_the_moved_modules_table():
    assert sorted(MOVED_MODULES) == [
        "finetune.augment", "finetune.backbones", "finetune.distribute", "finetune.features", "finetune.heads",
        "finetune.inspect", "finetune.lr_find", "finetune.metrics", "finetune.optim", "finetune.report",
        "finetune.reuse", "finetune.trainer", "finetune.transfer", "finetune.uncertainty",
    ]


@pytest.mark.parametrize("old, new", sorted(MOVED_MODULES.items()))
def test_old_path_is_the_new_module_object(old, new):
    assert import_quietly(old) is importlib.import_module(new)
    assert sys.modules[old] is sys.modules[new]


def test_from_old_path_import_names():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from finetune.optim import make_optimizer
        from finetune.trainer import Trainer
    from finetune.training.loop import Trainer as NewTrainer
    from finetune.training.optim import make_optimizer as new_make_optimizer

    assert Trainer is NewTrainer and make_optimizer is new_make_optimizer


def test_reuse_and_lr_find_stay_functions_after_their_old_module_paths_are_imported():
    import_quietly("finetune.reuse")
    import_quietly("finetune.lr_find")
    assert callable(finetune.reuse) and finetune.reuse.__name__ == "reuse"
    assert callable(finetune.lr_find) and finetune.lr_find.__name__ == "lr_find"


# Runs in a fresh interpreter: a DeprecationWarning is only raised the first time an old path is imported.
FIRST_IMPORTS = """
import json, sys, warnings
import finetune

report = {}
for old in sorted(finetune.MOVED_MODULES):
    with warnings.catch_warnings(record=True) as first:
        warnings.simplefilter("always")
        exec(f"import {old}")
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        exec(f"import {old}")
    report[old] = {
        "first": [[w.category.__name__, str(w.message)] for w in first],
        "again": [[w.category.__name__, str(w.message)] for w in again],
        "same": sys.modules[old] is sys.modules[finetune.MOVED_MODULES[old]],
    }
for name in SUBMODULES:
    old, new = f"finetune.backbones.{name}", f"finetune.models.backbones.{name}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exec(f"import {old}")
        report[old] = {"same": sys.modules[old] is sys.modules[new]}
    except Exception as err:
        report[old] = {"same": False, "error": repr(err)}
print("REPORT", json.dumps(report))
"""


@pytest.fixture(scope="module")
def first_imports():
    code = f"SUBMODULES = {OLD_SUBMODULES!r}\n{FIRST_IMPORTS}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("REPORT "))
    return json.loads(line[len("REPORT "):])


def test_first_import_of_each_old_path_warns_once_in_a_fresh_process(first_imports):
    for old, new in MOVED_MODULES.items():
        seen = first_imports[old]
        deprecations = [message for category, message in seen["first"] if category == "DeprecationWarning"]
        assert deprecations == [f"{old} moved to {new}; the old path will be removed in finetune 0.3"], (old, seen)
        assert not [m for c, m in seen["again"] if c == "DeprecationWarning"], (old, seen)
        assert seen["same"], old


@pytest.mark.parametrize("name", OLD_SUBMODULES)
def test_old_package_path_submodule_is_the_new_module_object(first_imports, name):
    seen = first_imports[f"finetune.backbones.{name}"]
    assert seen["same"], seen


def test_a_script_importing_an_old_path_shows_the_warning_with_default_filters(tmp_path):
    script = tmp_path / "old_user.py"
    script.write_text("import finetune.optim\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{script}:1: DeprecationWarning: finetune.optim moved to finetune.training.optim" in done.stderr


def test_importing_an_old_path_leaves_the_new_module_spec_alone():
    code = textwrap.dedent("""
        import warnings
        warnings.simplefilter("ignore")
        import finetune.training.optim as new
        import finetune.optim
        print(new.__spec__.name)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "finetune.training.optim"
