"""APO-zero on unpaired data: each completion's likelihood pushed up or down on its own label."""

from __future__ import annotations

import torch

from lightpref.batch import UNPAIRED
from lightpref.losses.base import LossOutput, PreferenceLoss, check_beta, check_non_negative
from lightpref.losses.shapes import UnpairedLogProbs
from lightpref.losses.unpaired import balance_warning


class APOZeroUnpaired(PreferenceLoss):
    """Anchored Preference Optimisation, zero variant, unpaired (D'Oosterlinck et al., 2024,
    https://arxiv.org/abs/2408.06266, eq. 7 applied to single completions; TRL's ``apo_zero_unpaired``).

    With ``ρ = log π(y|x) − log π_ref(y|x)``::

        L(x, y) = λ_D·(1 − σ(β·ρ))   y desirable
        L(x, y) = λ_U·σ(β·ρ)         y undesirable

    No KL estimate: no mismatched completions are scored. For desirable completions better than the model's own.

    Args:
        beta: temperature β.
        desirable_weight: λ_D.
        undesirable_weight: λ_U.
    """

    summary = "APO-zero unpaired λ_D·(1 − σ(βρ)) / λ_U·σ(βρ): raise desirable, lower undesirable (anchored)"
    consumes = UNPAIRED
    needs_mismatched = False

    def __init__(self, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> None:
        super().__init__()
        check_beta(beta)
        check_non_negative("desirable_weight", desirable_weight, "1.0 for balanced data")
        check_non_negative("undesirable_weight", undesirable_weight, "1.0 for balanced data")
        self.beta, self.desirable_weight, self.undesirable_weight = beta, desirable_weight, undesirable_weight

    def forward(self, policy: UnpairedLogProbs, reference: UnpairedLogProbs | None) -> LossOutput:
        rewards = self.beta * (policy.logps - reference.logps)  # (B,)
        desirable = self.desirable_weight * torch.sigmoid(-rewards)  # 1 − σ(x) = σ(−x)
        undesirable = self.undesirable_weight * torch.sigmoid(rewards)
        losses = torch.where(policy.labels, desirable, undesirable)
        detached = rewards.detach()
        return LossOutput(losses=losses, chosen_rewards=detached, rejected_rewards=detached)

    def balance_warning(self, desirable: int, undesirable: int) -> str | None:
        """As for KTO: the weights against the training data's label counts (KTO eq. 8)."""
        return balance_warning(desirable, undesirable, self.desirable_weight, self.undesirable_weight)
