"""``lightpref iterate --config FILE.yaml [--ckpt_path last]``: the command line of the on-policy rounds.

:class:`IterateCLI` is ``lightpref fit``'s LightningCLI (:class:`~lightpref.commands.trainer_cli.PreferenceCLI`):
the same parser class (loss names with arguments, one-line usage errors), the same help, the same ``trainer``,
``model`` and ``data`` sections, the same seeding, ``--print_config`` and config files. What it changes is what the
sections hold and what is built from them:

- an ``iterate`` section (:class:`~lightpref.iterate.settings.Iteration`) and ``--ckpt_path last``, which continues
  the run stopped in ``iterate.out_dir`` (:mod:`lightpref.iterate.start`);
- no options for what each round decides for itself: the data's source (each round trains on its own pairs; the
  tokenizer is the model's), the model's ``export_dir`` (each round saves its policy under ``round_<r>/policy``),
  the Trainer's ``callbacks``, ``logger``, ``default_root_dir`` and ``enable_checkpointing`` (each round's
  directory, logs and resume checkpoints);
- nothing is built when the command line is parsed: each round builds its own Trainer, module and DataModule from the
  sections (:class:`~lightpref.iterate.workflow.IterativeRun`), with fit's strategies and run callbacks.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch import Trainer, seed_everything

from lightpref.commands import trainer_cli
from lightpref.commands.lightning_parser import PreferenceArgumentParser
from lightpref.data import PreferenceDataModule
from lightpref.iterate.stages import barrier, rank_and_world
from lightpref.iterate.start import check_command, check_models, check_out_dir
from lightpref.iterate.workflow import IterativeRun, add_section, instantiate
from lightpref.training.module import PreferenceModule

DATA_SOURCE_KEYS = {"tokenizer", "gguf_file", "train_files", "val_files", "hub_dataset", "hub_config", "train_split",
                    "val_split", "records", "prompt_views"}
TRAINER_OWN_KEYS = {"callbacks", "logger", "default_root_dir", "enable_checkpointing"}
DESCRIPTION = ("On-policy preference rounds: sample from the policy, score, pair, train, repeat (docs/iterate.md). "
               "Options are config keys; a value on the command line overrides the config's.")


class IterateCLI(trainer_cli.PreferenceCLI):
    """``lightpref fit``'s CLI with the ``iterate`` section; parsing builds nothing (see the module docstring)."""

    def __init__(self, args: Sequence[str] | None = None) -> None:
        super().__init__(
            PreferenceModule,
            PreferenceDataModule,
            args=None if args is None else list(args),
            run=False,
            seed_everything_default=0,
            auto_configure_optimizers=False,  # the module's own `optimizer`/`lr_scheduler`, as in fit
            parser_kwargs={"prog": "lightpref iterate", "description": DESCRIPTION,
                           "formatter_class": trainer_cli.HelpFormatter},
            parser_class=PreferenceArgumentParser,
        )

    def add_default_arguments_to_parser(self, parser: PreferenceArgumentParser) -> None:
        parser.add_argument("--seed_everything", type=int, default=0, help="global seed (round r uses seed + r)")

    def add_core_arguments_to_parser(self, parser: PreferenceArgumentParser) -> None:
        parser.add_class_arguments(Trainer, "trainer", skip=TRAINER_OWN_KEYS, instantiate=False, fail_untyped=False)
        add_section(parser, "model")
        parser.add_class_arguments(PreferenceDataModule, "data", skip=DATA_SOURCE_KEYS, instantiate=False)

    def add_arguments_to_parser(self, parser: PreferenceArgumentParser) -> None:
        # not fit's links: the data section has no tokenizer, the rounds hand it the model's
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="`last`: continue the run stopped in iterate.out_dir where it stopped")
        add_section(parser, "iterate")
        trainer_cli.arrange_help(parser)

    def instantiate_classes(self) -> None:
        """Nothing: the rounds build their own (see :func:`run_iterate`)."""

    def _set_seed(self) -> None:  # LightningCLI's, without its "Seed set to" line (round r reseeds with seed + r)
        seed_everything(self.config["seed_everything"], verbose=False)


def parse_config(argv: Sequence[str]) -> Namespace:
    """The parsed config of ``lightpref iterate`` ``argv``: nothing is loaded or written."""
    return IterateCLI(argv).config


def run_iterate(argv: Sequence[str]) -> list[dict[str, float]]:
    """Parse ``argv`` (as the command line) and run, or continue, the rounds; returns each round's metrics.

    Nothing is written to ``iterate.out_dir`` before the start checks pass (see :mod:`lightpref.iterate.start`)."""
    cli = IterateCLI(argv)
    config = cli.config
    trainer_cli.quiet_known_noise()  # what `lightpref fit` leaves out of its output
    check_command(config)
    check_models(config)
    run = IterativeRun(config, instantiate("iterate", config.iterate))  # the reward model loads here
    run.check_sections()
    out = Path(config.iterate.out_dir)
    if rank_and_world()[0] == 0:
        out.mkdir(parents=True, exist_ok=True)
        settings = json.loads(cli.parser.dump(config, format="json", skip_validation=True))
        check_out_dir(out, settings, config.ckpt_path == "last")
    barrier()
    return run.run()


def main(argv: Sequence[str] | None = None) -> int:
    history = run_iterate(sys.argv[1:] if argv is None else argv)
    for round_, metrics in enumerate(history):
        pairs = f", {metrics['pairs/count']:.0f} pairs" if "pairs/count" in metrics else ""
        print(f"round {round_}: held-out reward {metrics['heldout/reward']:.4f}, "
              f"KL {metrics['heldout/kl']:.3f}{pairs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
