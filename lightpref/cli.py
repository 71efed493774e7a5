"""``lightpref``: the command line.

- ``lightpref fit | validate | test --config FILE.yaml [--key.sub value …]`` runs Lightning through LightningCLI;
  configs may be repeated and any key overridden with a dotted flag.
- ``lightpref losses`` lists every loss registered in the ``lightpref.losses`` entry-point group.
- ``lightpref export CHECKPOINT OUTPUT [--adapter-only]`` writes a checkpoint's policy as a Hugging Face model.
- ``lightpref build-dataset --output FILE.jsonl [...]`` samples, scores and pairs completions into preference data.
- ``lightpref iterate --config FILE.yaml [--ckpt_path last]`` runs on-policy rounds (see docs/iterate.md).
- ``lightpref reward fit|validate|test|losses|export`` trains and exports reward models (docs/reward_models.md);
  ``fit`` trains one too when the config's ``model`` names ``RewardModule`` by ``class_path``.

Only ``fit``, ``validate``, ``test``, ``iterate`` and ``reward fit|validate|test`` import Lightning:
``lightpref --help``, ``lightpref losses`` and the other commands' ``--help`` and usage errors (their parsers are
jsonargparse's, :class:`~lightpref.commands.usage_errors.CommandParser`) start in about the time
``import torch`` takes (measured by ``bench/startup.py``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lightpref import __version__
from lightpref.errors import reporting_errors

if TYPE_CHECKING:
    from lightning.pytorch.cli import LightningCLI

TRAINER_COMMANDS = {
    "fit": "train a policy: lightpref fit --config configs/quickstart.yaml",
    "validate": "the validation metrics of a policy (e.g. before training, or of a checkpoint with --ckpt_path)",
    "test": "the same metrics on the test split (the validation pairs when there is no test split)",
}
# Each command runs `main(argv) -> int` of its module, imported only when the command is given.
OWN_COMMANDS = {
    "losses": ("lightpref.cli:list_losses", "list the registered losses: name, reference needed, distribution, "
                                            "summary"),
    "export": ("lightpref.commands.export:main", "CHECKPOINT OUTPUT [--adapter-only]: a checkpoint's policy as a "
                                                 "Hugging Face model directory"),
    "build-dataset": ("lightpref.commands.build_dataset_options:main",
                      "--output FILE.jsonl [--reward …]: sample, score and pair completions into preference data"),
    "reward": ("lightpref.reward.cli:main", "fit|validate|test|losses|export: train and export reward models "
                                            "(lightpref reward --help)"),
    "iterate": ("lightpref.iterate.command:main", "--config FILE.yaml [--ckpt_path last]: on-policy rounds "
                                                   "(sample, score, pair, train), resumable"),
}


def overview() -> str:
    """What ``lightpref --help`` prints: every command with its whole one-line description."""
    lines = [f"lightpref {__version__}: preference optimisation (DPO and its family) on PyTorch Lightning", "",
             "usage: lightpref COMMAND [options]   (lightpref COMMAND --help for a command's options)", "", "commands:"]
    for command, text in TRAINER_COMMANDS.items():
        lines.append(f"  {command:<14}{text}")
    for command, (_, text) in OWN_COMMANDS.items():
        lines.append(f"  {command:<14}{text}")
    lines += ["", "Options of fit/validate/test are config keys: `--model.loss ipo`, `--data.batch_size 8`, "
              "`--trainer.max_steps 100`;", "`lightpref fit --help` lists them, model and data first.", ""]
    return "\n".join(lines)


def list_losses(argv: Sequence[str] = ()) -> int:
    """Print the loss table; returns 1 when some plugin could not be loaded (the others are still listed)."""
    from lightpref.losses import registered_losses

    if argv:
        print("usage: lightpref losses\n\nLists every loss registered in the `lightpref.losses` entry-point group.",
              file=sys.stderr if argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv[0] in ("-h", "--help") else 2
    rows = [("name", "reference", "distribution", "summary")]
    failures = []
    for entry in registered_losses().values():
        if entry.loss_class is None:
            failures.append(entry.error)
            continue
        rows.append((entry.name, reference_column(entry.loss_class), entry.distribution,
                     entry.loss_class.one_line_summary()))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3])
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if failures else 0


def reference_column(loss_class: type) -> str:
    """``yes``/``no``, or what the reference depends on for a loss that wraps others (``mixture``, ``wpo``)."""
    return vars(loss_class).get("reference_note") or ("yes" if loss_class.requires_reference else "no")


@reporting_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else "--help"
    if command in ("-h", "--help"):
        print(overview())
        return 0
    if command == "--version":
        print(f"lightpref {__version__}")
        return 0
    if command in OWN_COMMANDS:
        module, function = OWN_COMMANDS[command][0].split(":")
        return getattr(importlib.import_module(module), function)(args[1:])
    if command in TRAINER_COMMANDS:
        build_cli(None if argv is None else args)  # None: LightningCLI reads sys.argv itself
        return 0
    print(f"lightpref: unknown command {command!r}\n\n{overview()}", file=sys.stderr)
    return 2


def build_cli(args: Sequence[str] | None, run: bool = True) -> LightningCLI:
    """The LightningCLI behind ``lightpref fit|validate|test``; ``run=False`` only parses and instantiates."""
    from lightpref.commands.trainer_cli import build_cli as build

    return build(args, run=run)


if __name__ == "__main__":
    sys.exit(main())
