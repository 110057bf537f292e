"""``python -m finetune ...``: the same as the ``finetune`` command."""

from finetune.cli import main

if __name__ == "__main__":
    main(prog_name="finetune")
