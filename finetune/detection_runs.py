"""Detection run folders: ``finetune train instances.json`` (or a VOC / YOLO folder) end to end, and reading back.

``runs/<name>/`` holds ``model.keras`` (raw YOLO grids out), ``detector.json`` (input size, anchors, classes:
what decoding needs), ``labels.txt``, ``config.yaml``, ``recipe.json``, ``history.csv``, ``splits.json``,
``skipped.csv``, ``metrics.json`` (``test.map``, ``test.map50``, per-class AP; fractions), ``worst.png`` (true
boxes in white, predictions in colour, on the test images with the most misses and false alarms) and
``report.md``. Nothing is written before the recipe is resolved; an existing run folder is never overwritten.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .choices import DETECTOR_PREFIX
from .config import TrainConfig
from .data.boxes import BoxSet, BoxSplit, decode_boxes, read_boxes, split_boxes
from .errors import ConfigError, RunError
from .models.yolo import Detection, Detector, YoloHead, parse_cfg
from .training.detect_resolve import BoxFacts, DetectionRecipe, detector_name, resolve_detection
from .util import atomic_text, atomic_write, yaml_text

#: a prediction counts in the report's pictures and error counts from this score
SHOWN_SCORE = 0.3


def detector_sections(name: str):
    """The cfg sections of the detector ``name`` (``yolov4_tiny`` or ``darknet:CFG[,WEIGHTS]``)."""
    from .models.yolo import detector_files

    cfg = name[len(DETECTOR_PREFIX):].partition(",")[0] if name.startswith(DETECTOR_PREFIX) else detector_files(name)[0]
    try:
        return parse_cfg(Path(cfg).read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"backbone {name!r}: cannot read the cfg ({err})") from None


def pretrained_model(name: str, sections):
    """The pretrained network of the detector ``name`` built from ``sections``, or ``None`` (a cfg without weights:
    random init)."""
    from .models.yolo import build_darknet, load_darknet_weights, load_yolo

    if not name.startswith(DETECTOR_PREFIX):
        return load_yolo(name).model
    weights = name[len(DETECTOR_PREFIX):].partition(",")[2]
    if not weights:
        return None
    model, _ = build_darknet(sections)
    load_darknet_weights(model, sections, weights)
    return model


def box_facts(splits: dict[str, BoxSet], detector: str, sections) -> BoxFacts:
    """The :class:`BoxFacts` of the split boxes (training box sizes as fractions of their images)."""
    from PIL import Image

    sizes = []
    for path, boxes, _ in splits["train"].items:
        if len(boxes):
            with Image.open(path) as img:
                w, h = img.size
            sizes.append((boxes[:, 2:] - boxes[:, :2]) / np.array([w, h], np.float32))
    counts = {k: (len(v.items), v.box_count) for k, v in splits.items()}
    most = max((len(b) for s in splits.values() for _, b, _ in s.items), default=0)
    return BoxFacts(tuple(splits["train"].class_names), counts,
                    np.concatenate(sizes) if sizes else np.zeros((0, 2), np.float32), most, detector,
                    int(sections[0].get("width", 416)))


def plan_detection(config: TrainConfig) -> tuple[dict[str, BoxSet], DetectionRecipe, Any]:
    """``(splits, recipe, cfg sections)``: reads the boxes and resolves every decision; builds and trains nothing."""
    splits = split_boxes(read_boxes(config.data, config.images), config.val_split, config.test_split, config.resolved_split_seed)
    if not splits["train"].box_count:
        raise RunError(f"{config.data}: the training split has no boxes; nothing to learn from")
    name = detector_name(config.backbone)
    sections = detector_sections(name)
    recipe = resolve_detection(config, box_facts(splits, name, sections))
    return splits, recipe, sections


def train_detection(config: TrainConfig, *, overwrite: bool = False, log: Callable[[str], None] = print,
                    resume: str | Path | None = None, on_epoch: Callable[[dict], None] | None = None):
    """Train on the boxes of ``config.data`` and write the run folder; returns ``(run_dir, result, metrics)``.

    Every epoch leaves ``RUN/checkpoint/state.npz``; ``resume=RUN`` continues a run killed mid-way from its last
    epoch (the cache is rebuilt, the same seeded views and batches follow), and ends as the uninterrupted run would.
    """
    from .runs import RUN_CONFIG_HEADER, new_run_dir
    from .training.detect_recipe import DetectionCheckpoint, detect_images, split_map, train_detector

    start = time.perf_counter()
    splits, recipe, sections = plan_detection(config)
    source = pretrained_model(recipe.detector, sections)
    for name, boxes in splits.items():
        log(f"{name:<5} {boxes.summary()}")
    decoded = {k: decode_boxes(v, recipe.input_size) for k, v in splits.items()}
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "checkpoint" / "state.npz").is_file():
            raise RunError(f"{run_dir}: nothing to resume (no checkpoint/state.npz: the run finished or never "
                           "completed an epoch)")
    else:
        run_dir = new_run_dir(config.output, config.name or f"detect-{Path(config.data).stem}", overwrite=overwrite)
        atomic_text(run_dir / "config.yaml", yaml_text(config.to_dict(), RUN_CONFIG_HEADER))
        recipe.save(run_dir / "recipe.json")
    checkpoint = DetectionCheckpoint(run_dir / "checkpoint")
    result = train_detector(recipe, sections, source, decoded["train"], decoded["val"], log=log, start=start,
                            checkpoint=checkpoint, on_epoch=on_epoch)
    metrics, found = None, []
    test = decoded["test"]
    if len(test):
        found = detect_images(result.model, test.images, result.heads, recipe.input_size, recipe.batch_size)
        metrics = {"split": "test", **split_map(test, found, recipe.class_names)}
    result.timings["total"] = time.perf_counter() - start
    _write(run_dir, config, recipe, result, splits, metrics, test, found)
    checkpoint.clear()
    return run_dir, result, metrics


def _write(run_dir: Path, config, recipe, result, splits, metrics, test: BoxSplit, found) -> None:
    from .run_folder import without_training_state
    from .util import csv_text

    atomic_write(run_dir / "model.keras", without_training_state(result.model).save)
    detector = {"kind": "boxes", "detector": recipe.detector, "input_size": recipe.input_size, "resize": "squash",
                "class_names": list(recipe.class_names), "cut": result.cut,
                "heads": [{"anchors": [list(a) for a in h.anchors], "scale_x_y": h.scale_x_y, "classes": h.classes}
                          for h in result.heads]}
    atomic_text(run_dir / "detector.json", json.dumps(detector, indent=1) + "\n")
    atomic_text(run_dir / "labels.txt", "\n".join(recipe.class_names) + "\n")
    atomic_text(run_dir / "history.csv", csv_text(result.history))
    skipped = [{"path": where, "reason": why} for s in splits.values() for where, why in s.skipped]
    atomic_text(run_dir / "skipped.csv", csv_text(skipped, ["path", "reason"]))
    atomic_text(run_dir / "splits.json", json.dumps({k: [p for p, _, _ in v.items] for k, v in splits.items()},
                                                    indent=1) + "\n")
    payload = {"test": metrics, "kept": result.kept, "kept_reason": result.reason,
               "timings_s": {k: round(v, 2) for k, v in result.timings.items()}}
    atomic_text(run_dir / "metrics.json", json.dumps(payload, indent=1) + "\n")
    pictures = []
    if len(test):
        worst = worst_images(test, found, recipe.class_names)
        if worst:
            atomic_write(run_dir / "worst.png", lambda p: montage(test, found, worst, recipe.class_names).save(p, "PNG"))
            pictures.append("worst.png")
    atomic_text(run_dir / "report.md", detection_report(recipe, result, splits, metrics, pictures))


def errors_of(truth: np.ndarray, found, score: float = SHOWN_SCORE, iou: float = 0.5) -> tuple[int, int]:
    """``(missed true boxes, false detections)`` of one image: detections over ``score`` matched at ``iou``."""
    shown = [f for f in found if f[1] >= score]
    matched = set()
    false = 0
    for box, _, _ in shown:
        overlaps = [(_iou(box, t), k) for k, t in enumerate(truth) if k not in matched]
        best = max(overlaps, default=(0.0, -1))
        if best[0] >= iou:
            matched.add(best[1])
        else:
            false += 1
    return len(truth) - len(matched), false


def _iou(a, b) -> float:
    lo, hi = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    union = float(np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter)
    return inter / union if union > 0 else 0.0


def worst_images(split: BoxSplit, found, class_names, count: int = 6) -> list[int]:
    """Indices of up to ``count`` images with the most misses + false alarms (none when every image is right)."""
    errors = [sum(errors_of(split.boxes[i], found[i])) for i in range(len(split))]
    ranked = sorted(range(len(split)), key=lambda i: -errors[i])
    return [i for i in ranked[:count] if errors[i] > 0]


def montage(split: BoxSplit, found, indices: list[int], class_names, tile: int = 320):
    """The images at ``indices`` side by side (3 per row): true boxes white, predictions over the shown score
    coloured with their class and score."""
    from PIL import Image, ImageDraw, ImageFont

    from .evaluation.boxes import draw_detections

    pictures = []
    for i in indices:
        detections = [Detection(class_names[c], s, tuple(float(v) for v in box)) for box, s, c in found[i]
                      if s >= SHOWN_SCORE]
        picture = Image.fromarray(split.images[i])
        draw = ImageDraw.Draw(picture)
        for box in split.boxes[i]:
            draw.rectangle(tuple(float(v) for v in box), outline=(255, 255, 255), width=max(1, picture.width // 200))
        picture = draw_detections(np.asarray(picture), detections).resize((tile, tile))
        missed, false = errors_of(split.boxes[i], found[i])
        caption = f"{Path(split.paths[i]).name}: {missed} missed, {false} false"
        draw = ImageDraw.Draw(picture)
        font = ImageFont.load_default(size=12)
        left, top, right, bottom = draw.textbbox((4, tile - 18), caption, font=font)
        draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=(0, 0, 0))
        draw.text((4, tile - 18), caption, fill=(255, 255, 0), font=font)
        pictures.append(picture)
    cols = min(3, len(pictures))
    rows = -(-len(pictures) // cols)
    sheet = Image.new("RGB", (cols * tile, rows * tile), (0, 0, 0))
    for k, picture in enumerate(pictures):
        sheet.paste(picture, ((k % cols) * tile, (k // cols) * tile))
    return sheet


def detection_report(recipe: DetectionRecipe, result, splits, metrics, pictures: list[str]) -> str:
    lines = ["# Detection run", "", "## Data", ""]
    lines += [f"- {k}: {v.summary()}" for k, v in splits.items()]
    lines += ["", "## Recipe", "", "```", recipe.describe(), f"cache cut      {', '.join(result.cut)}", "```", "",
              "## Training", "", f"Kept: **{result.kept}** ({result.reason}).", "",
              "| phase | epoch | loss | val mAP@0.5 | val mAP | s |", "|---|---:|---:|---:|---:|---:|"]
    for r in result.history:
        lines.append(f"| {r['phase']} | {r['epoch']} | {r.get('loss', 0):.3f} | {_pct(r['val_map50'])} | "
                     f"{_pct(r['val_map'])} | {r['seconds']} |")
    lines += ["", "## Test", ""]
    if metrics:
        lines += [f"mAP@0.5 **{_pct(metrics['map50'])}**, mAP (0.5:0.95) {_pct(metrics['map'])} on "
                  f"{metrics['images']} images, {metrics['boxes']} boxes.", "",
                  "| class | boxes | AP@0.5 | AP |", "|---|---:|---:|---:|"]
        lines += [f"| {name} | {v['boxes']} | {_pct(v['ap50'])} | {_pct(v['ap'])} |"
                  for name, v in metrics["per_class"].items()]
    else:
        lines.append("No test split.")
    for picture in pictures:
        lines += ["", "Worst test images (true boxes white; predictions over "
                  f"{SHOWN_SCORE} in colour):", "", f"![{picture}]({picture})"]
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in result.timings.items())
    lines += ["", f"Timings: {timings}.", ""]
    return "\n".join(lines)


def _pct(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def is_detection_run(run_dir: str | Path) -> bool:
    return (Path(run_dir) / "detector.json").is_file()


def load_detector(run_dir: str | Path) -> Detector:
    """The :class:`~finetune.models.yolo.Detector` a detection run saved (``detect`` draws and lists its boxes).

    Raises:
        RunError: ``run_dir`` is not a detection run folder.
    """
    import keras

    from .models import yolo  # noqa: F401  (registers ChannelGroup for loading)

    run_dir = Path(run_dir)
    if not is_detection_run(run_dir):
        raise RunError(f"{run_dir}: not a detection run folder (no detector.json); train one with "
                       "`finetune train instances.json`")
    spec = json.loads((run_dir / "detector.json").read_text(encoding="utf-8"))
    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    heads = [YoloHead(tuple(tuple(a) for a in h["anchors"]), float(h["scale_x_y"]), int(h["classes"]))
             for h in spec["heads"]]
    return Detector(model, heads, list(spec["class_names"]), int(spec["input_size"]))


def evaluate_detection_run(run_dir: str | Path, data: str | None = None) -> dict:
    """COCO mAP of a detection run on its test split (the run's config re-splits its data with the same seeds), or
    on every image of ``data`` (boxes in any format :func:`~finetune.data.boxes.read_boxes` reads)."""
    from .training.detect_recipe import detect_images, split_map

    run_dir = Path(run_dir)
    detector = load_detector(run_dir)
    config = TrainConfig.load(run_dir / "config.yaml")
    if data:
        boxes = read_boxes(data)
        items = [item for s in boxes.values() for item in s.items]
        names = next(iter(boxes.values())).class_names
        if names != detector.class_names:
            raise RunError(f"{data}: classes {names} differ from the run's {detector.class_names}")
        chosen = BoxSet(names, items)
    else:
        chosen = split_boxes(read_boxes(config.data, config.images), config.val_split, config.test_split,
                             config.resolved_split_seed)["test"]
    split = decode_boxes(chosen, detector.input_size)
    return split_map(split, detect_images(detector.model, split.images, detector.heads, detector.input_size),
                     detector.class_names)
