"""Judges that compare two answers, for those who score with an LLM instead of a reward model.

- :class:`PairwiseJudge` is the interface: for each prompt and two completions, the probability that the first is
  better, in [0, 1].
- :class:`LanguageModelJudge` asks a chat LM "which answer is better, A or B?" and reads the probability of ``A``
  against ``B`` from its next-token logits, averaged over both presentation orders (position bias cancels).
- :class:`JudgeRanking` turns a pairwise judge into a :class:`~lightpref.evaluation.RewardFunction`: each completion
  is compared with every other completion of the same prompt and scored by its mean win probability, so a judge can
  rank the K samples of ``lightpref iterate`` or ``lightpref build-dataset``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor

from lightpref.evaluation.reward_models import DTYPES, left_padded
from lightpref.evaluation.rewards import Prompt, RewardFunction, check_lengths

DEFAULT_TEMPLATE = (
    "Which answer to the question is better? Reply with one letter, A or B.\n\n"
    "Question:\n{prompt}\n\nAnswer A:\n{first}\n\nAnswer B:\n{second}"
)


class PairwiseJudge(ABC):
    """Base class of pairwise judges."""

    @abstractmethod
    def __call__(self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]) -> Tensor:
        """P(``first[i]`` is better than ``second[i]``), float32 of shape (N,)."""


def prompt_text(prompt: Prompt) -> str:
    """A prompt as plain text: a string as it is, chat messages as ``role: content`` lines."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{message['role']}: {message['content']}" for message in prompt)


class LanguageModelJudge(PairwiseJudge):
    """A chat LM as a pairwise judge: softmax over its next-token logits of ``A`` and ``B``.

    Args:
        model: Hub name or local directory of a causal LM whose tokenizer has a chat template.
        template: the question, with ``{prompt}``, ``{first}`` and ``{second}`` fields, asked as one user turn.
        batch_size: questions asked at a time.
        dtype: ``auto`` (bfloat16 on a GPU, float32 on the CPU), ``float32``, ``bfloat16`` or ``float16``.
        device: ``auto`` or a torch device string.
        trust_remote_code: run model code shipped with the checkpoint (only for checkpoints you trust).
    """

    def __init__(
        self,
        model: str,
        template: str = DEFAULT_TEMPLATE,
        batch_size: int = 8,
        dtype: str = "auto",
        device: str = "auto",
        trust_remote_code: bool = False,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        missing = [field for field in ("{prompt}", "{first}", "{second}") if field not in template]
        if missing:
            raise ValueError(f"the judge's `template` lacks the field(s) {', '.join(missing)}")
        if dtype != "auto" and dtype not in DTYPES:
            raise ValueError(f"the judge's `dtype` must be 'auto' or one of {list(DTYPES)}, got {dtype!r}")
        self.model_name, self.template, self.batch_size = model, template, batch_size
        self._device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
        torch_dtype = DTYPES.get(dtype, torch.bfloat16 if self._device.type == "cuda" else torch.float32)
        self._tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
        if not getattr(self._tokenizer, "chat_template", None):
            raise ValueError(f"the judge {model} has no chat template; use a chat (instruction-tuned) model")
        self._model = AutoModelForCausalLM.from_pretrained(
            model, dtype=torch_dtype, trust_remote_code=trust_remote_code
        ).to(self._device).eval().requires_grad_(False)
        self._choices = [self._tokenizer.encode(letter, add_special_tokens=False)[0] for letter in ("A", "B")]
        pad = self._tokenizer.pad_token_id
        self._pad_token_id = pad if pad is not None else (self._tokenizer.eos_token_id or 0)

    def question_ids(self, prompt: Prompt, first: str, second: str) -> list[int]:
        """The token ids of one question, ending with the generation prompt of the judge's chat template."""
        content = self.template.format(prompt=prompt_text(prompt), first=first, second=second)
        text = self._tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                   add_generation_prompt=True)
        return self._tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.no_grad()
    def prefer_first(self, rows: Sequence[list[int]]) -> Tensor:
        """P(``A``) against ``B`` after each question, (N,)."""
        embed = self._model.get_input_embeddings()
        probabilities = []
        for start in range(0, len(rows), self.batch_size):
            input_ids, attention_mask, position_ids = left_padded(rows[start : start + self.batch_size],
                                                                  self._pad_token_id)
            logits = self._model(inputs_embeds=embed(input_ids.to(self._device)),
                                 attention_mask=attention_mask.to(self._device),
                                 position_ids=position_ids.to(self._device)).logits[:, -1]  # (b, V)
            probabilities.append(logits[:, self._choices].float().softmax(-1)[:, 0].cpu())
        return torch.cat(probabilities)

    def __call__(self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]) -> Tensor:
        check_lengths(prompts, first)
        check_lengths(prompts, second)
        forward = [self.question_ids(p, a, b) for p, a, b in zip(prompts, first, second, strict=True)]
        swapped = [self.question_ids(p, b, a) for p, a, b in zip(prompts, first, second, strict=True)]
        both = self.prefer_first(forward + swapped)
        return (both[: len(forward)] + 1 - both[len(forward) :]) / 2


class JudgeRanking(RewardFunction):
    """The reward of a completion: its mean probability of beating each other completion of the same prompt.

    Completions of one prompt must be consecutive (as sampled: K per prompt); a prompt with one completion gets 0.5.
    """

    def __init__(self, judge: PairwiseJudge) -> None:
        if not isinstance(judge, PairwiseJudge):
            raise TypeError(f"`judge` must be a lightpref PairwiseJudge, got {type(judge).__name__}")
        self.judge = judge

    def __call__(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> Tensor:
        check_lengths(prompts, completions)
        groups: list[list[int]] = []
        for index, prompt in enumerate(prompts):
            if groups and prompts[groups[-1][0]] == prompt:
                groups[-1].append(index)
            else:
                groups.append([index])
        matches = [(a, b) for group in groups for position, a in enumerate(group) for b in group[position + 1 :]]
        rewards = torch.full((len(completions),), 0.5)
        if not matches:
            return rewards
        wins = self.judge([prompts[a] for a, _ in matches], [completions[a] for a, _ in matches],
                          [completions[b] for _, b in matches]).float()
        totals, counts = torch.zeros(len(completions)), torch.zeros(len(completions))
        for (a, b), win in zip(matches, wins.tolist(), strict=True):
            totals[a] += win
            totals[b] += 1 - win
            counts[a] += 1
            counts[b] += 1
        played = counts > 0
        rewards[played] = totals[played] / counts[played]
        return rewards
