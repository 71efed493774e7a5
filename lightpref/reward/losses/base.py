"""The contract between a reward-model loss and the module that trains with it.

A reward loss sees the reward model's scores, never the model or the batch: one :class:`PairScores` record per
batch (each pair's chosen and rejected score, and the pair's margin when the data gives one), and returns a
:class:`RewardLossOutput` of per-pair losses and metrics. Losses over a ranked group of completions (Plackett–Luce)
take a group record the same way; a loss declares which record it takes with ``takes``.

    >>> import torch
    >>> from lightpref.reward.losses import PairScores, build
    >>> scores = PairScores(chosen=torch.tensor([2.0]), rejected=torch.tensor([0.5]))
    >>> round(build("bradley_terry")(scores).losses.item(), 4)  # -logsigmoid(2.0 - 0.5)
    0.2014
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor, nn


@dataclass(frozen=True)
class PairScores:
    """The reward model's scores of a batch of B pairs (float32)."""

    chosen: Tensor  # (B,) score of prompt + chosen completion
    rejected: Tensor  # (B,) score of prompt + rejected completion
    margin: Tensor | None = None  # (B,) how much better the chosen completion is, when the data says


@dataclass(frozen=True)
class GroupScores:
    """The reward model's scores of a batch of G ranked groups, N completions in all (float32)."""

    scores: Tensor  # (N,) the model's score of each prompt + completion
    group_ids: Tensor  # (N,) each completion's group 0..G-1, non-decreasing
    ratings: Tensor  # (N,) the data's score of each completion: higher is better, ties allowed

    @property
    def num_groups(self) -> int:
        return int(self.group_ids[-1]) + 1 if self.group_ids.numel() else 0


@dataclass
class RewardLossOutput:
    """Per-record losses (B,) for B pairs or (G,) for G groups (the batch loss is their mean) and the loss's own
    metrics (scalars, or one value per record)."""

    losses: Tensor  # (B,) or (G,)
    metrics: dict[str, Tensor] = field(default_factory=dict)


class RewardLoss(nn.Module):
    """Base class of every reward-model loss, built-in or third-party: tensor math on scores only.

    ``takes`` names the record the loss reads (``"pairs"``: a :class:`PairScores`, ``"groups"``: the
    :class:`GroupScores` of ranked groups). Register the class in the ``lightpref.reward_losses`` entry-point group
    to make it available by name.
    """

    summary: ClassVar[str] = ""
    takes: ClassVar[str] = "pairs"

    def forward(self, scores: PairScores | GroupScores) -> RewardLossOutput:
        raise NotImplementedError

    @classmethod
    def one_line_summary(cls) -> str:
        """``summary`` if set, else the first line of the class docstring."""
        doc = (cls.__doc__ or "").strip()
        return cls.summary or (doc.splitlines()[0] if doc else "")


def check_reward_output(loss: RewardLoss, output: RewardLossOutput, pairs: int) -> RewardLossOutput:
    """``output`` if its losses are (B,) and its metrics scalars or (B,), else an error naming the loss class
    (``pairs`` is the number of records: pairs, or groups for a loss that takes groups)."""
    name = f"{type(loss).__module__}.{type(loss).__qualname__}"
    if not isinstance(output, RewardLossOutput):
        raise TypeError(f"the reward loss {name} returned {type(output).__name__}, not a RewardLossOutput")
    values = {"losses": output.losses, **{f"metrics[{key!r}]": value for key, value in output.metrics.items()}}
    for key, value in values.items():
        allowed = [(pairs,)] if key == "losses" else [(pairs,), ()]
        if not isinstance(value, Tensor) or tuple(value.shape) not in allowed:
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"the reward loss {name} returned `{key}` of shape {got} for a batch of {pairs} "
                             f"{loss.takes}; it must be one of {allowed}. Fix the loss's forward()")
    return output
