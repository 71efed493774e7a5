"""Pairing rules: which of a prompt's scored samples become (chosen, rejected) pairs.

A rule is an object (``class_path`` in a config), called with one prompt's completions and rewards; it returns
index pairs ``(better, worse)``. Pairs whose rewards differ by ``min_gap`` or less (ties, with the default 0) and
pairs of identical texts are dropped by every built-in rule.

>>> BestVsWorst(min_gap=0.2)([" ok", " great", " bad"], [0.1, 0.9, -0.5])
[(1, 2)]
>>> AllPairs(min_gap=0.5)([" ok", " great", " bad"], [0.1, 0.9, -0.5])
[(1, 0), (1, 2), (0, 2)]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence


class PairingRule(ABC):
    """Base class of pairing rules.

    Args:
        min_gap: the least reward difference of a pair (exclusive); 0 drops only ties.
    """

    def __init__(self, min_gap: float = 0.0) -> None:
        if not min_gap >= 0:
            raise ValueError(f"`pairing.init_args.min_gap` must be >= 0, got {min_gap!r}")
        self.min_gap = min_gap

    @abstractmethod
    def candidates(self, order: list[int]) -> list[tuple[int, int]]:
        """Candidate (better, worse) index pairs, given the indices sorted by decreasing reward."""

    def __call__(self, texts: Sequence[str], rewards: Sequence[float]) -> list[tuple[int, int]]:
        if len(texts) != len(rewards):
            raise ValueError(f"a pairing rule needs one reward per text, got {len(texts)} and {len(rewards)}")
        order = sorted(range(len(texts)), key=lambda index: (-rewards[index], index))  # stable on ties
        return [(better, worse) for better, worse in self.candidates(order)
                if rewards[better] - rewards[worse] > self.min_gap and texts[better] != texts[worse]]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(min_gap={self.min_gap!r})"


class BestVsWorst(PairingRule):
    """At most one pair per prompt: the highest-reward sample against the lowest."""

    def candidates(self, order: list[int]) -> list[tuple[int, int]]:
        return [(order[0], order[-1])] if len(order) > 1 else []


class AllPairs(PairingRule):
    """Every ordered pair of samples above the gap (up to K(K−1)/2 per prompt)."""

    def candidates(self, order: list[int]) -> list[tuple[int, int]]:
        return [(better, worse) for position, better in enumerate(order) for worse in order[position + 1 :]]


class WholeGroup(AllPairs):
    """Train on the whole group of a prompt's K samples instead of pairs cut from it: the round's data are ranked
    records ``{"prompt", "completions", "scores"}`` (:mod:`lightpref.data.ranked`), each run through the models as
    one group forward. A listwise loss (``plackett_luce``, ``info_nca``) takes the group as it is; a pairwise loss
    trains on the pairs ``model.group_pairs`` forms in it (every pair with different rewards by default). Called as
    a rule it gives every pair above the gap, as :class:`AllPairs`.

    Samples with the same text are kept once (the first). A prompt whose samples leave fewer than two texts, or whose
    rewards all lie within ``min_gap`` of each other, gives no group.

    >>> WholeGroup().group("Q:", [" ok", " great", " ok", " bad"], [0.1, 0.9, 0.3, -0.5])
    {'prompt': 'Q:', 'completions': [' ok', ' great', ' bad'], 'scores': [0.1, 0.9, -0.5], 'chosen_reward': 0.9, \
'rejected_reward': -0.5}
    """

    def group(self, prompt: object, texts: Sequence[str], rewards: Sequence[float],
              chat: bool = False) -> dict[str, object] | None:
        """One prompt's samples as a ranked record (the best and worst rewards alongside, for the round's
        statistics), or ``None``."""
        if len(texts) != len(rewards):
            raise ValueError(f"a pairing rule needs one reward per text, got {len(texts)} and {len(rewards)}")
        kept: dict[str, float] = {}
        for text, reward in zip(texts, rewards, strict=True):
            kept.setdefault(text, float(reward))
        scores = list(kept.values())
        if len(kept) < 2 or max(scores) - min(scores) <= self.min_gap:
            return None
        completions: list[object] = list(kept)
        if chat:
            prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            completions = [[{"role": "assistant", "content": text.strip()}] for text in kept]
        return {"prompt": prompt, "completions": completions, "scores": scores, "chosen_reward": max(scores),
                "rejected_reward": min(scores)}
