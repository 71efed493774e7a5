"""``lightpref``: the command line.

- ``lightpref fit | validate | test --config FILE.yaml [--key.sub value …]`` runs Lightning through LightningCLI;
  configs may be repeated and any key overridden with a dotted flag.
- ``lightpref losses`` lists every loss registered in the ``lightpref.losses`` entry-point group.
- ``lightpref export CHECKPOINT OUTPUT [--adapter-only]`` writes a checkpoint's policy as a Hugging Face model.
- ``lightpref build-dataset --output FILE.jsonl [...]`` samples, scores and pairs completions into preference data.
- ``lightpref iterate --config FILE.yaml [--ckpt_path last]`` runs on-policy rounds (see docs/iterate.md).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightpref.data import PreferenceDataModule
from lightpref.errors import reporting_errors
from lightpref.losses import registered_losses
from lightpref.module import PreferenceModule
from lightpref.resume import CheckpointPathCLI
from lightpref.strategies import register_strategies

OWN_COMMANDS = {
    "losses": "list the registered losses: name, distribution, reference needed, summary",
    "export": "CHECKPOINT OUTPUT [--adapter-only]: a checkpoint's policy as a Hugging Face model directory",
    "build-dataset": "--output FILE.jsonl [--reward …]: sample, score and pair completions into preference data",
    "iterate": "--config FILE.yaml [--ckpt_path last]: on-policy rounds (sample, score, pair, train), resumable",
}


class PreferenceCLI(CheckpointPathCLI, LightningCLI):
    """LightningCLI with the values the model and the data share linked, so each is written once."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.pretrained", "data.tokenizer")
        parser.link_arguments("model.gguf_file", "data.gguf_file")


def list_losses() -> int:
    """Print the loss table; returns 1 when some plugin could not be loaded (the others are still listed)."""
    entries = registered_losses()
    rows = [("name", "reference", "distribution", "summary")]
    failures = []
    for entry in entries.values():
        if entry.loss_class is None:
            failures.append(entry.error)
            continue
        needs = "yes" if entry.loss_class.requires_reference else "no"
        rows.append((entry.name, needs, entry.distribution, entry.loss_class.one_line_summary()))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3])
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if failures else 0


@reporting_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "losses":
        return list_losses()
    if args and args[0] == "export":
        from lightpref.export import main as export_main

        return export_main(args[1:])
    if args and args[0] == "build-dataset":
        from lightpref.evaluation.build_dataset import main as build_dataset_main

        return build_dataset_main(args[1:])
    if args and args[0] == "iterate":
        from lightpref.iterate.workflow import main as iterate_main

        return iterate_main(args[1:])
    if not args or args[0] in ("-h", "--help"):
        print("lightpref: preference optimisation on PyTorch Lightning\n")
        for command, text in OWN_COMMANDS.items():
            print(f"  lightpref {command:<9} {text}")
        print("  lightpref fit|validate|test --config FILE.yaml   train or evaluate (details below)\n")
    build_cli(None if argv is None else args)  # None: LightningCLI reads sys.argv itself
    return 0


def build_cli(args: Sequence[str] | None, run: bool = True) -> PreferenceCLI:
    """The LightningCLI behind ``lightpref fit|validate|test``; ``run=False`` only parses and instantiates."""
    args = None if args is None else list(args)
    if not run and args and args[0] in ("fit", "validate", "test"):
        args = args[1:]  # without running, LightningCLI takes no subcommand
    register_strategies()  # `--trainer.strategy fsdp2`
    return PreferenceCLI(
        PreferenceModule,
        PreferenceDataModule,
        args=args,
        run=run,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":
    sys.exit(main())
