"""The options of ``lightpref build-dataset`` (:mod:`lightpref.evaluation.build_dataset`), parsed before anything
heavier than jsonargparse is imported: its ``--help`` and usage errors do not import Lightning, the model libraries or
the reward."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from jsonargparse import Namespace

from lightpref.models.paths import DEFAULT_GGUF, DEFAULT_MODEL


def parse_args(argv: Sequence[str] | None = None) -> Namespace:
    """The options of ``lightpref build-dataset``: ``--snake_case`` as every lightpref command's, and the dashed
    spellings (``--gguf-file``) of earlier releases too."""
    from lightpref.commands.usage_errors import CommandParser

    parser = CommandParser(prog="lightpref build-dataset", env_prefix="", description="Sample completions, score them "
                           "with a reward, and write preference pairs as JSONL (resumable).")

    def option(name: str, **settings: Any) -> None:
        dashed = name.replace("_", "-")
        parser.add_argument(f"--{name}", *([f"--{dashed}"] if dashed != name else []), **settings)

    option("output", type=str, required=True, help="the pairs file (.jsonl) to append to")
    option("model", type=str, default=DEFAULT_MODEL, help="Hub name, directory, or package with --gguf_file")
    option("gguf_file", type=str | None, default=None,
           help=f"GGUF file in --model (default {DEFAULT_GGUF} for the default model)")
    option("prompts", type=str | None, default=None,
           help=".jsonl (a `prompt` field per row) or .txt (one per line); default: lightpref's review prompts")
    option("num_prompts", type=int | None, default=None, help="use the first N prompts (default all)")
    option("split", choices=["train", "eval", "all"], default="train", help="review prompts' split")
    option("style", choices=["instruction", "opening"], default="instruction",
           help="review prompts asking for a review, or opening one to be continued")
    option("samples_per_prompt", type=int, default=4, help="completions sampled per prompt")
    option("pairing", choices=["best_worst", "all", "ranked"], default="best_worst",
           help="ranked: one record per prompt with all its samples and their rewards as scores")
    option("min_gap", type=float, default=0.0, help="least reward difference of a pair")
    option("reward", type=str, default="lightpref.evaluation.VaderSentiment", help="import path of a reward")
    option("reward_args", type=str, default="{}", help="the reward's arguments as a JSON object, e.g. --reward "
           "lightpref.evaluation.SequenceClassifierReward --reward_args '{\"model\": \"DIR\"}'")
    option("chat_template", action=argparse.BooleanOptionalAction, default=None,
           help="render prompts with the chat template and write conversational records (default: on for "
           "instruction prompts when the tokenizer has a template)")
    option("max_new_tokens", type=int, default=48, help="tokens sampled per completion at most")
    option("temperature", type=float, default=1.0, help="sampling temperature")
    option("top_p", type=float, default=1.0, help="nucleus sampling: the probability mass sampled from")
    option("batch_size", type=int, default=16, help="sequences generated at a time")
    option("seed", type=int, default=0, help="sampling seed")
    option("dtype", type=str, default="float32", help="the model's dtype")
    return parser.parse_args(list(sys.argv[1:] if argv is None else argv))


def main(argv: Sequence[str] | None = None) -> int:
    """``lightpref build-dataset``: parse the options, then build the dataset."""
    args = parse_args(argv)
    from lightpref.evaluation.build_dataset import run

    return run(args)
