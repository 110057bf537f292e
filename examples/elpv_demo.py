"""The main job: fine-tune the offline EfficientNet-Lite0 on real solar-cell images.

``python examples/elpv_demo.py`` (``make demo``) writes the ELPV dataset (PyPI
package ``elpv-dataset``: 2,624 electroluminescence images of solar cells,
300x300 grayscale, CC BY-NC-SA 4.0) as a class-folder tree, the layout
``finetune train`` expects, then runs the default two-phase recipe and prints
the test accuracy and the report path. No network access is needed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

#: Defect probability in the ELPV labels -> class folder name (numbered so folders sort by severity).
ELPV_CLASSES = {0.0: "0_functional", 1 / 3: "1_possibly_defective", 2 / 3: "2_likely_defective", 1.0: "3_defective"}


#: The demo runs finetune's defaults: they adapt to these grayscale 300px cells on their own (phase-2 rate,
#: augmented copies in both phases, cached phase 2); see the run's report for what was chosen and why.
DEMO_RECIPE: dict = {}


class MissingDatasetError(RuntimeError):
    """The ``elpv-dataset`` package is not installed."""


def elpv_records() -> list[tuple[Path, float, str]]:
    """``(image path, defect probability, cell type)`` for every ELPV image."""
    try:
        import elpv_dataset
    except ImportError:
        raise MissingDatasetError("the ELPV images come from PyPI: pip install elpv-dataset (or run `make demo` / `make bench-data`)") from None
    import numpy as np

    labels = Path(elpv_dataset.__file__).parent / "data" / "labels.csv"
    data = np.genfromtxt(labels, dtype=["|S19", "<f8", "|S4"], names=["path", "probability", "type"])
    return [(labels.parent / p.decode(), float(prob), t.decode()) for p, prob, t in zip(data["path"], data["probability"], data["type"])]


def elpv_class(probability: float) -> str:
    return ELPV_CLASSES[min(ELPV_CLASSES, key=lambda p: abs(p - probability))]


def write_elpv_folder(dest: str | Path) -> Path:
    """Link (or copy) the ELPV images into ``dest/<class>/`` and return ``dest``.

    An existing complete tree is reused; nothing outside ``dest`` is touched.
    """
    dest = Path(dest)
    records = elpv_records()
    if dest.exists() and sum(1 for _ in dest.rglob("*.png")) == len(records):
        return dest
    for path, probability, cell_type in records:
        place_cell(path, cell_type, dest / elpv_class(probability))
    return dest


def place_cell(path: Path, cell_type: str, folder: Path) -> Path:
    """Hard-link (or copy, across file systems) one ELPV image into ``folder`` as ``<type>_<name>``."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{cell_type}_{path.name}"
    if not target.exists():
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/elpv", help="where to write the class-folder tree [data/elpv]")
    parser.add_argument("--output", default="runs", help="folder for the run folder [runs]")
    parser.add_argument("--head-epochs", type=int, default=None)
    parser.add_argument("--tune-epochs", type=int, default=None)
    args = parser.parse_args(argv)

    from finetune import TrainConfig, train

    try:
        data = write_elpv_folder(args.data)
    except MissingDatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    counts = {p.name: len(list(p.glob("*.png"))) for p in sorted(data.iterdir()) if p.is_dir()}
    print(f"ELPV solar cells written as class folders under {data}/: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    overrides = {k: v for k, v in (("head_epochs", args.head_epochs), ("tune_epochs", args.tune_epochs)) if v is not None}
    config = TrainConfig(data=str(data), output=args.output, name="elpv-demo", **{**DEMO_RECIPE, **overrides})
    print(f"fine-tuning {config.backbone} (offline ImageNet weights) with finetune's defaults: a head on cached "
          f"features, then the top of the base on cached activations; the report says what was chosen and why")
    run_dir, result, metrics = train(config, verbose=1)
    binary = _binary_accuracy(metrics)
    print(f"\ntest accuracy: {metrics['accuracy']:.2%} (4 classes, {metrics['n']} images); "
          f"functional vs defective: {binary:.2%}")
    print(result.phase_table())
    print(result.kept_reason())
    print("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in result.timings.items()))
    print(f"report: {run_dir / 'report.md'}")
    return 0


def _binary_accuracy(metrics: dict) -> float:
    """Accuracy once classes 0 vs 1-3 are merged (functional vs any defect probability)."""
    import numpy as np

    cm = np.asarray(metrics["confusion_matrix"])
    correct = cm[0, 0] + cm[1:, 1:].sum()
    return float(correct / cm.sum())


if __name__ == "__main__":
    sys.exit(main())
