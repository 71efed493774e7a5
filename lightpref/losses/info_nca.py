"""InfoNCA: noise-contrastive alignment on K completions with explicit scores."""

from __future__ import annotations

import math

import torch

from lightpref.batch import RANKED
from lightpref.losses.base import LossOutput, PreferenceLoss, check_beta
from lightpref.losses.shapes import RankedLogProbs


class InfoNCA(PreferenceLoss):
    """InfoNCA (Chen, Deng, Su, Zhu, Zhu, 2024, Noise Contrastive Alignment, https://arxiv.org/abs/2402.05369).

    The scores become a target distribution over a group's K completions, the implicit rewards a predicted one, and
    the loss is their cross-entropy::

        p_k = softmax_k(s / α)        q_k = softmax_k(β·ρ_k)        L = −Σ_k p_k · log q_k

    Its minimum makes ``β·ρ_k = s_k/α + const``: the policy learns the scores' relative values, not only their
    order. As α → 0 the target puts all mass on the best completion (for K = 2 that is DPO).

    Args:
        beta: temperature β of the implicit reward ``β·ρ``.
        alpha: temperature α of the target softmax over scores, in the scores' own units (smaller: sharper).
        length_normalized: use token-mean instead of summed log-probs.
    """

    summary = "InfoNCA −Σₖ softmax(s/α)ₖ · log softmax(β·ρ)ₖ: listwise cross-entropy against the scores"
    consumes = RANKED

    def __init__(self, beta: float = 0.1, alpha: float = 1.0, length_normalized: bool = False) -> None:
        super().__init__()
        check_beta(beta)
        if not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and 0 < alpha < math.inf):
            raise ValueError(f"`alpha` must be a positive number, got {alpha!r}; it scales the scores (1.0 uses "
                             "them as they are)")
        self.beta, self.alpha = beta, alpha
        self.length_normalized = length_normalized

    def forward(self, policy: RankedLogProbs, reference: RankedLogProbs | None) -> LossOutput:
        rewards = self.beta * (policy.logps - reference.logps)  # (G, K)
        mask = policy.mask
        targets = torch.softmax((policy.scores / self.alpha).masked_fill(~mask, -torch.inf), dim=-1)  # (G, K)
        predicted = torch.log_softmax(rewards.masked_fill(~mask, -torch.inf), dim=-1)  # (G, K)
        losses = -(targets * predicted.masked_fill(~mask, 0.0)).sum(-1)  # (G,)
        best, worst = policy.best(), policy.worst()
        detached = rewards.detach()
        return LossOutput(losses=losses, chosen_rewards=policy.at(detached, best),
                          rejected_rewards=policy.at(detached, worst))
