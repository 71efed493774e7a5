"""``lightpref export CHECKPOINT OUTPUT``: a checkpoint's policy as a Hugging Face model directory
(:func:`lightpref.models.export.export_checkpoint` does the work; this module only parses the command line)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lightpref.commands.usage_errors import CommandParser
from lightpref.models.export import export_checkpoint


def main(argv: Sequence[str]) -> int:
    parser = CommandParser(prog="lightpref export", env_prefix="",
                           description="A checkpoint's policy as a Hugging Face model directory.")
    parser.add_argument("checkpoint", type=str, metavar="CHECKPOINT", help="a .ckpt written by `lightpref fit`")
    parser.add_argument("output", type=str, metavar="OUTPUT", help="the directory to write (new or empty)")
    parser.add_argument("--adapter_only", "--adapter-only", action="store_true",
                        help="save a LoRA adapter alone instead of merging")
    parser.add_argument("--trust_remote_code", "--trust-remote-code", action="store_true",
                        help="run the model's own code shipped with its weights (never taken from the checkpoint)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    args = parser.parse_args(list(argv))
    try:
        export_checkpoint(Path(args.checkpoint), Path(args.output), merge=not args.adapter_only,
                          trust_remote_code=args.trust_remote_code, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        parser.exit(2, f"lightpref export: error: {error}\n")
    print(f"exported {args.checkpoint} to {args.output}")
    return 0
