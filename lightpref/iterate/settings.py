"""``Iteration``: the ``iterate:`` section of a ``lightpref iterate`` config (its signature is the config)."""

from __future__ import annotations

from lightpref.evaluation.generation import SamplingSettings
from lightpref.evaluation.pairing import BestVsWorst, PairingRule
from lightpref.evaluation.prompts import read_prompts, review_prompts
from lightpref.evaluation.rewards import Prompt, RewardFunction


class Iteration:
    """What each round samples, how it is scored and paired, and what is held out.

    Args:
        out_dir: where every round's samples, pairs, checkpoints, policy and evaluation go (see docs/iterate.md).
        reward: the judge that scores samples, e.g. :class:`~lightpref.evaluation.VaderSentiment` or
            :class:`~lightpref.evaluation.SequenceClassifierReward`.
        rounds: how many sample → score → pair → train rounds.
        pairing: the pairing rule; default :class:`~lightpref.iterate.BestVsWorst` with ``min_gap`` 0 (ties dropped).
        prompts: training prompts (strings or chat messages); else ``prompts_file``; else lightpref's review prompts
            (train split).
        prompts_file: ``.jsonl`` with a ``prompt`` field per row, or a text file with one prompt per line.
        prompts_per_round: prompts sampled per round, taken in order and wrapping around (round r starts where
            round r−1 stopped); ``None`` samples every prompt every round.
        samples_per_prompt: K, completions sampled per prompt (at least 2).
        max_new_tokens, temperature, top_p: sampling, see :class:`~lightpref.evaluation.SamplingSettings`.
        sampling_batch_size: sequences generated at a time; prompts are sampled (and checkpointed) in chunks of
            ``sampling_batch_size // samples_per_prompt``.
        chat_template: render string prompts as a user turn of the chat template (``None``: when the tokenizer has
            one) and write conversational pairs.
        eval_prompts, eval_prompts_file: held-out prompts; default lightpref's review prompts of the eval split,
            whose subjects never occur in the train split.
        num_eval_prompts: evaluate on the first this many held-out prompts (``None``: all).
        update_reference: start each round with the reference set to that round's starting policy (iterative DPO as
            in Xu et al. 2023); otherwise the reference stays the initial model (or ``model.reference``).
        checkpoint_every_n_steps: save ``last.ckpt`` of the round every this many optimiser steps (resume point).
        keep_checkpoints: keep each round's ``last.ckpt`` (optimiser state included) after its policy is saved.
        seed: seeds sampling (per round and chunk) and the held-out evaluation (the same for every round).
    """

    def __init__(
        self,
        out_dir: str,
        reward: RewardFunction,
        rounds: int = 2,
        pairing: PairingRule | None = None,
        prompts: list[Prompt] | None = None,
        prompts_file: str | None = None,
        prompts_per_round: int | None = None,
        samples_per_prompt: int = 4,
        max_new_tokens: int = 48,
        temperature: float = 1.0,
        top_p: float = 1.0,
        sampling_batch_size: int = 16,
        chat_template: bool | None = None,
        eval_prompts: list[Prompt] | None = None,
        eval_prompts_file: str | None = None,
        num_eval_prompts: int | None = 32,
        update_reference: bool = False,
        checkpoint_every_n_steps: int = 50,
        keep_checkpoints: bool = False,
        seed: int = 0,
    ) -> None:
        if not isinstance(reward, RewardFunction):
            raise TypeError(f"`iterate.reward` must be a lightpref RewardFunction (e.g. class_path: "
                            f"lightpref.evaluation.VaderSentiment), got {type(reward).__name__}")
        positive = {"rounds": rounds, "samples_per_prompt": samples_per_prompt,
                    "checkpoint_every_n_steps": checkpoint_every_n_steps, "prompts_per_round": prompts_per_round,
                    "num_eval_prompts": num_eval_prompts}
        for name, value in positive.items():
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"`iterate.{name}` must be a positive integer, got {value!r}")
        if samples_per_prompt < 2:
            raise ValueError(f"`iterate.samples_per_prompt` must be at least 2 (a pair), got {samples_per_prompt}")
        self.out_dir, self.reward, self.rounds = out_dir, reward, rounds
        self.pairing = pairing if pairing is not None else BestVsWorst()
        if not isinstance(self.pairing, PairingRule):
            raise TypeError(f"`iterate.pairing` must be a lightpref PairingRule, got {type(pairing).__name__}")
        self.prompts = _prompts(prompts, prompts_file, "prompts", lambda: review_prompts(split="train"))
        held_out = _prompts(eval_prompts, eval_prompts_file, "eval_prompts", lambda: review_prompts(split="eval"))
        self.eval_prompts = held_out[:num_eval_prompts]
        self.prompts_per_round = prompts_per_round
        self.samples_per_prompt = samples_per_prompt
        self.sampling = SamplingSettings(max_new_tokens, temperature, top_p, sampling_batch_size, False, seed)
        self.chat_template = chat_template
        self.update_reference = update_reference
        self.checkpoint_every_n_steps = checkpoint_every_n_steps
        self.keep_checkpoints = keep_checkpoints
        self.seed = seed

    def round_prompts(self, round_: int) -> list[Prompt]:
        """The prompts sampled in round ``round_`` (1-based).

        >>> from lightpref.evaluation import CompletionLength
        >>> Iteration("out", reward=CompletionLength(), prompts=["a", "b", "c"], prompts_per_round=2).round_prompts(2)
        ['c', 'a']
        """
        if self.prompts_per_round is None:
            return list(self.prompts)
        start = (round_ - 1) * self.prompts_per_round
        return [self.prompts[(start + offset) % len(self.prompts)] for offset in range(self.prompts_per_round)]

    @property
    def prompts_per_chunk(self) -> int:
        return max(1, self.sampling.batch_size // self.samples_per_prompt)


def _prompts(given: list[Prompt] | None, path: str | None, name: str, default: object) -> list[Prompt]:
    if given is not None and path is not None:
        raise ValueError(f"give `iterate.{name}` or `iterate.{name}_file`, not both")
    prompts = read_prompts(path) if path is not None else given if given is not None else default()
    if not prompts:
        raise ValueError(f"`iterate.{name}` is empty; give at least one prompt")
    return list(prompts)

