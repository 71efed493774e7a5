"""``lightpref reward``: train, evaluate, list the losses of and export reward models.

- ``lightpref reward fit | validate | test --config FILE.yaml [--key.sub value …]`` is ``lightpref fit | validate |
  test`` (the same LightningCLI: configs, dotted flags, ``--ckpt_path last``, run callbacks) with
  :class:`~lightpref.reward.module.RewardModule` as the ``model`` section's default class, so its arguments may
  be given without ``class_path`` (``lightpref fit`` builds it when the section names it by ``class_path``);
- ``lightpref reward losses`` lists the reward losses registered in ``lightpref.reward_losses``;
- ``lightpref reward export CHECKPOINT OUTPUT`` writes a checkpoint's reward model in Hugging Face format.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """usage: lightpref reward COMMAND [options]

commands:
  fit           train a reward model (= lightpref fit --config configs/reward_model.yaml)
  validate      its validation metrics (of the untrained model, or of a checkpoint given by --ckpt_path)
  test          the same metrics on the test split (the validation pairs when there is none)
  losses        list the registered reward losses: name, distribution, summary
  export        CHECKPOINT OUTPUT: a checkpoint's reward model as a Hugging Face model directory
"""
TRAINER_COMMANDS = ("fit", "validate", "test")


def list_reward_losses() -> int:
    """Print the reward-loss table; 1 when some plugin could not be loaded (the others are still listed)."""
    from lightpref.reward.losses import registered_losses

    rows, failures = [("name", "distribution", "summary")], []
    for entry in registered_losses().values():
        if entry.loss_class is None:
            failures.append(entry.error)
        else:
            rows.append((entry.name, entry.distribution, entry.loss_class.one_line_summary()))
    widths = [max(len(row[column]) for row in rows) for column in range(2)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:2], widths, strict=True)) + "  " + row[2])
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    command = args[0] if args else "--help"
    if command in ("-h", "--help"):
        print(USAGE)
        return 0
    if command == "losses":
        return list_reward_losses()
    if command == "export":
        from lightpref.commands.export import reward_main as export

        return export(args[1:])
    if command in TRAINER_COMMANDS:
        from lightpref.commands.trainer_cli import build_cli
        from lightpref.reward.module import RewardModule

        build_cli(args, model_class=RewardModule)
        return 0
    print(f"lightpref reward: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2
