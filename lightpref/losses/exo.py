"""EXO (pair form): reverse KL from the policy's preference probability to a smoothed label."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lightpref.losses.base import (
    LogProbs,
    LossOutput,
    PreferenceLoss,
    check_beta,
    check_label_smoothing,
    log_ratios,
)


class EXOPair(PreferenceLoss):
    """Efficient exact optimisation (EXO), pair form: ``KL(p_θ ‖ p_label)`` over the two completions.

    Ji et al., 2024, https://arxiv.org/abs/2402.00856 (Eq. 16, as TRL's ``exo_pair``). With ``z = β·h`` the policy's
    preference distribution over the pair is ``(σ(z), σ(−z))`` and the label's is ``(1−ε, ε)``::

        L = σ(z)·(logσ(z) − log(1−ε)) + σ(−z)·(logσ(−z) − log ε)

    The minimum, 0, is at ``σ(z) = 1−ε``; a margin beyond it is pushed back (mode-seeking, unlike DPO, which
    always rewards a larger margin). ε must be positive, since ``log ε`` appears in the loss. TRL silently replaces
    ε = 0 by 1e-3; here 1e-3 is the default and 0 is an error.

    Args:
        beta: temperature β of the implicit reward ``β·ρ``.
        label_smoothing: ε in ``(0, 0.5]``, the label's probability that y⁻ is preferred.
    """

    summary = "EXO pair KL((σ(βh), σ(−βh)) ‖ (1−ε, ε)), ε default 1e-3"

    def __init__(self, beta: float = 0.1, label_smoothing: float = 1e-3) -> None:
        super().__init__()
        check_beta(beta)
        check_label_smoothing(label_smoothing)
        if label_smoothing == 0:
            raise ValueError(
                "`label_smoothing` of exo_pair must be in (0, 0.5], got 0: the loss contains log ε; "
                "use a small value such as the default 1e-3 (what TRL substitutes for 0)"
            )
        self.beta = beta
        self.label_smoothing = label_smoothing

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        chosen_ratio, rejected_ratio = log_ratios(policy, reference)  # (B,), (B,)
        logits = self.beta * (chosen_ratio - rejected_ratio)
        epsilon = self.label_smoothing
        losses = torch.sigmoid(logits) * (F.logsigmoid(logits) - math.log(1 - epsilon)) + torch.sigmoid(-logits) * (
            F.logsigmoid(-logits) - math.log(epsilon)
        )
        return LossOutput(
            losses=losses,
            chosen_rewards=(self.beta * chosen_ratio).detach(),
            rejected_rewards=(self.beta * rejected_ratio).detach(),
        )
