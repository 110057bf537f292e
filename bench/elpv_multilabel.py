"""A real multi-label task for `finetune train labels.csv`: ELPV cells labelled with their type and their state.

Each cell of the benchmark split (``bench/out/elpv-split``) gets two labels in one
CSV cell: ``mono`` or ``poly`` (from the file name) and ``defective`` (defect
probability >= 0.5, classes ``2_likely_defective`` and ``3_defective``) or
``functional``. The CSV keeps the split's train/val/test in its ``split`` column,
so thresholds are chosen on val and the metrics are on the 656 test cells. The
last line printed is the test summary of the run::

    .venv/bin/python bench/elpv_multilabel.py             # writes bench/out/elpv-multilabel.csv, trains with defaults
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import OUT, elpv_split, machine  # noqa: E402

DEFECTIVE = ("2_likely_defective", "3_defective")


def write_csv(root: Path, dest: Path) -> Path:
    lines = ["path,label,split"]
    for path in sorted(root.glob("*/*/*.png")):
        split, name = path.parent.parent.name, path.parent.name
        kind = "mono" if path.name.startswith("mono") else "poly"
        lines.append(f"{path.resolve()},{kind};{'defective' if name in DEFECTIVE else 'functional'},{split}")
    dest.write_text("\n".join(lines) + "\n")
    return dest


def main() -> None:
    csv_path = write_csv(elpv_split(), OUT / "elpv-multilabel.csv")
    print(f"machine: {machine()}\nwrote {csv_path}")
    run = OUT / "runs" / "elpv-multilabel"
    cmd = [sys.executable, "-m", "finetune", "train", str(csv_path), "--output", str(run.parent), "--name",
           run.name, "--overwrite", "-q"]
    subprocess.run(cmd, check=True)
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    for name, m in metrics["per_class"].items():
        print(f"{name:>10}: threshold {m['threshold']:.2f}  precision {m['precision']:.3f}  recall {m['recall']:.3f}  "
              f"F1 {m['f1']:.3f}  support {m['support']}")
    print(f"ELPV multi-label (type + state), test: exact match {metrics['accuracy']:.2%}, label accuracy "
          f"{metrics['label_accuracy']:.2%}, micro F1 {metrics['micro_f1']:.3f}, macro F1 {metrics['macro_f1']:.3f} "
          f"on {metrics['n']} cells")


if __name__ == "__main__":
    main()
