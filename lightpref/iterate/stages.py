"""The data stages of one round, each resumable at the granularity of a chunk of prompts.

A round's prompts are cut into fixed chunks. For chunk ``c`` the round directory receives, each written atomically:

- ``samples/chunk_<c>.samples.json``: the prompts and their K sampled completions (sampling seeded by the round's
  seed and ``c`` only, so a chunk's samples do not depend on which process sampled it or on what ran before);
- ``samples/chunk_<c>.scores.json``: the reward of every sample.

Under DDP, rank ``r`` of ``W`` handles chunks ``r, r + W, …``; the files are the same whatever the number of
processes. A killed run loses at most the chunk in progress. ``pairs.jsonl`` is then made from all chunks in order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.environments import TorchElasticEnvironment
from lightning.pytorch import Callback, Trainer
from torch import nn
from transformers import PreTrainedTokenizerBase

from lightpref.evaluation.build_dataset import make_pairs
from lightpref.evaluation.generation import SamplingSettings, sample_completions
from lightpref.evaluation.pairing import PairingRule, WholeGroup
from lightpref.evaluation.rewards import Prompt, RewardFunction
from lightpref.io import atomic_write_text

FAULT_ENV = "LIGHTPREF_ITERATE_FAULT"


def fault_point(name: str) -> None:
    """Exit the process at once (no cleanup, as a crash or SIGKILL would) when ``$LIGHTPREF_ITERATE_FAULT`` names
    this point; used by the resume tests. Names: ``round<r>:sampled:<c>``, ``round<r>:scored:<c>``,
    ``round<r>:scored``, ``round<r>:paired``, ``round<r>:step:<s>``, ``round<r>:trained``, ``round<r>:saved``."""
    if os.environ.get(FAULT_ENV) == name:
        os._exit(86)


def rank_and_world() -> tuple[int, int]:
    """This process's global rank and the number of processes: the process group's once it is started, before that
    what torchrun told the process (Lightning's :class:`~lightning.fabric.plugins.environments.TorchElasticEnvironment`,
    the launch ``lightpref iterate`` takes for several devices)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    if TorchElasticEnvironment.detect():
        environment = TorchElasticEnvironment()
        return environment.global_rank(), environment.world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every process (a no-op in a single process). The first call of several processes starts the process
    group with torch's default backend for the device, the group the rounds' Trainers then use."""
    if rank_and_world()[1] == 1:
        return
    if not torch.distributed.is_initialized():
        device = "cuda" if torch.cuda.is_available() else "cpu"
        torch.distributed.init_process_group(torch.distributed.get_default_backend_for_device(device))
    torch.distributed.barrier()


def chunks_of(prompts: Sequence[Prompt], size: int) -> list[list[Prompt]]:
    """``prompts`` cut into consecutive chunks of ``size`` (the last one may be shorter).

    >>> chunks_of(["a", "b", "c"], 2)
    [['a', 'b'], ['c']]
    """
    return [list(prompts[start : start + size]) for start in range(0, len(prompts), size)]


def chunk_paths(directory: Path, chunk: int) -> tuple[Path, Path]:
    """The samples file and the scores file of one chunk."""
    return (directory / f"chunk_{chunk:05d}.samples.json", directory / f"chunk_{chunk:05d}.scores.json")


def sample_and_score(
    load_policy: Callable[[], nn.Module],
    tokenizer: PreTrainedTokenizerBase,
    chunks: Sequence[list[Prompt]],
    reward: RewardFunction,
    settings: SamplingSettings,
    samples_per_prompt: int,
    directory: Path,
    fault_prefix: str,
) -> int:
    """Sample and score this rank's unfinished chunks; returns how many chunks it sampled.

    ``load_policy`` is called only when a chunk still needs samples. Each chunk's sampling seed is
    ``settings.seed * 1_000_003 + c``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rank, world = rank_and_world()
    policy = None
    sampled = 0
    for chunk in range(rank, len(chunks), world):
        samples_path, scores_path = chunk_paths(directory, chunk)
        if not samples_path.is_file():
            if policy is None:
                policy = load_policy()
            samples = sample_completions(policy, tokenizer, chunks[chunk],
                                         replace(settings, seed=settings.seed * 1_000_003 + chunk),
                                         num_samples=samples_per_prompt)
            atomic_write_text(samples_path, json.dumps({
                "prompts": chunks[chunk], "texts": samples.texts,
                "completion_tokens": [len(ids) for ids in samples.completion_ids],
            }, ensure_ascii=False))
            sampled += 1
            fault_point(f"{fault_prefix}:sampled:{chunk}")
        if not scores_path.is_file():
            record = json.loads(samples_path.read_text(encoding="utf-8"))
            prompts = [prompt for prompt in record["prompts"] for _ in range(samples_per_prompt)]
            rewards = reward(prompts, record["texts"]).float().reshape(-1)
            if rewards.shape[0] != len(record["texts"]):
                raise ValueError(f"{reward!r} returned {rewards.shape[0]} rewards for {len(record['texts'])} texts")
            atomic_write_text(scores_path, json.dumps({"rewards": rewards.tolist()}))
            fault_point(f"{fault_prefix}:scored:{chunk}")
    del policy
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the sampling copy's memory goes back before training starts
    return sampled


def collect_pairs(
    directory: Path, chunk_count: int, samples_per_prompt: int, rule: PairingRule, chat: bool
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Every chunk's pairs in prompt order, and statistics of the round's samples and pairs.

    A degenerate pair (an empty chosen or rejected completion, or two that are the same text) states no preference
    the data can train on: it is dropped and counted in ``pairs/dropped_degenerate``."""
    records: list[dict[str, Any]] = []
    dropped = 0
    rewards_all: list[float] = []
    tokens_all: list[int] = []
    for chunk in range(chunk_count):
        samples_path, scores_path = chunk_paths(directory, chunk)
        if not scores_path.is_file():
            raise FileNotFoundError(f"{scores_path} is missing: the chunk was not scored (did every rank finish?)")
        samples = json.loads(samples_path.read_text(encoding="utf-8"))
        rewards = json.loads(scores_path.read_text())["rewards"]
        rewards_all += rewards
        tokens_all += samples["completion_tokens"]
        for index, prompt in enumerate(samples["prompts"]):
            window = slice(index * samples_per_prompt, (index + 1) * samples_per_prompt)
            texts, scores = samples["texts"][window], rewards[window]
            if isinstance(rule, WholeGroup):  # the prompt's samples as one ranked group, empty samples dropped
                usable = [(text, score) for text, score in zip(texts, scores, strict=True) if text.strip()]
                dropped += len(texts) - len(usable)
                group = rule.group(prompt, [t for t, _ in usable], [r for _, r in usable], chat=chat)
                records += [group] if group is not None else []
                continue
            pairs = make_pairs(prompt, texts, scores, rule, chat=chat)
            kept = [record for record in pairs if not degenerate(record)]
            dropped += len(pairs) - len(kept)
            records += kept
    gaps = [record["chosen_reward"] - record["rejected_reward"] for record in records]
    stats = {
        "samples/reward": sum(rewards_all) / max(len(rewards_all), 1),
        "samples/completion_tokens": sum(tokens_all) / max(len(tokens_all), 1),
        "pairs/count": float(len(records)),
        "pairs/dropped_degenerate": float(dropped),
        "pairs/reward_gap": sum(gaps) / max(len(gaps), 1),
        "pairs/chosen_reward": sum(r["chosen_reward"] for r in records) / max(len(records), 1),
    }
    return records, stats


def completion_text(completion: str | list[dict[str, Any]]) -> str:
    """A completion's text, whether plain or assistant messages, stripped.

    >>> completion_text([{"role": "assistant", "content": " Hi "}]), completion_text(" ok\\n")
    ('Hi', 'ok')
    """
    if isinstance(completion, str):
        return completion.strip()
    return "\n".join(str(message.get("content", "")) for message in completion).strip()


def degenerate(record: dict[str, Any]) -> bool:
    """Whether a pair's chosen or rejected completion is empty, or both are the same text."""
    chosen, rejected = completion_text(record["chosen"]), completion_text(record["rejected"])
    return not chosen or not rejected or chosen == rejected


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """``records`` as JSON lines, atomically."""
    atomic_write_text(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


class FaultHook(Callback):
    """Calls :func:`fault_point` after every training step (the resume tests' hook)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        fault_point(f"{self.prefix}:step:{trainer.global_step}")
