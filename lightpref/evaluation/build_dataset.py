"""Build preference pairs by sampling from a model and ranking the samples with a reward.

``lightpref build-dataset --output data/sentiment.jsonl`` samples completions of lightpref's
review prompts from SmolLM2-135M-Instruct (offline), scores them with VADER sentiment, and writes the best and worst
completion of each prompt as a pair that :class:`~lightpref.data.PreferenceDataModule` reads. ``--help`` lists the
options (another model, a prompt file, another reward, all pairs above a reward gap, sampling settings).

The output is resumable: each prompt's pairs are appended and flushed as soon as they exist, and the prompt is then
recorded in ``<output>.progress`` (one JSON line per prompt, with every sample's reward). Running the same command
again skips prompts found in either file and continues; a line cut off by an interruption is removed first.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from jsonargparse import Namespace
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from lightpref.evaluation.generation import SamplingSettings, sample_completions
from lightpref.evaluation.pairing import AllPairs, BestVsWorst, PairingRule
from lightpref.evaluation.prompts import read_prompts, review_prompts
from lightpref.evaluation.rewards import Prompt, RewardFunction, load_reward
from lightpref.models.paths import DEFAULT_GGUF, DEFAULT_MODEL

Pairing = Literal["best_worst", "all", "ranked"]
RULES: dict[str, type[PairingRule]] = {"best_worst": BestVsWorst, "all": AllPairs}


@dataclass
class BuildStats:
    """What one :func:`build_dataset` call did."""

    prompts_sampled: int = 0
    prompts_skipped: int = 0  # already done by an earlier run
    pairs_written: int = 0


def prompt_key(prompt: Prompt) -> str:
    """A stable text key identifying a prompt (string or chat messages)."""
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def make_pairs(
    prompt: Prompt,
    texts: Sequence[str],
    rewards: Sequence[float],
    pairing: Pairing | PairingRule = "best_worst",
    min_gap: float = 0.0,
    chat: bool = False,
) -> list[dict[str, Any]]:
    """Preference records from one prompt's scored samples; only pairs whose rewards differ by more than
    ``min_gap`` and whose texts differ.

    ``best_worst`` gives at most one pair (highest vs lowest reward); ``all`` every ordered pair above the gap; a
    :class:`~lightpref.evaluation.pairing.PairingRule` object decides by itself (its own ``min_gap``; ``min_gap`` is
    unused). With ``chat`` the record is conversational (the prompt as a user turn, each completion as an assistant
    turn).

    >>> make_pairs("Q:", [" ok", " great", " bad"], [0.1, 0.9, -0.5])
    [{'prompt': 'Q:', 'chosen': ' great', 'rejected': ' bad', 'chosen_reward': 0.9, 'rejected_reward': -0.5}]
    >>> len(make_pairs("Q:", [" ok", " great", " bad"], [0.1, 0.9, -0.5], pairing="all", min_gap=0.7))
    2
    """
    if not isinstance(pairing, PairingRule) and pairing not in RULES:
        raise ValueError(f"`pairing` must be 'best_worst' or 'all' (or 'ranked' in build_dataset), got {pairing!r}")
    rule = pairing if isinstance(pairing, PairingRule) else RULES[pairing](min_gap)
    records = []
    for better, worse in rule(texts, rewards):
        chosen, rejected = texts[better], texts[worse]
        record_prompt: Prompt = prompt
        if chat:
            record_prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            chosen = [{"role": "assistant", "content": chosen.strip()}]
            rejected = [{"role": "assistant", "content": rejected.strip()}]
        records.append({"prompt": record_prompt, "chosen": chosen, "rejected": rejected,
                        "chosen_reward": round(float(rewards[better]), 6),
                        "rejected_reward": round(float(rewards[worse]), 6)})
    return records


def make_group(prompt: Prompt, texts: Sequence[str], rewards: Sequence[float], chat: bool = False) -> dict[str, Any]:
    """One ranked record (``prompt``, ``completions``, ``scores``) holding all of a prompt's scored samples, for
    listwise losses and ``model.group_pairs`` (docs/formats.md, ranked records).

    >>> make_group("Q:", [" ok", " bad"], [0.5, -0.25])
    {'prompt': 'Q:', 'completions': [' ok', ' bad'], 'scores': [0.5, -0.25]}
    """
    record_prompt: Prompt = prompt
    completions: list[Any] = list(texts)
    if chat:
        record_prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        completions = [[{"role": "assistant", "content": text.strip()}] for text in texts]
    return {"prompt": record_prompt, "completions": completions,
            "scores": [round(float(reward), 6) for reward in rewards]}


def drop_partial_line(path: Path) -> None:
    """Cut a file back to its last complete line (an interrupted write leaves a partial one)."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def done_prompts(output: Path, progress: Path) -> set[str]:
    """Keys of the prompts an earlier run finished: those with a progress line or with pairs in the output."""
    keys = set()
    for path in (output, progress):
        drop_partial_line(path)
        if path.is_file():
            with path.open() as file:
                keys.update(prompt_key(json.loads(line)["prompt"]) for line in file if line.strip())
    return keys


def build_dataset(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    reward: RewardFunction,
    output: str | Path,
    settings: SamplingSettings,
    samples_per_prompt: int = 4,
    pairing: Pairing = "best_worst",
    min_gap: float = 0.0,
    progress_bar: bool = True,
) -> BuildStats:
    """Sample ``samples_per_prompt`` completions per prompt, score them, and append the pairs to ``output``.

    Prompts are sampled ``settings.batch_size // samples_per_prompt`` at a time in fixed chunks of the prompt
    list, each chunk seeded from ``settings.seed`` and its position, so an interrupted and resumed run writes what
    an uninterrupted one would (up to the chunk that was cut short). ``settings.chat_template`` decides whether the
    records are conversational or explicit. With ``pairing="ranked"`` each prompt gives one ranked record of all
    its samples, their rewards as scores (:func:`make_group`), unless all score the same.
    """
    if samples_per_prompt < 2:
        raise ValueError(f"`samples_per_prompt` must be at least 2 to form a pair, got {samples_per_prompt}")
    if pairing not in (*RULES, "ranked"):
        raise ValueError(f"`pairing` must be 'best_worst', 'all' or 'ranked', got {pairing!r}")
    output = Path(output)
    progress = output.with_name(output.name + ".progress")
    output.parent.mkdir(parents=True, exist_ok=True)
    prompts = list({prompt_key(prompt): prompt for prompt in prompts}.values())  # drop duplicates, keep order
    done = done_prompts(output, progress)
    stats = BuildStats()
    per_chunk = max(1, settings.batch_size // samples_per_prompt)
    with output.open("a") as pairs_file, progress.open("a") as progress_file, tqdm(
        total=len(prompts), desc="Building pairs", unit="prompt", disable=not progress_bar
    ) as bar:
        for start in range(0, len(prompts), per_chunk):
            todo = [prompt for prompt in prompts[start : start + per_chunk] if prompt_key(prompt) not in done]
            stats.prompts_skipped += min(per_chunk, len(prompts) - start) - len(todo)
            bar.update(min(per_chunk, len(prompts) - start) - len(todo))
            if not todo:
                continue
            chunk_settings = replace(settings, seed=settings.seed * 1_000_003 + start)
            samples = sample_completions(model, tokenizer, todo, chunk_settings, num_samples=samples_per_prompt)
            rewards = reward(samples.prompts, samples.texts).float().reshape(-1).tolist()
            for index, prompt in enumerate(todo):
                window = slice(index * samples_per_prompt, (index + 1) * samples_per_prompt)
                if pairing == "ranked":  # a group whose samples all score the same states no preference
                    ranked = len(set(rewards[window])) > 1
                    records = [make_group(prompt, samples.texts[window], rewards[window], settings.chat_template)
                               ] if ranked else []
                else:
                    records = make_pairs(prompt, samples.texts[window], rewards[window], pairing, min_gap,
                                         settings.chat_template)
                for record in records:
                    pairs_file.write(json.dumps(record, ensure_ascii=False) + "\n")
                pairs_file.flush()
                progress_file.write(json.dumps({"prompt": prompt, "rewards": rewards[window],
                                                "pairs": len(records)}, ensure_ascii=False) + "\n")
                progress_file.flush()
                stats.prompts_sampled += 1
                stats.pairs_written += len(records)
                bar.update(1)
    return stats


def run(args: Namespace) -> int:
    """Build the dataset the parsed options (:func:`~lightpref.commands.build_dataset_options.parse_args`) ask for."""
    from lightpref.models.pretrained import load_model, load_tokenizer

    gguf_file = args.gguf_file or (DEFAULT_GGUF if args.model == DEFAULT_MODEL else None)
    try:
        reward_args = json.loads(args.reward_args)
    except json.JSONDecodeError as error:
        raise ValueError(f"--reward-args must be a JSON object, e.g. '{{\"model\": \"DIR\"}}': {error}") from None
    if not isinstance(reward_args, dict):
        raise ValueError(f"--reward-args must be a JSON object, got {args.reward_args!r}")
    reward = load_reward(args.reward, **reward_args)
    tokenizer = load_tokenizer(args.model, gguf_file)
    if args.prompts is not None:
        prompts = read_prompts(args.prompts)[: args.num_prompts]
    else:
        prompts = review_prompts(args.num_prompts, split=args.split, style=args.style)
    chat = args.chat_template
    if chat is None:
        asks = args.prompts is not None or args.style == "instruction"
        chat = asks and bool(getattr(tokenizer, "chat_template", None))
    settings = SamplingSettings(args.max_new_tokens, args.temperature, args.top_p, args.batch_size, chat, args.seed)
    model = load_model(args.model, gguf_file=gguf_file, dtype=args.dtype)
    stats = build_dataset(model, tokenizer, prompts, reward, args.output, settings, args.samples_per_prompt,
                          args.pairing, args.min_gap)
    print(f"{stats.pairs_written} pairs from {stats.prompts_sampled} prompts written to {args.output} "
          f"({stats.prompts_skipped} prompts already done)")
    return 0
