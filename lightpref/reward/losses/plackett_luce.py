"""The Plackett–Luce reward-model loss over ranked groups of completions."""

from __future__ import annotations

import torch
from torch import Tensor

from lightpref.reward.losses.base import GroupScores, RewardLoss, RewardLossOutput


class PlackettLuce(RewardLoss):
    """Plackett–Luce −Σₖ log [exp(r_τ(k)) / Σ_{j ≥ k} exp(r_τ(j))] over each group's ranking τ (τ(1) the best).

    `Plackett, 1975 <https://doi.org/10.2307/2346567>`_; for reward models over K ranked completions,
    `Zhu et al., 2023 <https://arxiv.org/abs/2301.11270>`_. The data's ratings order a group's K completions; the
    probability of that order is the product, best first, of the chance that each completion is picked from those
    not yet placed, and the loss is its negative log-likelihood (the last term is 0). For K = 2 it is
    Bradley–Terry's −logσ(r⁺ − r⁻). Ties, as in the preference loss ``plackett_luce``: a completion's stage counts
    every completion not rated above it (tied ones included), so the loss does not depend on the order of tied
    completions; without ties this is the formula above exactly. One loss per group; the batch loss is their mean.
    """

    takes = "groups"
    summary = "Plackett–Luce −Σₖ log softmax over the completions not rated above k: ranked groups; K = 2 is BT"

    def forward(self, scores: GroupScores) -> RewardLossOutput:
        group, rating, score = scores.group_ids, scores.ratings, scores.scores  # (N,) each
        same_group = group[:, None] == group[None, :]  # (N, N)
        candidates = same_group & (rating[None, :] <= rating[:, None])  # (N, N) stage n picks n among these
        others = score[None, :].expand(len(group), -1).masked_fill(~candidates, float("-inf"))  # (N, N)
        terms = score - torch.logsumexp(others, dim=1)  # (N,) log-probability of each completion's placement
        losses = torch.zeros(scores.num_groups, dtype=score.dtype, device=score.device).index_add(0, group, -terms)
        return RewardLossOutput(losses=losses)


def ordered_pairs(scores: GroupScores) -> tuple[Tensor, Tensor]:
    """The (better, worse) completion indices of every pair inside a group that the ratings order: the pairs
    accuracy and margin are read on.

    >>> ratings = torch.tensor([1.0, 3.0, 2.0, 0.0, 0.0])
    >>> better, worse = ordered_pairs(GroupScores(torch.zeros(5), torch.tensor([0, 0, 0, 1, 1]), ratings))
    >>> better.tolist(), worse.tolist()
    ([1, 1, 2], [0, 2, 0])
    """
    group, rating = scores.group_ids, scores.ratings
    ordered = (group[:, None] == group[None, :]) & (rating[:, None] > rating[None, :])  # (N, N) row beats column
    better, worse = ordered.nonzero(as_tuple=True)
    return better, worse
