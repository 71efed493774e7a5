"""``lightpref export CHECKPOINT OUTPUT`` and ``lightpref reward export CHECKPOINT OUTPUT``: a checkpoint's policy, or
its reward model, as a Hugging Face model directory (:func:`lightpref.models.export.export_checkpoint` and
:func:`lightpref.reward.export.export_reward_checkpoint` do the work; this module only parses the command lines)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from jsonargparse import Namespace

from lightpref.commands.usage_errors import CommandParser
from lightpref.models.export import export_checkpoint


def checkpoint_parser(prog: str, description: str, written_by: str) -> CommandParser:
    """The options both exports take: the checkpoint, the output directory, ``--trust_remote_code``, ``--overwrite``."""
    parser = CommandParser(prog=prog, env_prefix="", description=description)
    parser.add_argument("checkpoint", type=str, metavar="CHECKPOINT", help=f"a .ckpt written by `{written_by}`")
    parser.add_argument("output", type=str, metavar="OUTPUT", help="the directory to write (new or empty)")
    parser.add_argument("--trust_remote_code", "--trust-remote-code", action="store_true",
                        help="run the model's own code shipped with its weights (never taken from the checkpoint)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    return parser


def run_export(parser: CommandParser, argv: Sequence[str], export: Callable[[Namespace], None]) -> int:
    """Parse ``argv``, export, and report; a missing or refused file is one line on stderr and exit status 2."""
    args = parser.parse_args(list(argv))
    try:
        export(args)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(f"exported {args.checkpoint} to {args.output}")
    return 0


def main(argv: Sequence[str]) -> int:
    """``lightpref export``."""
    parser = checkpoint_parser("lightpref export", "A checkpoint's policy as a Hugging Face model directory.",
                               "lightpref fit")
    parser.add_argument("--adapter_only", "--adapter-only", action="store_true",
                        help="save a LoRA adapter alone instead of merging")
    return run_export(parser, argv, lambda args: export_checkpoint(
        Path(args.checkpoint), Path(args.output), merge=not args.adapter_only,
        trust_remote_code=args.trust_remote_code, overwrite=args.overwrite))


def reward_main(argv: Sequence[str]) -> int:
    """``lightpref reward export``."""
    from lightpref.reward.export import export_reward_checkpoint  # the reward model's code: only for this command

    description = "A reward-model checkpoint as a Hugging Face model directory."
    parser = checkpoint_parser("lightpref reward export", description, "lightpref reward fit")
    return run_export(parser, argv, lambda args: export_reward_checkpoint(
        Path(args.checkpoint), Path(args.output), args.trust_remote_code, args.overwrite))
