"""Every dotted ``finetune.`` path in the package's docstrings and comments, and in README.md, names something real.

A path resolves when its longest prefix that is a module file of finetune/
imports and the rest are attributes of it. The 0.1 module paths that
``finetune.MOVED_MODULES`` still serves (with a DeprecationWarning) do not
count: documentation names the new home. Only a line about 0.1 may name an
old module path itself (README.md's note on them).
"""

from __future__ import annotations

import ast
import importlib
import io
import re
import tokenize
import types
from pathlib import Path

import finetune

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "finetune"
DOCUMENTS = [ROOT / "README.md"]
DOTTED = re.compile(r"(?<![\w.\-/])finetune(?:\.[A-Za-z_]\w*)+")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p) for p in PACKAGE.rglob("*.py")}


def prose_lines(path: Path):
    """``(line number, text)`` of every docstring line and comment of a module."""
    source = path.read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                first = node.body[0].lineno
                yield from ((first + i, line) for i, line in enumerate(doc.splitlines()))
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string


def documented_paths():
    """``(where, dotted path, line text)`` for every ``finetune.`` path in the package's prose and README.md."""
    for path in sorted(PACKAGE.rglob("*.py")):
        for number, text in prose_lines(path):
            for match in DOTTED.finditer(text):
                yield f"{path.relative_to(ROOT)}:{number}", match.group(0), text
    for path in DOCUMENTS:
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in DOTTED.finditer(text):
                yield f"{path.relative_to(ROOT)}:{number}", match.group(0), text


def resolves(dotted: str) -> bool:
    """Whether ``dotted`` names a module of finetune/ or an attribute of one, without the 0.1 aliases."""
    parts = dotted.split(".")
    known = next(n for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in MODULES)
    obj = importlib.import_module(".".join(parts[:known]))
    for n in range(known, len(parts)):
        try:
            obj = getattr(obj, parts[n])
        except AttributeError:
            return False
        # an old module path imported elsewhere (finetune.metrics) is an attribute of the package too: not a home
        if isinstance(obj, types.ModuleType) and obj.__name__ != ".".join(parts[:n + 1]):
            return False
    return True


def test_every_documented_finetune_path_resolves():
    stale = []
    for where, dotted, text in documented_paths():
        if dotted in finetune.MOVED_MODULES and "0.1" in text:
            continue  # naming the old module paths, as old
        if not resolves(dotted):
            stale.append(f"{where}: {dotted}")
    assert not stale, "these paths name nothing (0.1 module paths? see finetune.MOVED_MODULES):\n" + "\n".join(stale)


def test_the_scan_finds_paths_and_sees_through_the_old_ones(monkeypatch):
    found = {dotted for _, dotted, _ in documented_paths()}
    assert len(found) > 20 and any(p.startswith("finetune.evaluation.") for p in found), found
    assert resolves("finetune.training.loop.Trainer") and resolves("finetune.data") and resolves("finetune.fine_tune")
    assert not resolves("finetune.evaluation.metrics.no_such_function")
    loop = importlib.import_module("finetune.training.loop")
    monkeypatch.setattr(finetune, "trainer", loop, raising=False)  # as after `import finetune.trainer` elsewhere
    assert not resolves("finetune.trainer.Trainer")
