"""Plots and the run report. Reporting reads results; it never trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure


def plot_curves(history: Sequence[dict[str, Any]], path: str | Path, unfreeze_epoch: int | None = None) -> None:
    """Accuracy and loss, train vs val, over both phases; a line where unfreezing starts."""
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(11, 4.2), dpi=110)
    axes = fig.subplots(1, 2)
    for ax, metric, title in ((axes[0], "accuracy", "Accuracy"), (axes[1], "loss", "Loss")):
        for key, label, style in ((metric, "train", "-o"), (f"val_{metric}", "val", "-s")):
            values = [row.get(key, np.nan) for row in history]
            if not np.all(np.isnan(values)):
                ax.plot(epochs, values, style, label=label, markersize=3.5, linewidth=1.6)
        if unfreeze_epoch is not None:
            ax.axvline(unfreeze_epoch - 0.5, color="grey", linestyle="--", linewidth=1)
            ax.annotate("unfreeze", xy=(unfreeze_epoch - 0.5, 0), xycoords=("data", "axes fraction"),
                        xytext=(4, 6), textcoords="offset points", color="dimgrey", fontsize=9)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
        if epochs:
            ax.set_xlim(0.5, max(epochs) + 0.5)
    fig.tight_layout()
    fig.savefig(path)


def plot_confusion(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path, title: str = "Confusion matrix (test)") -> None:
    """Counts with row-normalised colour, true classes as rows."""
    cm = np.asarray(matrix, dtype=float)
    k = len(class_names)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    longest = max(len(str(name)) for name in class_names)
    size = min(2.5 + 0.6 * k + 0.06 * longest, 16)
    fig = Figure(figsize=(size + 1.5, size), dpi=110)
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    rotate = k > 4 or longest * k > 40
    ax.set_xticks(range(k), labels=class_names, rotation=35 if rotate else 0, ha="right" if rotate else "center")
    ax.set_yticks(range(k), labels=class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if k <= 30:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                        color="white" if norm[i, j] > 0.5 else "black", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    fig.tight_layout()
    fig.savefig(path)


def markdown_report(
    *, title: str, summary: dict[str, Any], metrics: dict[str, Any] | None, skipped: Sequence[tuple[str, str]],
    images: Sequence[str] = ("curves.png", "confusion.png"), examples: str = "images",
) -> str:
    """The run report as Markdown: settings, test metrics, plots, skipped files."""
    lines = [f"# {title}", ""]
    lines += [f"- **{key}**: {value}" for key, value in summary.items()]
    split = (metrics or {}).get("split", "test")  # "val" where the data has no test split
    heading = "## Test metrics" if split == "test" else "## Validation metrics (no test split)"
    if metrics and metrics.get("n") and metrics.get("multi_label"):
        lines += ["", heading, "",
                  f"Exact match (every label of an image right) **{metrics['accuracy']:.2%}** on {metrics['n']} {split} "
                  f"{examples}; label accuracy {metrics['label_accuracy']:.2%}, micro F1 {metrics['micro_f1']:.3f}, "
                  f"macro F1 {metrics['macro_f1']:.3f}. Each label is predicted when its probability reaches its "
                  "threshold (chosen on the validation split).", "",
                  "| label | threshold | precision | recall | F1 | support |", "|---|---|---|---|---|---|"]
        for name, m in metrics["per_class"].items():
            lines.append(f"| {name} | {m['threshold']:g} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | "
                         f"{m['support']} |")
    elif metrics and metrics.get("n"):
        lines += ["", heading, "",
                  f"Accuracy **{metrics['accuracy']:.2%}** on {metrics['n']} {split} {examples} "
                  f"(balanced accuracy {metrics['balanced_accuracy']:.2%}, macro F1 {metrics['macro_f1']:.3f}).", "",
                  "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        for name, m in metrics["per_class"].items():
            lines.append(f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |")
    captions = {"curves": "Training curves", "confusion": "Confusion matrix",
                "worst": "Worst mistakes (test images with the highest loss; Grad-CAM of the predicted class overlaid)"}
    lines += ["", "## Plots", ""]
    for img in images:
        stem = Path(img).stem
        lines += [f"### {captions.get(stem, stem)}", "", f"![{stem}]({img})", ""]
    lines += ["", f"## Skipped files ({len(skipped)})", ""]
    if skipped:
        lines += [f"- `{path}`: {reason}" for path, reason in skipped[:200]]
        if len(skipped) > 200:
            lines.append(f"- ... and {len(skipped) - 200} more (see skipped.csv)")
    else:
        lines.append("None: every image file was readable." if examples == "images" else
                     f"None: every {examples.rstrip('s')} was readable.")
    return "\n".join(lines) + "\n"


def html_report(markdown_text: str, folder: str | Path) -> str:
    """The Markdown report as one self-contained HTML page: PNGs from ``folder`` embedded as data URIs.

    Example:
        >>> "<h1>Run</h1>" in html_report("# Run", ".")
        True
    """
    import base64
    import html
    import re

    import markdown

    def embed(match: re.Match) -> str:
        path = Path(folder) / match.group(2)
        if not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"![{match.group(1)}](data:image/png;base64,{data})"

    body = markdown.markdown(re.sub(r"!\[([^\]]*)\]\(([^)]+\.png)\)", embed, markdown_text),
                             extensions=["tables", "fenced_code"])
    title = html.escape(markdown_text.splitlines()[0].lstrip("# ").replace("`", "")) if markdown_text else "report"
    style = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45}"
             "img{max-width:100%}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .5rem}"
             "pre{background:#f6f6f6;padding:.6rem;overflow:auto}")
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{style}</style></head><body>\n{body}\n</body></html>\n")


def metrics_table(metrics: dict[str, Any]) -> str:
    """Per-class precision/recall/F1/support and the confusion matrix, as fixed-width text.

    Example:
        >>> m = {"per_class": {"cat": {"precision": 1.0, "recall": 0.5, "f1": 0.667, "support": 2},
        ...                    "dog": {"precision": 0.5, "recall": 1.0, "f1": 0.667, "support": 1}},
        ...      "confusion_matrix": [[1, 1], [0, 1]]}
        >>> print(metrics_table(m))
        class  precision  recall  f1     support
        cat    1.000      0.500   0.667  2
        dog    0.500      1.000   0.667  1
        confusion matrix (rows = true):
          cat       1     1
          dog       0     1
    """
    names = list(metrics["per_class"])
    width = max(len("class"), *(len(n) for n in names))
    if metrics.get("multi_label"):
        lines = [f"{'label':<{width}}  threshold  precision  recall  f1     support"]
        for name, m in metrics["per_class"].items():
            lines.append(f"{name:<{width}}  {m['threshold']:<9.2f}  {m['precision']:.3f}      {m['recall']:.3f}   "
                         f"{m['f1']:.3f}  {m['support']}")
        return "\n".join(lines)
    lines = [f"{'class':<{width}}  precision  recall  f1     support"]
    for name, m in metrics["per_class"].items():
        lines.append(f"{name:<{width}}  {m['precision']:.3f}      {m['recall']:.3f}   {m['f1']:.3f}  {m['support']}")
    lines.append("confusion matrix (rows = true):")
    for name, row in zip(names, metrics["confusion_matrix"]):
        lines.append(f"  {name:<{width}} " + " ".join(f"{v:5d}" for v in row))
    return "\n".join(lines)
