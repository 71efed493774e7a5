"""KTO: Kahneman–Tversky optimisation from single completions labelled desirable or undesirable."""

from __future__ import annotations

import torch

from lightpref.batch import UNPAIRED
from lightpref.losses.base import LossOutput, PreferenceLoss, check_beta, check_non_negative
from lightpref.losses.shapes import UnpairedLogProbs
from lightpref.losses.unpaired import balance_warning, kl_reference_point


class KTO(PreferenceLoss):
    """Kahneman–Tversky Optimisation (Ethayarajh et al., 2024, https://arxiv.org/abs/2402.01306, eq. 7; TRL's
    ``kto``), on unpaired data: each example is one completion y of a prompt x, desirable or undesirable.

    With ``ρ = log π(y|x) − log π_ref(y|x)`` and the reference point
    ``z₀ = max(0, mean_b(log π(y'_b|x_b) − log π_ref(y'_b|x_b)))`` over the batch's mismatched pairs (each prompt with
    another example's completion; no gradient; averaged across processes)::

        L(x, y) = λ_D·(1 − σ(β·(ρ − z₀)))   y desirable
        L(x, y) = λ_U·(1 − σ(β·(z₀ − ρ)))   y undesirable

    and the batch loss is the mean over examples. Rewards are ``β·ρ`` (``rewards/chosen`` averages the desirable
    examples', ``rewards/rejected`` the undesirable ones'); z₀ is logged as ``kl``. The paper recommends weights with
    λ_D·n_D / (λ_U·n_U) in [1, 4/3] (eq. 8); lightpref warns when the training data's counts put them outside.

    Args:
        beta: temperature β.
        desirable_weight: λ_D.
        undesirable_weight: λ_U.
    """

    summary = "KTO λ·(1 − σ(±β(ρ − z₀))) on unpaired completions, z₀ the batch's mismatched-pair KL estimate"
    consumes = UNPAIRED
    needs_mismatched = True

    def __init__(self, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> None:
        super().__init__()
        check_beta(beta)
        check_non_negative("desirable_weight", desirable_weight, "KTO's paper uses 1.0 for balanced data")
        check_non_negative("undesirable_weight", undesirable_weight, "KTO's paper uses 1.0 for balanced data")
        self.beta, self.desirable_weight, self.undesirable_weight = beta, desirable_weight, undesirable_weight

    def forward(self, policy: UnpairedLogProbs, reference: UnpairedLogProbs | None) -> LossOutput:
        ratios = policy.logps - reference.logps  # (B,)
        kl = kl_reference_point(policy.mismatched, reference.mismatched)  # ()
        desirable = 1 - torch.sigmoid(self.beta * (ratios - kl))
        undesirable = 1 - torch.sigmoid(self.beta * (kl - ratios))
        losses = torch.where(policy.labels, self.desirable_weight * desirable, self.undesirable_weight * undesirable)
        rewards = (self.beta * ratios).detach()
        return LossOutput(losses=losses, chosen_rewards=rewards, rejected_rewards=rewards, metrics={"kl": kl})

    def balance_warning(self, desirable: int, undesirable: int) -> str | None:
        """A warning when the training data's label counts put the weights outside the paper's range (eq. 8)."""
        return balance_warning(desirable, undesirable, self.desirable_weight, self.undesirable_weight)
