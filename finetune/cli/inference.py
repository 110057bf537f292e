"""``finetune evaluate``, ``predict`` and ``export``: commands that read a trained run."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import click

from ..choices import EXPORT_FORMATS, QUANTIZATIONS
from .app import _check_classes, _load, _start_tensorflow, main


@main.command()
@click.argument("run_dir", type=click.Path())
@click.option("--data", "data_dir", type=click.Path(), help="Evaluate on this class-folder tree or labels CSV instead of the run's test split.")
@click.option("--tta", is_flag=True, help="Also report accuracy with test-time augmentation (flips and crops averaged; "
              "for --augment flips runs, the 4 flips).")
@click.option("--unsafe", is_flag=True, help="Allow models with Lambda layers (runs code stored in the model).")
def evaluate(run_dir, data_dir, tta, unsafe):
    """Accuracy, per-class precision/recall/F1 and confusion matrix of a trained run (a detection run: COCO mAP)."""
    _start_tensorflow()
    from ..detection_runs import evaluate_detection_run, is_detection_run

    if is_detection_run(run_dir):
        metrics = evaluate_detection_run(run_dir, data_dir)
        click.echo(f"mAP@0.5: {metrics['map50']:.1%}, mAP (0.5:0.95): {metrics['map']:.1%} on {metrics['images']} "
                   f"images, {metrics['boxes']} boxes")
        for name, v in metrics["per_class"].items():
            ap50 = "-" if v["ap50"] is None else f"{v['ap50']:.1%}"
            click.echo(f"  {name:<20} AP@0.5 {ap50} ({v['boxes']} boxes)")
        return
    from ..data import as_image_folder
    from ..runs import evaluate_split

    run = _load(run_dir, unsafe)
    model, class_names, ordinal = run.model, run.classes, run.decision.ordinal
    if data_dir:
        folder = as_image_folder(data_dir, val_split=0, test_split=0)
        _check_classes(folder.class_names, class_names, data_dir)
        items = [item for split in folder.splits.values() for item in split]
    else:
        items = run.held_out()
    metrics = evaluate_split(model, items, class_names, run.spec, run.config.batch_size,
                             thresholds=run.decision.thresholds, ordinal=ordinal)
    if ordinal is not None:
        click.echo(f"classes decided by the run's {ordinal.describe()}")
    if metrics.get("multi_label"):
        click.echo(f"exact match: {metrics['accuracy']:.2%} on {metrics['n']} images (label accuracy "
                   f"{metrics['label_accuracy']:.2%}, micro F1 {metrics['micro_f1']:.3f}, macro F1 {metrics['macro_f1']:.3f})")
    else:
        click.echo(f"accuracy: {metrics['accuracy']:.2%} on {metrics['n']} {_examples(run)} "
                   f"(balanced {metrics['balanced_accuracy']:.2%}, macro F1 {metrics['macro_f1']:.3f})")
    from ..evaluation.report import metrics_table

    click.echo(metrics_table(metrics))
    if tta and metrics.get("multi_label"):
        click.secho("--tta: not available for multi-label runs yet; skipped", fg="yellow", err=True)
    elif tta:
        from ..evaluation.diagnostics import evaluate_tta, tta_options

        result = evaluate_tta(model, items, class_names, run.spec.size, batch_size=run.config.batch_size,
                              resize=run.spec.resize, ordinal=ordinal, **tta_options(run.config.augment))
        click.echo(f"TTA accuracy: {result['accuracy_tta']:.2%} (without TTA: {result['accuracy']:.2%})")


@main.command()
@click.argument("args", nargs=-1, required=True, type=click.Path())
@click.option("-k", "--top-k", default=3, show_default=True, help="How many classes to show per image.")
@click.option("--csv", "csv_path", type=click.Path(), help="Write predictions to this CSV file instead of printing.")
@click.option("--imagenet", is_flag=True, help="No RUN_DIR: name ImageNet classes with the offline EfficientNet-Lite0 and its original head.")
@click.option("--mc-samples", type=int, default=0, show_default=True,
              help="Average this many MC-dropout passes; report the std of each probability and the predictive entropy.")
@click.option("--tta", is_flag=True, help="Average predictions over flips and crops (test-time augmentation; for "
              "--augment flips runs, the 4 flips).")
@click.option("--text", "texts", multiple=True, help="A text run: classify this text (repeatable).")
@click.option("--unsafe", is_flag=True, help="Allow models with Lambda layers (runs code stored in the model).")
def predict(args, top_k, csv_path, imagenet, mc_samples, tta, texts, unsafe):
    """Top-k classes for images: `predict RUN_DIR IMAGE_OR_FOLDER...` or `predict --imagenet IMAGE...`; for a text
    run, `predict RUN_DIR [TEXTS.txt|TEXTS.csv]... [--text "..."]` (a .txt holds one text per line, a .csv a
    `text` column)."""
    _start_tensorflow()
    import numpy as np

    from ..data import IMAGE_EXTENSIONS
    from ..data.native import decoded_batches
    from ..evaluation.diagnostics import predict_images, tta_options
    from ..evaluation.metrics import labels_over
    from ..training.ordinal import expected_grade

    if imagenet:
        from ..models.backbones.imagenet import imagenet_classifier

        model, image_size, class_names = imagenet_classifier()
        fit = dict(resize="crop", crop_fraction=0.875, bicubic=True)  # the reference (timm) eval transform
        paths = args
    else:
        if len(args) < 2 and not texts:
            raise click.UsageError("give RUN_DIR and at least one image or folder (or --imagenet IMAGE...)")
        run_dir, paths = args[0], args[1:]
        from ..detection_runs import is_detection_run, load_detector

        if is_detection_run(run_dir):
            out = Path(csv_path).parent if csv_path else Path(run_dir) / "predictions"
            return _detect_images(load_detector(run_dir), paths, out, 0.25, 0.45)
        run = _load(run_dir, unsafe)
        if run.spec.kind == "text":
            return _predict_texts(run, paths, texts, top_k, csv_path)
        if texts:
            raise click.UsageError(f"--text: {run_dir} is an image run; give image files")
        model, config, class_names = run.model, run.config, run.classes
        image_size, fit = run.spec.size, run.spec.fit_options
    thresholds = None if imagenet else run.decision.thresholds
    ordinal = None if imagenet else run.decision.ordinal
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith("."))
        elif p.exists():
            files.append(str(p))
        else:
            raise FileNotFoundError(f"image {str(p)!r} does not exist")
    rows, predicted = [], 0
    k = min(top_k, len(class_names))
    header = ["path"] + [h for i in range(1, k + 1) for h in (f"class_{i}", f"prob_{i}")]
    if mc_samples:
        header += [f"std_{i}" for i in range(1, k + 1)] + ["entropy"]
    if thresholds is not None:  # multi-label: every label that reaches its threshold, then each label's probability
        header = ["path", "labels"] + [f"prob_{name}" for name in class_names]
    lead = 1  # columns before the top-k pairs
    if ordinal is not None:  # the run's ordinal rule decides; the top-k probabilities follow
        header[1:1] = ["decision", "expected_grade"]
        lead = 3
    from ..evaluation.predict import inference_fn

    forward = inference_fn(model)  # traced once, for every batch
    # Each file decoded once, in parallel with the model, natively where TensorFlow decodes it as PIL does.
    for chunk, images, bad in decoded_batches(files, image_size, **fit):
        for f, reason in bad:
            click.secho(f"skipped {f}: {reason}", fg="yellow", err=True)
        if not chunk:
            continue
        predicted += len(chunk)
        probs, std, entropy = predict_images(model, images, mc_samples=mc_samples, tta=tta, forward=forward,
                                             tta_views=None if imagenet else tta_options(config.augment))
        if ordinal is not None:  # the whole chunk at once
            decided, grades = ordinal.classes(probs), expected_grade(probs)
        for j, (f, p) in enumerate(zip(chunk, probs)):
            if thresholds is not None:
                rows.append([f, ";".join(labels_over(p, class_names, thresholds))]
                            + [f"{q:.4f}" for q in p])
                continue
            order = np.argsort(-p)[:k]
            row = [f] + [v for i in order for v in (class_names[i], f"{p[i]:.4f}")]
            if ordinal is not None:
                row[1:1] = [class_names[decided[j]], f"{grades[j]:.3f}"]
            if mc_samples:
                row += [f"{std[j][i]:.4f}" for i in order] + [f"{entropy[j]:.4f}"]
            rows.append(row)
    if csv_path:
        with open(csv_path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
        click.echo(f"wrote {len(rows)} predictions to {csv_path}")
    elif thresholds is not None:
        for row in rows:
            probs_text = ", ".join(f"{n} {float(q):.1%}" for n, q in zip(class_names, row[2:]))
            click.echo(f"{row[0]}: labels {row[1].replace(';', ', ') or '(none)'} ({probs_text})")
    else:
        for row in rows:
            shown = []
            for n, i in enumerate(range(lead, lead + 2 * k, 2)):
                text = f"{row[i]} {float(row[i + 1]):.1%}"
                if mc_samples:
                    text += f" +- {float(row[lead + 2 * k + n]):.1%}"
                shown.append(text)
            tail = f" (entropy {float(row[-1]):.3f} nats, {mc_samples} MC-dropout samples)" if mc_samples else ""
            head = f"{row[1]} (ordinal rule, expected grade {row[2]}); " if ordinal is not None else ""
            click.echo(f"{row[0]}: {head}{', '.join(shown)}{tail}")
    if not predicted:
        sys.exit(1)


def _predict_texts(run, paths, texts, top_k, csv_path):
    """Top-k classes for texts from files (.txt: one per line; .csv: a `text` column) and --text options."""
    import numpy as np

    from ..evaluation.metrics import labels_over

    rows = [(f"--text {i + 1}", t) for i, t in enumerate(texts)]
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"text file {str(path)!r} does not exist")
        body = path.read_bytes().decode("utf-8", errors="replace")
        if path.suffix.lower() == ".csv":
            found = list(csv.DictReader(body.lstrip("\ufeff").splitlines()))
            if found and "text" not in {k.strip().lower() for k in found[0]}:
                raise click.UsageError(f"{path}: a CSV of texts needs a `text` column")
            rows += [(f"{path}:{i + 2}", {k.strip().lower(): v for k, v in r.items()}["text"]) for i, r in enumerate(found)]
        else:
            rows += [(f"{path}:{i + 1}", line) for i, line in enumerate(body.splitlines()) if line.strip()]
    if not rows:
        raise click.UsageError("no texts: give a .txt or .csv file, or --text")
    probs = run.predict([t for _, t in rows])
    names, k = run.classes, min(top_k, len(run.classes))
    if probs.shape[-1] == 1 and len(names) == 2:  # one sigmoid: P(second class)
        probs = np.concatenate([1 - probs, probs], axis=-1)
    header = ["source", "text"] + [h for i in range(1, k + 1) for h in (f"class_{i}", f"prob_{i}")]
    table = []
    for (source, text), p in zip(rows, probs):
        if run.decision.thresholds is not None:
            table.append([source, text, ";".join(labels_over(p, names, run.decision.thresholds))])
            continue
        order = np.argsort(-p)[:k]
        table.append([source, text] + [v for i in order for v in (names[i], f"{p[i]:.4f}")])
    if csv_path:
        with open(csv_path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(header if run.decision.thresholds is None else ["source", "text", "labels"])
            writer.writerows(table)
        click.echo(f"wrote {len(table)} predictions to {csv_path}")
        return
    for row in table:
        shown = ", ".join(f"{row[i]} {float(row[i + 1]):.1%}" for i in range(2, len(row) - 1, 2)) if len(row) > 3 \
            else f"labels {row[2] or '(none)'}"
        snippet = row[1] if len(row[1]) <= 60 else row[1][:57] + "..."
        click.echo(f"{row[0]}: {shown}  ({snippet!r})")


@main.command()
@click.argument("run_dir", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="tflite", show_default=True,
              help="Export format (onnx needs `pip install keras-finetune[onnx]`).")
@click.option("--quantize", type=click.Choice(QUANTIZATIONS), default=None, help="TFLite weight quantization (int8 = dynamic range).")
@click.option("--out", "out_path", type=click.Path(), default=None, help="Output path [default: RUN_DIR/export/...].")
@click.option("--score", type=float, default=0.25, show_default=True, help="Detection runs: boxes scoring below this "
              "are dropped inside the exported graph.")
def export(run_dir, fmt, quantize, out_path, score):
    """Export a trained run for deployment and check it against the Keras model (a detection run: boxes after NMS
    in the graph, savedmodel or tflite)."""
    _start_tensorflow()
    from ..detection_runs import is_detection_run
    from ..export import export as export_model

    if is_detection_run(run_dir):
        from ..export_boxes import export_detector

        if quantize:
            raise click.UsageError("--quantize: not for detection runs yet (float32 only)")
        r = export_detector(run_dir, fmt, out_path, score=score)
        click.echo(f"{fmt}: {r['path']} {r['size_bytes'] / 1e6:.2f} MB; on {r['images']} test images the same "
                   f"{r['detections']} detections as Keras (boxes within {r['max_box_diff']:.1e} px, scores within "
                   f"{r['max_score_diff']:.1e})")
        return

    result = export_model(run_dir, fmt, out_path, quantize=quantize)
    click.echo(result.summary())


@main.command()
@click.argument("run_dir", type=click.Path())
@click.argument("images", nargs=-1, type=click.Path())
@click.option("--text", "texts", multiple=True, help="Text runs: a text to explain (repeatable); IMAGES may be .txt "
              "files, one text per line.")
@click.option("--output", "out_dir", type=click.Path(), default=None, help="Folder for the PNGs / HTML [default: RUN_DIR/explain].")
@click.option("--class", "class_name", default=None, help="Explain this class instead of the predicted one.")
@click.option("--unsafe", is_flag=True, help="Allow models with Lambda layers (runs code stored in the model).")
def explain(run_dir, images, texts, out_dir, class_name, unsafe):
    """Grad-CAM for images (one PNG each: where the network looked); for texts, word occlusion (one HTML each:
    the words that spoke for or against the class)."""
    _start_tensorflow()
    from ..evaluation.explain import grad_cam, save_overlay

    run = _load(run_dir, unsafe)
    model, class_names = run.model, run.classes
    if class_name is not None and class_name not in class_names:
        raise click.UsageError(f"--class {class_name!r} is not one of {', '.join(class_names)}")
    out = Path(out_dir or Path(run_dir) / "explain")
    if run.spec.kind == "text":
        return _explain_texts(run, images, texts, out, class_name)
    if not images:
        raise click.UsageError("give one or more images to explain")
    if texts:
        raise click.UsageError("--text is for text runs; this run takes images")
    out.mkdir(parents=True, exist_ok=True)
    for path in images:
        image = run.spec.load(path).astype("float32")
        found = grad_cam(model, image[None], None if class_name is None else class_names.index(class_name))[0]
        written = save_overlay(image, found, out / f"{Path(path).stem}.gradcam.png", class_names)
        click.echo(f"{path}: {class_names[found.class_index]} {found.probability:.1%} -> {written}")


def _explain_texts(run, paths, texts, out: Path, class_name) -> None:
    from ..evaluation.explain_text import attribution_html, occlusion
    from ..util import atomic_text

    given = [(f"--text {i}", t) for i, t in enumerate(texts, 1)]
    for path in paths:
        lines = [line for line in _read_lines(path) if line.strip()]
        given += [(f"{path}:{i}", line) for i, line in enumerate(lines, 1)]
    if not given:
        raise click.UsageError("give texts to explain: --text \"...\" or a .txt file (one text per line)")
    out.mkdir(parents=True, exist_ok=True)
    target = None if class_name is None else run.classes.index(class_name)
    for n, (where, text) in enumerate(given, 1):
        found = occlusion(run.model, run.spec, text, target)
        written = out / f"text_{n}.html"
        atomic_text(written, attribution_html(found, run.classes, where))
        strongest = ", ".join(f"{w} {s:+.2f}" for w, s in found.strongest(5))
        click.echo(f"{where}: {run.classes[found.class_index]} {found.probability:.1%}; strongest words: "
                   f"{strongest} -> {written}")


def _read_lines(path) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read().splitlines()
    except OSError as err:
        raise click.UsageError(f"{path}: cannot read it ({err.strerror})") from None


def _examples(run) -> str:
    return "texts" if run.spec.kind == "text" else "images"


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--coco", "coco", is_flag=True, help="Detect COCO's 80 classes with the offline YOLOv4-tiny.")
@click.option("--run", "run_dir", type=click.Path(), default=None,
              help="Detect your classes with a detection run folder (from `finetune train instances.json`).")
@click.option("--output", "out_dir", type=click.Path(), default=None,
              help="Write detections.json, detections.csv and one <image>.boxes.png per image here.")
@click.option("--score", type=float, default=0.2, show_default=True, help="Keep boxes scoring above this.")
@click.option("--iou", type=float, default=0.45, show_default=True, help="Per-class NMS: drop boxes overlapping "
              "a better one by more than this.")
def detect(images, coco, run_dir, out_dir, score, iou):
    """Find objects in images: one line per box (label, score, corners in pixels)."""
    if bool(coco) == bool(run_dir):
        raise click.UsageError("give --coco (COCO's 80 classes) or --run RUN (a detector you trained), one of them")
    _start_tensorflow()
    if run_dir:
        from ..detection_runs import load_detector

        detector = load_detector(run_dir)
    else:
        from ..models.yolo import load_yolo

        detector = load_yolo("yolov4_tiny")
    _detect_images(detector, images, Path(out_dir) if out_dir else None, score, iou)


def _detect_images(detector, images, out: Path | None, score: float, iou: float) -> None:
    """Print each image's boxes; with ``out``, write detections.json/.csv and drawn PNGs there."""
    from ..data import DataError
    from ..data.images import load_image
    from ..evaluation.boxes import detection_rows, draw_detections, write_detections

    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    rows, failed = [], 0
    for path in images:
        try:
            image = load_image(path)
        except (OSError, DataError) as err:
            click.echo(f"{path}: skipped, not a readable image ({err})", err=True)
            failed += 1
            continue
        found = detector.detect([image], score=score, iou=iou)[0]
        summary = ", ".join(f"{d.label} {d.score:.2f} [{d.box[0]:.0f},{d.box[1]:.0f},{d.box[2]:.0f},{d.box[3]:.0f}]"
                            for d in found)
        click.echo(f"{path}: {len(found)} box{'es' if len(found) != 1 else ''}" + (f": {summary}" if found else ""))
        rows += detection_rows(str(path), found)
        if out is not None:
            draw_detections(image, found).save(out / f"{Path(path).stem}.boxes.png")
    if out is not None:
        written = write_detections(rows, out)
        click.echo(f"wrote {written[0]}, {written[1]} and {len(images) - failed} drawn PNGs in {out}")
    if failed:
        sys.exit(2)
