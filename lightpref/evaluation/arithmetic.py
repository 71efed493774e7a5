"""A second, offline ground truth whose reward ranks answers by correctness, not tone: small arithmetic questions.

:func:`arithmetic_prompts` writes questions of one kind about two numbers drawn from ``range(low, high + 1)``:

- ``"sum"``: "What is a + b?", answered by ``a + b``;
- ``"larger"``: "Which number is larger, a or b?", answered by ``max(a, b)`` (``a ≠ b``).

The questions are a fixed shuffle (from ``seed``) of every pair of operands; every fifth pair is held out, so
``split="eval"`` never asks a question that ``split="train"`` does. :class:`ArithmeticCorrectness` reads the
question back from the prompt and scores a completion 1.0 when its first number is the answer, 0.0 otherwise.

>>> arithmetic_prompts(2, kind="sum", high=9)
['What is 2 + 3? Answer with the number only.', 'What is 0 + 8? Answer with the number only.']
>>> questions = arithmetic_prompts(kind="larger", split="eval", high=9)
>>> questions[0], len(questions), len(arithmetic_prompts(kind="larger", split="train", high=9))
('Which number is larger, 2 or 1? Answer with the number only.', 18, 72)
>>> ArithmeticCorrectness()(["What is 2 + 6?"] * 3, ["8", "It is 8.", "2 + 6 = 8"])
tensor([1., 1., 0.])
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from lightpref.evaluation.rewards import Prompt, RewardFunction, check_lengths

ArithmeticKind = Literal["sum", "larger"]
SUFFIX = " Answer with the number only."
QUESTIONS: dict[str, str] = {"sum": "What is {} + {}?", "larger": "Which number is larger, {} or {}?"}
_QUESTION_PATTERNS = {
    "sum": re.compile(r"What is (-?\d+) \+ (-?\d+)\?"),
    "larger": re.compile(r"Which number is larger, (-?\d+) or (-?\d+)\?"),
}
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
HELD_OUT_EVERY = 5


def answer(kind: ArithmeticKind, first: int, second: int) -> int:
    """The correct answer to a question of ``kind`` about ``first`` and ``second``.

    >>> answer("sum", 7, 12), answer("larger", 7, 12), answer("larger", 12, 7)
    (19, 12, 12)
    """
    if kind == "sum":
        return first + second
    if kind == "larger":
        return max(first, second)
    raise ValueError(f"`kind` must be 'sum' or 'larger', got {kind!r}")


def arithmetic_prompts(
    count: int | None = None,
    kind: ArithmeticKind = "sum",
    split: Literal["train", "eval", "all"] = "train",
    low: int = 0,
    high: int = 20,
    seed: int = 0,
) -> list[str]:
    """Distinct questions of ``kind`` about two numbers in ``[low, high]``, the first ``count`` (all when ``None``)."""
    if kind not in QUESTIONS:
        raise ValueError(f"`kind` must be 'sum' or 'larger', got {kind!r}")
    if split not in ("train", "eval", "all"):
        raise ValueError(f"`split` must be 'train', 'eval' or 'all', got {split!r}")
    if high <= low:
        raise ValueError(f"the number range needs `low` < `high`, got low={low} and high={high}")
    operands = [(a, b) for a in range(low, high + 1) for b in range(low, high + 1) if kind != "larger" or a != b]
    random.Random(seed).shuffle(operands)
    if split != "all":
        held_out = split == "eval"
        operands = [pair for index, pair in enumerate(operands)
                    if (index % HELD_OUT_EVERY == HELD_OUT_EVERY - 1) == held_out]
    prompts = [QUESTIONS[kind].format(a, b) + SUFFIX for a, b in operands]
    if count is not None:
        if count < 1 or count > len(prompts):
            raise ValueError(f"asked for {count} {split} {kind!r} questions in [{low}, {high}]; there are 1 to "
                             f"{len(prompts)} (widen the number range for more)")
        prompts = prompts[:count]
    return prompts


def first_number(text: str) -> float | None:
    """The first number written in digits in ``text`` (an optional minus sign, an optional decimal part), or None.

    >>> first_number("The answer is 19."), first_number("-3 degrees"), first_number("2.50 or so"), first_number("no")
    (19.0, -3.0, 2.5, None)
    """
    match = _NUMBER.search(text)
    return float(match.group()) if match else None


class ArithmeticCorrectness(RewardFunction):
    """1.0 when a completion's first number is the answer to the prompt's question, 0.0 otherwise.

    The question is read from the prompt (a string, or the last user turn of chat messages), so any instruction
    around it is ignored; the question must be one that :func:`arithmetic_prompts` writes. Only digits count: the
    first number of the completion, with an optional minus sign and decimal part ("19", "19.0" and "It is 19."
    are right; "nineteen", "1 9" and "7 + 12 = 19" are not, the last because its first number is 7).

    >>> ArithmeticCorrectness()(["Which number is larger, 4 or 11?"] * 2, ["11 is larger.", "4"])
    tensor([1., 0.])

    Raises ``ValueError`` for a prompt that holds no such question, naming the prompt.
    """

    def __call__(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> Tensor:
        check_lengths(prompts, completions)
        scores = []
        for prompt, completion in zip(prompts, completions, strict=True):
            parsed = first_number(completion)
            scores.append(float(parsed is not None and parsed == question_answer(prompt)))
        return torch.tensor(scores, dtype=torch.float32)


def question_answer(prompt: Prompt) -> int:
    """The answer to the arithmetic question inside ``prompt``.

    >>> question_answer([{"role": "user", "content": "Be exact. What is 30 + 12? Answer with the number only."}])
    42
    """
    text = prompt if isinstance(prompt, str) else _last_user_text(prompt)
    for kind, pattern in _QUESTION_PATTERNS.items():
        match = pattern.search(text)
        if match:
            return answer(kind, int(match.group(1)), int(match.group(2)))  # type: ignore[arg-type]
    raise ValueError(f"the prompt {text[:120]!r} asks no arithmetic question; ArithmeticCorrectness scores the "
                     "questions of `arithmetic_prompts` ('What is a + b?', 'Which number is larger, a or b?')")


def _last_user_text(messages: list[dict]) -> str:
    users = [str(message.get("content", "")) for message in messages if message.get("role") == "user"]
    return users[-1] if users else ""
