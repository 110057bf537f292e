"""Peak memory of the input side on a large folder: is it bounded?

Generates (once) a folder of small JPEGs across 10 classes, then measures, each
in its own subprocess so that peaks do not mix:

  scan   ``scan_folder`` over every file (decodes and discards each image);
  epoch  streaming ``make_dataset(..., cache=None)`` over the whole set at
         224x224, batch 32, into EfficientNet-Lite0 (frozen base forward +
         a train step on the head), stopped after ``--epoch-images`` images.

For the epoch, RSS is sampled after every batch; the growth slope over the
second half (MB per 1,000 images) shows whether memory is flat. The last line
printed is the headline.

    nice -n 10 .venv/bin/python bench/memory.py                 # 50,000 images in a temp dir
    nice -n 10 .venv/bin/python bench/memory.py --dir /tmp/big --epoch-images 4000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

GOALS_MB = {"scan": 1024, "epoch": 3072}

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import rss_mb  # noqa: E402


def generate(root: Path, n_images: int, classes: int, size: int = 32) -> Path:
    """``n_images`` distinct small JPEGs in ``classes`` folders; reused if already there."""
    import numpy as np
    from PIL import Image

    marker = root / f".generated-{n_images}-{classes}-{size}"
    if marker.exists():
        return root
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 25, (64, size, size, 3))
    for c in range(classes):
        (root / f"class_{c:02d}").mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        c = i % classes
        colour = np.array([(37 * c) % 256, (91 * c) % 256, (151 * c) % 256], np.float64)
        pixels = np.clip(colour + noise[i % 64] + (i // 64) % 17, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"class_{c:02d}" / f"img_{i:06d}.jpg", quality=85)
    marker.touch()
    return root


def measure_scan(root: Path) -> dict:
    from finetune.data import scan_folder

    baseline = rss_mb()
    start = time.perf_counter()
    folder = scan_folder(root, workers=4)
    return {"baseline_mb": baseline, "peak_mb": rss_mb("VmHWM"), "seconds": time.perf_counter() - start,
            "files": sum(len(v) for v in folder.splits.values()), "skipped": len(folder.skipped)}


def measure_epoch(root: Path, epoch_images: int, image_size: int, batch_size: int) -> dict:
    import numpy as np

    import finetune
    from finetune.data import make_dataset, scan_folder

    folder = scan_folder(root, val_split=0, test_split=0, workers=4)
    items = folder.splits["train"]
    parts = finetune.build_model("efficientnet_lite0", folder.num_classes, weights="imagenet", augment="none")
    parts.model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    ds = make_dataset(items, image_size, batch_size=batch_size, shuffle=True, cache=None)
    baseline = rss_mb()
    seen, curve, start = 0, [], time.perf_counter()
    for images, labels in ds:
        parts.model.train_on_batch(images, labels)
        seen += int(images.shape[0])
        curve.append((seen, rss_mb()))
        if seen >= epoch_images:
            break
    seconds = time.perf_counter() - start
    half = curve[len(curve) // 2:]
    slope = float(np.polyfit([n for n, _ in half], [m for _, m in half], 1)[0]) * 1000 if len(half) > 1 else 0.0
    return {"baseline_mb": baseline, "peak_mb": rss_mb("VmHWM"), "seconds": seconds, "images": seen,
            "of": len(items), "rss_end_mb": curve[-1][1], "slope_mb_per_1000": slope,
            "images_per_s": seen / seconds}


def run_measurement(kind: str, args) -> dict:
    """One measurement in a fresh interpreter; returns its JSON result."""
    command = [sys.executable, __file__, "--measure", kind, "--dir", str(args.dir), "--images", str(args.images),
               "--epoch-images", str(args.epoch_images), "--image-size", str(args.image_size),
               "--batch-size", str(args.batch_size)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, help="folder for the generated images (default: a temp dir)")
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--epoch-images", type=int, default=2_000, help="stop the epoch after this many images")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--measure", choices=["scan", "epoch"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure == "scan":
        print(json.dumps(measure_scan(args.dir)))
        return
    if args.measure == "epoch":
        print(json.dumps(measure_epoch(args.dir, args.epoch_images, args.image_size, args.batch_size)))
        return

    with tempfile.TemporaryDirectory(prefix="finetune-memory-") as tmp:
        args.dir = args.dir or Path(tmp)
        start = time.perf_counter()
        generate(args.dir, args.images, args.classes)
        print(f"{args.images:,} images in {args.dir} ready in {time.perf_counter() - start:.0f} s", flush=True)
        scan = run_measurement("scan", args)
        print(f"scan: {scan['files']:,} files in {scan['seconds']:.0f} s; RSS {scan['baseline_mb']:,.0f} MB after imports, "
              f"peak {scan['peak_mb']:,.0f} MB", flush=True)
        epoch = run_measurement("epoch", args)
        print(f"epoch: {epoch['images']:,} of {epoch['of']:,} images at {args.image_size}px, batch {args.batch_size}, "
              f"{epoch['images_per_s']:.1f} img/s; RSS {epoch['baseline_mb']:,.0f} MB before, {epoch['rss_end_mb']:,.0f} MB "
              f"after, peak {epoch['peak_mb']:,.0f} MB; growth {epoch['slope_mb_per_1000']:+.1f} MB per 1,000 images "
              "over the second half", flush=True)
    print(f"peak RSS: scan {scan['peak_mb']:,.0f} MB (goal < {GOALS_MB['scan']:,}), "
          f"epoch {epoch['peak_mb']:,.0f} MB (goal < {GOALS_MB['epoch']:,})")


if __name__ == "__main__":
    main()
