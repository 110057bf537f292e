"""The README's layout map names every module of the package, so it stays in step with the tree."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _layout_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("```\nfinetune/\n")
    block = text[start:text.index("```", start + 4)]
    return block[:block.index("\nexamples/")]  # the package's part of the map


def test_every_module_is_in_the_layout_map():
    block = _layout_block()
    named = set(re.findall(r"[\w]+(?=\.py)|[\w]+(?=/)", block))
    missing = sorted({p.stem if p.name != "__init__.py" else p.parent.name
                      for p in (ROOT / "finetune").rglob("*.py")} - named)
    assert not missing, f"README layout map misses {missing}: add a line for each"


def test_the_layout_map_names_no_module_that_is_gone():
    block = _layout_block()
    stems = {p.stem for p in (ROOT / "finetune").rglob("*.py")} | {p.name for p in (ROOT / "finetune").rglob("*")
                                                                    if p.is_dir()}
    named = set(re.findall(r"\b(\w+)\.py\b", block))
    assert named <= stems, f"README layout map names missing modules {sorted(named - stems)}"
