"""The two workloads of ``gpu.py``: their model shapes, and their pairs tokenised once for both sides.

- **A**: a SmolLM2-135M-shaped Llama (random weights), HH-RLHF harmless pairs as they come, max length 512 (prompt
  at most 256), batch 8 pairs: the CPU benchmark's workload, for continuity.
- **B**: a ~1.07B Llama-3.2-1B-shaped model (16 layers, width 2048, 32 heads, 8 KV heads; SmolLM2's 49152-token
  vocabulary, tied embeddings; random weights), multi-turn dialogues of up to 2048 tokens: consecutive HH
  conversations chained into one history (the earlier ones with their chosen answers), the pair being the last
  one's chosen and rejected answer. The batch is the largest that fits TRL.

Weights are random (built from the config; nothing is downloaded on the device machine): throughput and memory do
not depend on them, and both sides load the very same saved weights.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SMOLLM2_135M = {
    "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
    "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152, "tie_word_embeddings": True,
    "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
}
LLAMA_1B = {
    "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 49152, "tie_word_embeddings": True,
    "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
}
TINY = {
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 8, "tie_word_embeddings": False, "max_position_embeddings": 1024,
}


@dataclass
class Workload:
    """What one workload trains: model shape, lengths, batch sizes to try (the largest first) and its data."""

    name: str
    description: str
    config: dict[str, Any]
    max_length: int
    max_prompt_length: int
    batch_sizes: list[int]
    chained: bool = False
    pairs: list[dict[str, list[int]]] = field(default_factory=list)  # token ids, for TRL and for checking
    records: list[dict[str, Any]] = field(default_factory=list)  # the same pairs as records, for lightpref


def read_examples(path: Path, limit: int | None = None) -> Iterator[Any]:
    """The valid records of a JSON-lines file, normalised (invalid ones skipped), at most ``limit`` read."""
    from lightpref.data.formats import InvalidRecord, normalise_record

    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file):
            if limit is not None and number >= limit:
                return
            try:
                yield normalise_record(json.loads(line))
            except InvalidRecord:
                continue


def as_record(example: Any) -> dict[str, Any]:
    """A normalised example as a record that normalises back to itself (explicit or conversational format)."""
    return {"prompt": example.prompt, "chosen": example.chosen, "rejected": example.rejected}


def tokenize(example: Any, tokenizer: Any, workload: Workload) -> dict[str, list[int]] | None:
    """The pair's token ids as lightpref's data pipeline makes them (``None`` where it drops the pair, and for a
    chained workload, whose dialogues are built to fit, where it would truncate it)."""
    from lightpref.data.tokenize import TokenizeStats, tokenize_pair

    stats = TokenizeStats()
    pair = tokenize_pair(example, tokenizer, workload.max_length, workload.max_prompt_length, stats=stats)
    if pair is None or workload.chained and (stats.prompts_truncated or stats.completions_truncated):
        return None
    return {"prompt_ids": pair.prompt_ids, "chosen_ids": pair.chosen_ids, "rejected_ids": pair.rejected_ids}


def chains(examples: list[Any], length: Callable[[int], tuple[int, int]], budget: int) -> Iterator[Any]:
    """Dialogues of consecutive examples: from each start, the longest run whose estimated tokens fit ``budget``,
    as one example whose prompt holds the earlier conversations with their chosen answers.

    ``length(i)`` is (prompt + chosen tokens, prompt + longer answer tokens) of example i. A run has at least two
    conversations; starts whose first two do not fit are skipped.

    >>> from lightpref.data.formats import PreferenceExample as E
    >>> examples = [E("Q1", "A1", "B1"), E("Q2", "A2", "B2"), E("Q3", "A3", "B3")]
    >>> [chain.prompt for chain in chains(examples, lambda i: (2, 2), budget=4)]
    ['Q1A1Q2', 'Q2A2Q3']
    """
    from lightpref.data.formats import PreferenceExample

    for start in range(len(examples)):
        history, end = 0, start
        while end + 1 < len(examples) and history + length(end)[0] + length(end + 1)[1] <= budget:
            history += length(end)[0]
            end += 1
        if end == start:
            continue
        prompt = examples[start].prompt
        for index in range(start, end):
            prompt = prompt + examples[index].chosen + examples[index + 1].prompt
        yield PreferenceExample(prompt, examples[end].chosen, examples[end].rejected)


def fill(workload: Workload, examples: Iterable[Any], tokenizer: Any, count: int) -> None:
    """Give ``workload`` its first ``count`` pairs that lightpref tokenises without truncation."""
    examples = list(examples)
    if workload.chained:  # token lengths of single conversations, to plan the dialogues
        unlimited = Workload("", "", {}, 1 << 20, (1 << 20) - 1, [])

        @functools.cache
        def length(index: int) -> tuple[int, int]:
            pair = tokenize(examples[index], tokenizer, unlimited)
            if pair is None:  # a pair lightpref drops never joins a dialogue
                return unlimited.max_length, unlimited.max_length
            prompt, chosen, rejected = (len(pair[key]) for key in ("prompt_ids", "chosen_ids", "rejected_ids"))
            return prompt + chosen, prompt + max(chosen, rejected)

    candidates = chains(examples, length, workload.max_length - 8) if workload.chained else examples
    for example in candidates:
        pair = tokenize(example, tokenizer, workload)
        if pair is not None:
            workload.pairs.append(pair)
            workload.records.append(as_record(example))
        if len(workload.pairs) == count:
            return
    raise SystemExit(f"workload {workload.name}: only {len(workload.pairs)} pairs of the {count} needed; give more "
                     "data (--data) or fewer steps")


def model_config(config: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    """``config`` completed for ``tokenizer``: a vocabulary that holds all its tokens, its special token ids."""
    vocab = max(config.get("vocab_size", 0), len(tokenizer))
    return {**config, "vocab_size": vocab, "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.bos_token_id}


def matmul_parameters(config: dict[str, Any]) -> int:
    """Parameters that take part in a matmul per token: all but an untied input embedding (a lookup)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(LlamaConfig(**config))
    total = sum(parameter.numel() for parameter in {id(p): p for p in model.parameters()}.values())
    return total if config.get("tie_word_embeddings") else total - model.get_input_embeddings().weight.numel()


def step_flops(pairs: list[dict[str, list[int]]], config: dict[str, Any], parameters: int,
               linear_factor: int, attention_factor: int) -> float:
    """Model FLOPs of one step on ``pairs`` as the plain padding-free forward computes them: ``linear_factor``·N per
    token (8 = policy forward 2, backward 4, reference forward 2) plus ``attention_factor`` × the causal attention
    forward, 2·layers·width·n(n+1) per sequence of n tokens (QKᵀ and AV)."""
    width = config["num_attention_heads"] * config["head_dim"]
    answers = ("chosen_ids", "rejected_ids")
    lengths = [len(pair["prompt_ids"]) + len(pair[answer]) for pair in pairs for answer in answers]
    attention = sum(2 * config["num_hidden_layers"] * width * n * (n + 1) for n in lengths)
    return linear_factor * parameters * sum(lengths) + attention_factor * attention


def save_model(directory: Path, config: dict[str, Any], tokenizer: Any, dtype: str, device: str = "cpu",
               seed: int = 0) -> Path:
    """Random weights of a Llama of ``config`` (see :func:`model_config`), initialised on ``device``, and the
    tokenizer, saved so that ``from_pretrained(directory)`` loads both."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(LlamaConfig(**config), dtype=getattr(torch, dtype))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return directory
