"""Sample completions from a policy, score them with a reward, and estimate KL(π‖π_ref) from the samples.

Prompts are tokenised exactly as the training data is (:func:`lightpref.data.tokenize.encode_prompt`: chat
messages through the tokenizer's chat template, strings as they are), generated from in left-padded batches, and
then re-packed right-padded so that both models score the sampled tokens with the training forward
(:func:`lightpref.training.forward.completion_logprobs`).

The KL estimate is the Monte-Carlo one over the samples y ~ π(·|x)::

    KL(π‖π_ref) ≈ mean over samples of  Σ_t [log π(y_t|x, y_<t) − log π_ref(y_t|x, y_<t)]

It is unbiased only when the samples come from π itself: temperature 1, ``top_p`` 1 (top-k is always off). With
another temperature or nucleus it is the same average under the tempered sampler, no longer exactly a KL.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import GenerationConfig, PreTrainedTokenizerBase

from lightpref.batch import Sequences
from lightpref.data.padding import pad_rows
from lightpref.data.tokenize import encode_prompt
from lightpref.evaluation.rewards import Prompt, RewardFunction
from lightpref.io import eval_mode
from lightpref.models.pretrained import pad_id
from lightpref.training.forward import completion_logprobs

# Values that make transformers' sampler draw from the (tempered, nucleus-cut) model distribution and nothing else,
# overriding whatever a checkpoint's generation_config.json sets.
NEUTRAL_SAMPLING = {"top_k": 0, "min_p": 0.0, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
                    "repetition_penalty": 1.0, "no_repeat_ngram_size": 0}


@dataclass(frozen=True)
class SamplingSettings:
    """How completions are sampled; ``temperature`` 0 means greedy decoding.

    Args:
        max_new_tokens: the most tokens generated per completion (EOS included).
        temperature: softmax temperature; 1 samples from the policy itself (needed for an exact KL estimate).
        top_p: nucleus sampling mass; 1 keeps the whole distribution.
        batch_size: sequences generated and scored at a time.
        chat_template: wrap string prompts as one user message and render them with the tokenizer's chat template
            (prompts given as chat messages always use the template).
        seed: the sampling seed; sampling runs under ``torch.random.fork_rng`` so training's RNG is untouched.
    """

    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 8
    chat_template: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"`max_new_tokens` must be a positive integer, got {self.max_new_tokens!r}")
        if not self.temperature >= 0:
            raise ValueError(f"`temperature` must be >= 0 (0 is greedy decoding), got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"`top_p` must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {self.batch_size!r}")

    @property
    def exact_kl(self) -> bool:
        """Whether the samples come from the policy itself, so that the KL estimate is unbiased."""
        return self.temperature == 1 and self.top_p == 1


@dataclass(frozen=True)
class Samples:
    """N sampled completions; ``completion_ids`` end with EOS unless ``max_new_tokens`` cut them."""

    prompts: list[Prompt]
    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    texts: list[str]  # decoded completions without special tokens


@dataclass(frozen=True)
class Evaluation:
    """The samples with their rewards (N,) and, when a reference was given, log-ratio sums (N,)."""

    samples: Samples
    rewards: Tensor
    kl: Tensor | None

    @property
    def mean_reward(self) -> float:
        return self.rewards.mean().item()

    @property
    def mean_kl(self) -> float | None:
        return None if self.kl is None else self.kl.mean().item()

    @property
    def mean_length(self) -> float:
        return sum(len(ids) for ids in self.samples.completion_ids) / len(self.samples.completion_ids)


def prompt_token_ids(
    prompts: Sequence[Prompt], tokenizer: PreTrainedTokenizerBase, chat_template: bool
) -> list[list[int]]:
    """Token ids of each prompt, as the DataModule would tokenise it (with the generation prompt for chats)."""
    ids = []
    for prompt in prompts:
        if chat_template and isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        ids.append(encode_prompt(prompt, tokenizer)[1])
    return ids


def left_pad(rows: Sequence[list[int]], pad_token_id: int) -> tuple[Tensor, Tensor]:
    """(input_ids, attention_mask), each (N, T), padded on the left for generation.

    >>> left_pad([[5, 6], [7]], pad_token_id=0)
    (tensor([[5, 6],
            [0, 7]]), tensor([[1, 1],
            [0, 1]]))
    """
    width = max(len(row) for row in rows)
    input_ids = torch.tensor([[pad_token_id] * (width - len(row)) + row for row in rows])
    attention_mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
    return input_ids, attention_mask


def right_pack(prompt_ids: Sequence[list[int]], completion_ids: Sequence[list[int]], pad_token_id: int) -> Sequences:
    """Prompt + completion rows, right-padded, with the mask of completion tokens (the training batch layout).

    >>> packed = right_pack([[5, 6], [7]], [[8, 3], [3]], pad_token_id=0)
    >>> packed.input_ids.tolist(), packed.completion_mask.long().tolist()
    ([[5, 6, 8, 3], [7, 3, 0, 0]], [[0, 0, 1, 1], [0, 1, 0, 0]])
    """
    return pad_rows(list(zip(prompt_ids, completion_ids, strict=True)), pad_token_id)


def cut_at_eos(generated: Sequence[int], eos_token_id: int) -> list[int]:
    """The generated tokens up to and including the first EOS (what follows is padding).

    >>> cut_at_eos([5, 3, 3, 3], eos_token_id=3), cut_at_eos([5, 6], eos_token_id=3)
    ([5, 3], [5, 6])
    """
    generated = list(generated)
    return generated[: generated.index(eos_token_id) + 1] if eos_token_id in generated else generated


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def sample_completions(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    settings: SamplingSettings,
    num_samples: int = 1,
) -> Samples:
    """``num_samples`` completions of each prompt (consecutive in the result), in eval mode, seeded and isolated.

    The checkpoint's own generation defaults (top-k, repetition penalty, …) are overridden with neutral values:
    sampling uses exactly ``settings``.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token, so generation cannot stop; set `tokenizer.eos_token`")
    pad_token_id = pad_id(tokenizer)
    repeated = [prompt for prompt in prompts for _ in range(num_samples)]
    encoded = prompt_token_ids(repeated, tokenizer, settings.chat_template)
    greedy = settings.temperature == 0
    config = GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        do_sample=not greedy,
        temperature=None if greedy else settings.temperature,
        top_p=None if greedy else settings.top_p,
        **NEUTRAL_SAMPLING,
        pad_token_id=pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    device = _device(model)
    completions: list[list[int]] = []
    with eval_mode(model), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(settings.seed)
        for start in range(0, len(encoded), settings.batch_size):
            input_ids, attention_mask = left_pad(encoded[start : start + settings.batch_size], pad_token_id)
            output = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), generation_config=config
            )  # (b, T + new)
            generated = output[:, input_ids.shape[1] :].tolist()
            completions += [cut_at_eos(row, tokenizer.eos_token_id) for row in generated]
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in completions]
    return Samples(prompts=repeated, prompt_ids=encoded, completion_ids=completions, texts=texts)


@torch.no_grad()
def sequence_logprobs(
    model: nn.Module, samples: Samples, pad_token_id: int, batch_size: int = 8, chunk_size: int | None = 1024
) -> Tensor:
    """Σ_t log model(y_t | x, y_<t) over each sample's completion tokens, (N,) float32, in eval mode."""
    device = _device(model)
    sums = []
    with eval_mode(model):
        for start in range(0, len(samples.completion_ids), batch_size):
            window = slice(start, start + batch_size)
            packed = right_pack(samples.prompt_ids[window], samples.completion_ids[window], pad_token_id)
            tokens = completion_logprobs(model, packed.input_ids.to(device), packed.attention_mask.to(device),
                                         packed.completion_mask.to(device), chunk_size=chunk_size)
            sums.append(tokens.logps.sum(-1).float().cpu())  # (b,)
    return torch.cat(sums)


def evaluate_policy(
    policy: nn.Module,
    reference: nn.Module | AbstractContextManager[nn.Module | None] | None,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    reward: RewardFunction,
    settings: SamplingSettings,
    chunk_size: int | None = 1024,
) -> Evaluation:
    """Sample one completion per prompt from ``policy``, score it, and estimate KL(π‖π_ref) per sample.

    ``reference`` is a model, a context manager entered only to score the samples (e.g. one that switches a LoRA
    policy's adapter off), or ``None`` for no KL.
    """
    samples = sample_completions(policy, tokenizer, prompts, settings)
    rewards = reward(samples.prompts, samples.texts).float().reshape(-1).cpu()
    if rewards.shape[0] != len(samples.texts):
        raise ValueError(f"{reward!r} returned {rewards.shape[0]} rewards for {len(samples.texts)} completions")
    pad_token_id = pad_id(tokenizer)
    kl = None
    scope = nullcontext(reference) if reference is None or isinstance(reference, nn.Module) else reference
    with scope as reference_model:
        if reference_model is not None:
            reference_logps = sequence_logprobs(reference_model, samples, pad_token_id, settings.batch_size,
                                                chunk_size)
    if reference_model is not None:
        policy_logps = sequence_logprobs(policy, samples, pad_token_id, settings.batch_size, chunk_size)
        kl = policy_logps - reference_logps  # (N,)
    return Evaluation(samples=samples, rewards=rewards, kl=kl)
