"""``lightpref reward export CHECKPOINT OUTPUT``: a reward-model checkpoint as a Hugging Face model directory
(:func:`lightpref.reward.export.export_reward_checkpoint` does the work; this module only parses the command line)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lightpref.commands.usage_errors import CommandParser
from lightpref.reward.export import export_reward_checkpoint


def main(argv: Sequence[str]) -> int:
    parser = CommandParser(prog="lightpref reward export", env_prefix="",
                           description="A reward-model checkpoint as a Hugging Face model directory.")
    parser.add_argument("checkpoint", type=str, metavar="CHECKPOINT", help="a .ckpt written by `lightpref reward fit`")
    parser.add_argument("output", type=str, metavar="OUTPUT", help="the directory to write (new or empty)")
    parser.add_argument("--trust_remote_code", "--trust-remote-code", action="store_true",
                        help="run the model's own code shipped with its weights (never taken from the checkpoint)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    args = parser.parse_args(list(argv))
    try:
        export_reward_checkpoint(Path(args.checkpoint), Path(args.output), args.trust_remote_code, args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        parser.exit(2, f"lightpref reward export: error: {error}\n")
    print(f"exported {args.checkpoint} to {args.output}")
    return 0
