"""Every closed list is declared once, in finetune.choices; the modules that act on a choice handle each one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from finetune import choices

PACKAGE = Path(__file__).resolve().parents[1] / "finetune"
CLOSED_LISTS = {name: value for name, value in vars(choices).items()
                if name.isupper() and isinstance(value, tuple) and all(isinstance(v, str) for v in value)}


def _string_literal(node: ast.AST) -> set[str] | None:
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and node.elts and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
        return {e.value for e in node.elts}
    return None


def test_no_module_declares_a_closed_list_again():
    """A module-level tuple/list/set of names equal to a list of finetune.choices is a second declaration."""
    again = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "choices.py" and path.parent == PACKAGE:
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            names = _string_literal(value) if value is not None else None
            for listed, members in CLOSED_LISTS.items():
                if names and names == set(members):
                    again.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} repeats choices.{listed}")
    assert not again, "import these from finetune.choices instead:\n" + "\n".join(again)


def test_augmentation_builds_every_preset():
    from finetune.data import augment

    assert augment.PRESETS is choices.AUGMENT_PRESETS
    for preset in choices.AUGMENT_PRESETS:
        pipeline = augment.augmentation(preset, seed=0)
        assert (pipeline is None) == (preset == "none"), preset
        assert pipeline is None or pipeline.layers, preset


def test_make_strategy_knows_every_strategy(monkeypatch):
    from finetune.errors import DistributeError
    from finetune.training import distribute

    assert distribute.STRATEGIES is choices.STRATEGIES
    monkeypatch.delenv("TF_CONFIG", raising=False)
    for name in choices.STRATEGIES:
        if name == "multiworker":  # needs a cluster; without TF_CONFIG it must say so, not fall through
            with pytest.raises(DistributeError, match="TF_CONFIG"):
                distribute.make_strategy(name)
        else:
            assert distribute.make_strategy(name).num_replicas_in_sync >= 1, name


def test_export_formats_and_quantizations_come_from_choices():
    from finetune import export

    assert export.FORMATS is choices.EXPORT_FORMATS and export.QUANTIZATIONS is choices.QUANTIZATIONS
    names = {export.default_filename(fmt) for fmt in choices.EXPORT_FORMATS}
    names |= {export.default_filename("tflite", q) for q in choices.QUANTIZATIONS}
    assert len(names) == len(choices.EXPORT_FORMATS) + len(choices.QUANTIZATIONS)  # no two exports share a file
