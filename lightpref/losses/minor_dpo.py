"""MinorDPO: DPO whose penalty on the rejected response stops at the reference."""

from __future__ import annotations

import torch
from torch import nn

from lightpref.losses.base import LogProbs, LossOutput, PreferenceLoss, check_beta, log_ratios


class MinorDPO(PreferenceLoss):
    """MinorDPO: penalise the rejected response only while the policy finds it likelier than the reference does.

    Xie et al., 2024, https://arxiv.org/abs/2408.09834. With ``ρc = log π(y⁺|x) − log π_ref(y⁺|x)`` and ``ρr``
    likewise for y⁻::

        L = −logσ(β·ρc − β·max(0, ρr))

    Once ``log π(y⁻|x) ≤ log π_ref(y⁻|x)`` the rejected log-prob receives no gradient (also at equality), so DPO's
    unbounded push-down of y⁻, which drags y⁺ down with it, stops at the reference. Where ``ρr > 0`` the loss and
    its gradients are DPO's. Log-probs are summed over completion tokens.

    Metrics: ``minor_dpo/rejected_below_reference``, the fraction of pairs with ``ρr ≤ 0`` (rejected penalty off).

    Args:
        beta: temperature β of the implicit reward ``β·ρ``.
    """

    summary = "MinorDPO −logσ(β·ρc − β·max(0, ρr)): no push on y⁻ below the reference"

    def __init__(self, beta: float = 0.1) -> None:
        super().__init__()
        check_beta(beta)
        self.beta = beta

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        chosen_ratio, rejected_ratio = log_ratios(policy, reference)  # (B,), (B,)
        # relu, not clamp: its gradient at ρr = 0 is 0, so "no gradient when pr ≤ rr" holds at equality too
        logits = self.beta * (chosen_ratio - torch.relu(rejected_ratio))
        return LossOutput(
            losses=-nn.functional.logsigmoid(logits),
            chosen_rewards=(self.beta * chosen_ratio).detach(),
            rejected_rewards=(self.beta * rejected_ratio).detach(),
            metrics={"minor_dpo/rejected_below_reference": (rejected_ratio <= 0).float().detach()},
        )
