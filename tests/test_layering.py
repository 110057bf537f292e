"""The package's layers: every import in finetune/ (module level or inside a function) goes down, never up.

Read from the source with ``ast``, so lazy imports inside functions count as
much as the ones at the top of a module. The table is README.md's "Layers".
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "finetune"

#: Lowest first. A module may import its own unit and the units of lower layers; never a unit of its own layer
#: or above. A unit is a module or a subpackage of finetune (the longest prefix that matches wins).
LAYERS: list[tuple[str, ...]] = [
    # 0. leaves: import no other finetune module
    ("finetune.errors", "finetune.choices", "finetune.util", "finetune._compat"),
    # 1. pure values and the on-disk cache: TrainConfig and HeadConfig, cache_root; no TensorFlow
    ("finetune.config", "finetune.cache"),
    # 2. images to tensors: scanning, decoding, tf.data pipelines, augmentation presets (data/augment.py)
    ("finetune.data",),
    # 3. networks: backbones, heads, building and freezing a model (puts data/augment.py's layers in the model)
    ("finetune.models",),
    # 4. reading a model: predicting, metrics, diagnostics, uncertainty, explanations, reports; never trains
    ("finetune.evaluation",),
    # 5. training (recipes, loops, optimizers, decision/ordinal rules) and its tracking callbacks
    ("finetune.training", "finetune.tracking"),
    # 6-7. run folders: what a run wrote, then training/evaluating/ensembling a run end to end
    ("finetune.run_folder",),
    ("finetune.runs", "finetune.export_text"),
    # 8. detection run folders end to end (boxes in, a detector and its mAP out; reuses runs' folder helpers)
    ("finetune.detection_runs",),
    # 9. what serves a finished run (export_text, a text run's graphs, sits below export, which dispatches to it)
    ("finetune.export", "finetune.serve", "finetune.export_boxes"),
    # 10. the command line, and `python -m finetune`
    ("finetune.cli",),
    ("finetune.__main__",),
]
#: ``finetune/__init__.py`` is imported before any of its submodules, so it imports only leaves itself
#: and reaches the public API lazily, by name (``finetune.fine_tune`` etc.).
FACADE = "finetune"

#: finetune.training modules that evaluation may read, each a pure value with the reason. None today: decision
#: and ordinal rules are applied by runs, serve and the command line, not by evaluation.
EVALUATION_MAY_IMPORT_FROM_TRAINING: dict[str, str] = {}

#: The finetune/data modules that may use Keras layers: preprocessing layers, active only in training (images;
#: images with their boxes).
DATA_MAY_USE_KERAS = {"finetune.data.augment", "finetune.data.box_augment"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_module(name: str) -> bool:
    return name in MODULES


def imports_of(name: str) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import in the module, at any depth; relative ones resolved."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:  # `from .. import cache` imports the module finetune.cache
                found.append((f"{source}.{alias.name}" if _is_module(f"{source}.{alias.name}") else source, node.lineno))
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            found.append((node.args[0].value, node.lineno))
    return found


def internal_imports(name: str) -> list[tuple[str, int]]:
    return [(target, line) for target, line in imports_of(name) if target == "finetune" or target.startswith("finetune.")]


def unit_of(name: str) -> tuple[str, int]:
    """The unit (the longest matching prefix in LAYERS) of a module, and its layer."""
    matches = [(unit, level) for level, units in enumerate(LAYERS) for unit in units
               if name == unit or name.startswith(unit + ".")]
    if not matches:
        raise LookupError(name)
    return max(matches, key=lambda m: len(m[0]))


def test_every_module_has_a_layer():
    missing = [name for name in MODULES if name != FACADE and not _has_unit(name)]
    assert not missing, f"add these to LAYERS (and README.md's Layers table): {missing}"


def _has_unit(name: str) -> bool:
    try:
        unit_of(name)
    except LookupError:
        return False
    return True


def test_imports_go_down_the_layers():
    upward = []
    for name in MODULES:
        if name == FACADE or not _has_unit(name):
            continue
        unit, level = unit_of(name)
        for target, line in internal_imports(name):
            if target == FACADE:
                upward.append(f"{name}:{line} imports the package facade `finetune`; import the module itself")
                continue
            target_unit, target_level = unit_of(target)
            if target_unit != unit and target_level >= level:
                where = "its own layer" if target_level == level else f"layer {target_level}"
                upward.append(f"{name}:{line} (layer {level}) imports {target} ({where})")
    assert not upward, "imports against the layer order (tests/test_layering.py LAYERS):\n" + "\n".join(upward)


def test_the_package_facade_imports_only_leaves():
    leaves = LAYERS[0]
    bad = [f"finetune/__init__.py:{line} imports {target}" for target, line in internal_imports(FACADE)
           if unit_of(target)[0] not in leaves]
    assert not bad, "\n".join(bad)


def test_the_library_never_imports_the_command_line():
    bad = [f"{name}:{line} imports {target}" for name in MODULES if not (name.startswith("finetune.cli") or name == "finetune.__main__")
           for target, line in internal_imports(name) if target == "finetune.cli" or target.startswith("finetune.cli.")]
    assert not bad, "\n".join(bad)


def test_data_builds_no_networks():
    bad = []
    for name in (n for n in MODULES if n.startswith("finetune.data")):
        for target, line in imports_of(name):
            if target.startswith(("finetune.models", "finetune.training", "finetune.evaluation")):
                bad.append(f"{name}:{line} imports {target}")
            if (target == "keras" or target.startswith("keras.")) and name not in DATA_MAY_USE_KERAS:
                bad.append(f"{name}:{line} imports {target} (only {sorted(DATA_MAY_USE_KERAS)} may: augmentation layers)")
    assert not bad, "\n".join(bad)


TRAINING_CALLS = {"fit", "compile", "train_on_batch", "apply_gradients"}
#: finetune.evaluation modules that may call .fit(), each with the reason: none of them trains a Keras model.
EVALUATION_MAY_FIT: dict[str, str] = {
    "finetune.evaluation.text_baseline": "the report's bag-of-words baseline fits scikit-learn's TF-IDF and "
                                         "logistic regression on the run's training texts, never a network",
}


def test_evaluation_never_trains():
    bad = []
    for name in (n for n in MODULES if n.startswith("finetune.evaluation")):
        for target, line in internal_imports(name):
            if target.startswith("finetune.training") and target not in EVALUATION_MAY_IMPORT_FROM_TRAINING:
                bad.append(f"{name}:{line} imports {target}")
        for node in ast.walk(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in TRAINING_CALLS \
                    and not (name in EVALUATION_MAY_FIT and node.func.attr == "fit"):
                bad.append(f"{name}:{node.lineno} calls .{node.func.attr}()")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("source, expected", [
    ("from ..config import TrainConfig", "finetune.config"),
    ("from .. import cache as store", "finetune.cache"),
    ("def f():\n    from finetune.models.heads import build_classifier", "finetune.models.heads"),
    ("import finetune.training.loop", "finetune.training.loop"),
])
def test_the_parser_sees_relative_lazy_and_submodule_imports(tmp_path, monkeypatch, source, expected):
    monkeypatch.setitem(MODULES, "finetune.cli.tools", tmp_path / "tools.py")  # parsed as if it were cli/tools.py
    (tmp_path / "tools.py").write_text(source)
    assert [target for target, _ in imports_of("finetune.cli.tools")] == [expected]


def test_readme_shows_the_same_layers():
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    section = re.split(r"\n#+ ", readme.split("## Layers", 1)[1], maxsplit=1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|") and line[1:].strip()[:1].isdigit()]
    assert len(rows) == len(LAYERS), rows
    for level, (row, units) in enumerate(zip(rows, LAYERS)):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] == str(level), row
        assert all(f"`{unit.removeprefix('finetune.')}`" in cells[1] for unit in units), (row, units)
