"""APO: anchored preference losses that fix the direction of each completion's likelihood change."""

from __future__ import annotations

import torch
from torch import Tensor

from lightpref.losses.base import LogProbs, LossOutput, PreferenceLoss, check_beta, log_ratios


class APOZero(PreferenceLoss):
    """Anchored Preference Optimisation, zero variant: raise the chosen, lower the rejected likelihood.

    D'Oosterlinck et al., 2024, https://arxiv.org/abs/2408.06266 (Eq. 7, TRL's ``apo_zero``)::

        L = (1 − σ(β·ρc)) + σ(β·ρr)

    ``∂L/∂ρc = −β·σ'(β·ρc) < 0`` and ``∂L/∂ρr = β·σ'(β·ρr) > 0``: each completion moves in a fixed direction
    relative to the reference, whatever the other does. For chosen completions better than the model's own outputs.

    Args:
        beta: temperature β.
    """

    summary = "APO-zero (1 − σ(βρc)) + σ(βρr): raise chosen, lower rejected (anchored)"

    def __init__(self, beta: float = 0.1) -> None:
        super().__init__()
        check_beta(beta)
        self.beta = beta

    def pair_losses(self, chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
        """Per-pair losses from the rewards ``β·ρc`` and ``β·ρr``, each (B,)."""
        return torch.sigmoid(-chosen_rewards) + torch.sigmoid(rejected_rewards)  # 1 − σ(x) = σ(−x)

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        chosen_ratio, rejected_ratio = log_ratios(policy, reference)  # (B,), (B,)
        chosen_rewards, rejected_rewards = self.beta * chosen_ratio, self.beta * rejected_ratio
        return LossOutput(
            losses=self.pair_losses(chosen_rewards, rejected_rewards),
            chosen_rewards=chosen_rewards.detach(),
            rejected_rewards=rejected_rewards.detach(),
        )


class APODown(APOZero):
    """Anchored Preference Optimisation, down variant: lower both likelihoods, the rejected one more.

    D'Oosterlinck et al., 2024, https://arxiv.org/abs/2408.06266 (Eq. 8, TRL's ``apo_down``), with ``h = ρc − ρr``::

        L = σ(β·ρc) + (1 − σ(β·h))

    The first term pushes the chosen log-ratio down, the second widens the margin. For chosen completions worse
    than the model's own outputs.

    Args:
        beta: temperature β.
    """

    summary = "APO-down σ(βρc) + (1 − σ(βh)): lower chosen, lower rejected more (anchored)"

    def pair_losses(self, chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
        return torch.sigmoid(chosen_rewards) + torch.sigmoid(rejected_rewards - chosen_rewards)  # 1 − σ(βh) = σ(−βh)
