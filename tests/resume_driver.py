"""Run by test_resume.py in a subprocess: train a tiny run, optionally SIGKILL itself after an epoch."""

import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(__file__))
import keras  # noqa: E402

import tiny_backbone  # noqa: E402,F401
from finetune import TrainConfig, train  # noqa: E402


class KillAfterEpoch(keras.callbacks.Callback):
    """Simulates `kill -9` right after epoch N's checkpoint is written."""

    def __init__(self, phase_epochs_seen: list, kill_at: int):
        super().__init__()
        self.kill_at, self.seen = kill_at, phase_epochs_seen

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.kill_at:
            # the Checkpointer runs after user callbacks; give it this epoch by deferring the kill
            self.model.stop_training = False
            self.seen.append(epoch)

    def on_epoch_begin(self, epoch, logs=None):
        if self.seen:
            os.kill(os.getpid(), signal.SIGKILL)


def force_plateau(**overrides):
    """Make ``schedule="plateau"`` build its callback with ``overrides`` (TrainConfig has no plateau options)."""
    import finetune.training.callbacks as callbacks

    class Plateau(callbacks.ResumablePlateau):
        def __init__(self, **kwargs):
            super().__init__(**{**kwargs, **overrides})

    callbacks.ResumablePlateau = Plateau


def main():
    args = json.loads(sys.argv[1])
    if args.get("plateau"):
        force_plateau(**args["plateau"])
    config = TrainConfig(**args["config"])
    callbacks = [KillAfterEpoch([], args["kill_at"])] if args.get("kill_at") else []
    run_dir, result, _ = train(config, verbose=0, callbacks=callbacks, resume=args.get("resume"))
    print(json.dumps({"run_dir": str(run_dir), "epochs": len(result.history)}))


if __name__ == "__main__":
    main()
