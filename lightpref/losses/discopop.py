"""DiscoPOP: the log-ratio modulated loss discovered by LLM-driven search."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lightpref.losses.base import LogProbs, LossOutput, PreferenceLoss, check_beta, log_ratios


class DiscoPOP(PreferenceLoss):
    """DiscoPOP (log-ratio modulated loss): a blend of the DPO logistic loss and an exponential loss.

    Lu et al., 2024, https://arxiv.org/abs/2406.08414 (Eq. 5, TRL's ``discopop``). With ``z = β·h`` and the
    modulation ``m = σ(z/τ)``::

        L = (1 − m)·(−logσ(z)) + m·exp(−z)

    Negative margins get the logistic loss, positive ones the exponential loss. Computed as
    ``σ(−z/τ)·softplus(−z) + exp(−z + logσ(z/τ))``, which is the same value but never forms ``exp(−z)`` on its
    own, so it stays finite (``≈ |z|`` for very negative z, 0 for very positive z) where the direct form gives
    ``inf·0``.

    Args:
        beta: temperature β.
        tau: τ in ``(0, 1)``, the temperature of the modulation; the paper's 0.05 is the default. For τ ≥ 1 the
            exponential term would dominate at negative margins and the loss would grow exponentially.
    """

    summary = "DiscoPOP (1 − σ(βh/τ))·(−logσ(βh)) + σ(βh/τ)·exp(−βh), τ = 0.05"

    def __init__(self, beta: float = 0.1, tau: float = 0.05) -> None:
        super().__init__()
        check_beta(beta)
        if not (isinstance(tau, (int, float)) and 0 < tau < 1):
            raise ValueError(f"`tau` of discopop must be in (0, 1), got {tau!r}; the paper uses 0.05")
        self.beta = beta
        self.tau = tau

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        chosen_ratio, rejected_ratio = log_ratios(policy, reference)  # (B,), (B,)
        logits = self.beta * (chosen_ratio - rejected_ratio)
        logistic = torch.sigmoid(-logits / self.tau) * F.softplus(-logits)  # (1 − m)·(−logσ(z))
        exponential = torch.exp(-logits + F.logsigmoid(logits / self.tau))  # m·exp(−z); the exponent is < 0 for τ < 1
        return LossOutput(
            losses=logistic + exponential,
            chosen_rewards=(self.beta * chosen_ratio).detach(),
            rejected_rewards=(self.beta * rejected_ratio).detach(),
        )
