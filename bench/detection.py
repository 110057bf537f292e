"""Detection on ELPV modules (real electroluminescence cells, exact boxes; see bench/elpv_modules.py), in one run.

Arms, each in a child process of its own, on the same splits (74 train / 9 val / 28 test modules, input 608):
  default   `finetune train bench/out/elpv-modules --image-size 608` (the recipe as shipped); also scored: its
            phase-1 weights alone (the COCO network with only neck + heads trained on the cached maps: the
            heads-only arm; its time is the cache + phase 1)
  scratch   the same network from random init, every layer trained live with the same augmentation (Adam 1e-3,
            warm-up then cosine), for the default run's wall time, the best val epoch kept
  speed     `finetune detect --coco` images/s against OpenCV's Darknet reader (bench/detect_speed.py)
mAP@0.5 and mAP (0.5:0.95) by pycocotools on the 28 test modules. Goals (issue 24): default mAP@0.5 >= 0.70,
above the heads-only arm and >= 0.15 above scratch, default alone <= 15 min; detect >= 0.5x OpenCV.

    flock /tmp/finetune-cpu.lock .venv/bin/python bench/detection.py     # after make bench-data
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import OUT, child_main, in_child, machine  # noqa: E402

DATA = OUT / "elpv-modules"
RUNS = OUT / "detection-runs"
SIZE = 608


def _test_map(model, heads, test, recipe) -> dict:
    from finetune.training.detect_recipe import detect_images, split_map

    return split_map(test, detect_images(model, test.images, heads, recipe.input_size, recipe.batch_size),
                     recipe.class_names)


def measure_default(overrides: dict | None = None) -> dict:
    from finetune.config import TrainConfig
    from finetune.data.boxes import decode_boxes
    from finetune.detection_runs import plan_detection, train_detection

    config = TrainConfig(data=str(DATA), image_size=SIZE, output=str(RUNS), name="default", **(overrides or {}))
    start = time.perf_counter()
    run_dir, result, metrics = train_detection(config, overwrite=True, log=lambda m: print(m, file=sys.stderr))
    wall = time.perf_counter() - start
    splits, recipe, _ = plan_detection(config)
    test = decode_boxes(splits["test"], recipe.input_size)
    kept = result.model.get_weights()
    result.model.set_weights(result.head_weights)
    heads_only = _test_map(result.model, result.heads, test, recipe)
    result.model.set_weights(kept)
    return {"map50": metrics["map50"], "map": metrics["map"], "wall_s": wall, "kept": result.kept,
            "reason": result.reason, "timings": result.timings, "run": str(run_dir),
            "heads_map50": heads_only["map50"], "heads_map": heads_only["map"],
            "heads_s": result.timings["cache"] + result.timings["head"],
            "epochs": [(r["phase"], r["epoch"], r["val_map50"]) for r in result.history]}


def measure_scratch(seconds: float) -> dict:
    import dataclasses

    from finetune.config import TrainConfig
    from finetune.data.boxes import decode_boxes
    from finetune.detection_runs import plan_detection
    from finetune.training.detect_recipe import DetectorTraining

    start = time.perf_counter()
    config = TrainConfig(data=str(DATA), image_size=SIZE, seed=0)
    splits, recipe, sections = plan_detection(config)
    recipe = dataclasses.replace(recipe, time_budget=seconds)
    decoded = {k: decode_boxes(v, recipe.input_size) for k, v in splits.items()}
    trainer = DetectorTraining(recipe, sections, None, decoded["train"], decoded["val"],
                               log=lambda m: print(m, file=sys.stderr), start=start)
    steps = -(-len(decoded["train"]) // recipe.batch_size)
    trainer._phase("scratch", trainer.model, trainer._live_batches, 1e-3, 300, 300, steps,
                   lambda: trainer._val_score(lambda s: trainer.model(decoded["val"].images[s].astype("float32"),
                                                                      training=False)))
    result = _test_map(trainer.model, trainer.heads, decoded["test"], recipe)
    epochs = [r for r in trainer.history]
    return {"map50": result["map50"], "map": result["map"], "wall_s": time.perf_counter() - start,
            "epochs": len(epochs), "best_val": max((r["val_map50"] or 0) for r in epochs) if epochs else None}


def measure_speed() -> dict:
    from bench.detect_speed import measure

    return measure(verbose=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--arms", nargs="+", default=["default", "scratch", "speed"])
    parser.add_argument("--json", type=Path, default=OUT / "detection.json")
    parser.add_argument("--reuse", type=Path, help="take the arms an earlier --json run measured (same code) "
                        "instead of rerunning them")
    args = parser.parse_args()
    if not (DATA / "train.json").is_file():
        sys.exit(f"{DATA}: no ELPV modules; run `make bench-data` (or .venv/bin/python bench/elpv_modules.py)")
    print(f"machine: {machine()}")
    rows: dict = json.loads(args.reuse.read_text()) if args.reuse else {}
    if "default" in rows:
        print(f"  (default arm from {args.reuse})")
    if "default" in args.arms or "default" in rows:
        if "default" not in rows:
            rows["default"] = in_child(__file__, "default", {})
        d = rows["default"]
        print(f"  default   mAP@0.5 {d['map50']:.3f}, mAP {d['map']:.3f}, {d['wall_s']:.0f} s (kept {d['kept']}: "
              f"{d['reason']})", flush=True)
        print(f"  heads     mAP@0.5 {d['heads_map50']:.3f}, mAP {d['heads_map']:.3f}, {d['heads_s']:.0f} s "
              "(cache + phase 1 of the default run)", flush=True)
    if "scratch" in args.arms:
        seconds = rows.get("default", {}).get("wall_s", 900.0)
        rows["scratch"] = in_child(__file__, "scratch", {"seconds": seconds})
        s = rows["scratch"]
        print(f"  scratch   mAP@0.5 {s['map50']:.3f}, mAP {s['map']:.3f}, {s['wall_s']:.0f} s ({s['epochs']} epochs)",
              flush=True)
    if "speed" in args.arms:
        rows["speed"] = in_child(__file__, "speed", {})
        r = rows["speed"]
        print(f"  detect    {r['finetune']:.1f} images/s vs OpenCV {r['opencv']:.1f} over {r['images']} images",
              flush=True)
    args.json.write_text(json.dumps(rows, indent=1))
    parts = []
    if "default" in rows:
        d = rows["default"]
        parts.append(f"default mAP@0.5 {d['map50']:.3f} in {d['wall_s'] / 60:.1f} min (goal >= 0.70, <= 15 min); "
                     f"heads-only {d['heads_map50']:.3f}")
    if "scratch" in rows:
        gap = rows["default"]["map50"] - rows["scratch"]["map50"] if "default" in rows else float("nan")
        parts.append(f"scratch {rows['scratch']['map50']:.3f} (default minus scratch {gap:+.3f}, goal >= +0.15)")
    if "speed" in rows:
        r = rows["speed"]
        parts.append(f"detect --coco {r['finetune'] / r['opencv']:.2f}x OpenCV (goal >= 0.5x)")
    print("; ".join(parts))


if __name__ == "__main__":
    if not child_main({"default": measure_default, "scratch": measure_scratch, "speed": measure_speed}):
        main()
