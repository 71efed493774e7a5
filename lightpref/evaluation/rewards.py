"""Ground-truth reward functions: score completions of prompts with a known, fixed judge.

A reward function is any :class:`RewardFunction`; in a config it is chosen by ``class_path`` like a loss::

    reward:
      class_path: lightpref.evaluation.VaderSentiment

>>> CompletionLength(unit="words")(["Q:"], ["one two three"])
tensor([3.])
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

Prompt = str | list[dict[str, Any]]

VADER_MISSING = (
    "the VADER sentiment reward needs the `vaderSentiment` package, which is not installed; install it with "
    "`pip install 'lightpref[sentiment]'` (or `pip install vaderSentiment`)"
)


class RewardFunction(ABC):
    """Base class of ground-truth rewards: one float per (prompt, completion), higher is better.

    ``prompts`` are what the model was given (strings or chat messages), ``completions`` the generated texts
    (without the prompt and without special tokens); both lists have the same length.
    """

    @abstractmethod
    def __call__(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> Tensor:
        """Rewards, a float32 tensor of shape (N,)."""

    def __repr__(self) -> str:
        settings = ", ".join(f"{key}={value!r}" for key, value in sorted(vars(self).items()) if key[0] != "_")
        return f"{type(self).__name__}({settings})"


class VaderSentiment(RewardFunction):
    """The VADER compound sentiment of the completion, in [−1, 1] (Hutto & Gilbert, ICWSM 2014).

    A lexicon- and rule-based judge in pure Python (the optional ``sentiment`` extra): deterministic, instant, and
    blind to the prompt, which makes it a clean ground truth for "write positively" alignment experiments.

    >>> reward = VaderSentiment()  # doctest: +SKIP
    >>> reward(["", ""], ["I loved it, wonderful!", "Awful and boring."])  # doctest: +SKIP
    tensor([ 0.8..., -0.7...])
    """

    def __init__(self) -> None:
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError as error:
            raise ImportError(VADER_MISSING) from error
        self._analyzer = SentimentIntensityAnalyzer()

    def __call__(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> Tensor:
        check_lengths(prompts, completions)
        scores = [self._analyzer.polarity_scores(text)["compound"] for text in completions]
        return torch.tensor(scores, dtype=torch.float32)


class CompletionLength(RewardFunction):
    """The completion's length in characters or whitespace-separated words.

    A deterministic stand-in judge for smoke tests, and a check for length exploitation when logged beside a
    learned reward.
    """

    def __init__(self, unit: Literal["chars", "words"] = "chars") -> None:
        if unit not in ("chars", "words"):
            raise ValueError(f"`reward.init_args.unit` must be 'chars' or 'words', got {unit!r}")
        self.unit = unit

    def __call__(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> Tensor:
        check_lengths(prompts, completions)
        sizes = [len(text) if self.unit == "chars" else len(text.split()) for text in completions]
        return torch.tensor(sizes, dtype=torch.float32)


def check_lengths(prompts: Sequence[Prompt], completions: Sequence[str]) -> None:
    if len(prompts) != len(completions):
        raise ValueError(f"a reward needs one prompt per completion, got {len(prompts)} and {len(completions)}")


def load_reward(path: str, **kwargs: Any) -> RewardFunction:
    """Build a reward from an import path, ``package.module.Class`` or ``package.module:Class``.

    >>> load_reward("lightpref.evaluation.rewards:CompletionLength", unit="words")
    CompletionLength(unit='words')
    """
    module_name, _, class_name = path.replace(":", ".").rpartition(".")
    if not module_name:
        raise ValueError(f"reward {path!r} is not an import path; give e.g. lightpref.evaluation.VaderSentiment")
    try:
        reward_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot import the reward {path!r}: {error}") from error
    reward = reward_class(**kwargs)
    if not isinstance(reward, RewardFunction):
        raise TypeError(f"reward {path!r} is a {type(reward).__name__}, not a lightpref RewardFunction")
    return reward
