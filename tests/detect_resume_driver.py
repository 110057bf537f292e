"""Runs ``train_detection`` from a JSON argument, optionally killing itself (SIGKILL) after the N-th epoch, or
resuming a run folder: the child process of the detection kill -9 test."""

import json
import os
import signal
import sys

from finetune.config import TrainConfig
from finetune.detection_runs import train_detection


def main() -> None:
    args = json.loads(sys.argv[1])
    seen = []

    def on_epoch(row):
        seen.append(row)
        if len(seen) == args.get("kill_at"):
            os.kill(os.getpid(), signal.SIGKILL)

    train_detection(TrainConfig(**args["config"]), log=lambda _: None, on_epoch=on_epoch, resume=args.get("resume"))


if __name__ == "__main__":
    main()
