"""Robust DPO: an unbiased DPO loss under preference labels flipped with a known rate ε."""

from __future__ import annotations

import torch.nn.functional as F

from lightpref.losses.base import (
    LogProbs,
    LossOutput,
    PreferenceLoss,
    check_beta,
    check_label_smoothing,
    log_ratios,
)


class RobustDPO(PreferenceLoss):
    """Provably robust DPO (rDPO): de-biases the DPO loss for labels flipped with probability ε.

    Chowdhury, Kini, Natarajan, 2024, https://arxiv.org/abs/2403.00409. With ``h = ρc − ρr``::

        L = [−(1−ε)·logσ(β·h) + ε·logσ(−β·h)] / (1 − 2ε)

    Since ``logσ(−z) = logσ(z) − z`` this equals ``−logσ(β·h) − ε·β·h/(1 − 2ε)``: DPO plus a linear term, so unlike
    conservative DPO (``dpo`` with ``label_smoothing``) the loss is unbounded below as ``h`` grows. ε = 0 is DPO.

    Args:
        beta: temperature β of the implicit reward ``β·ρ``.
        label_smoothing: ε in ``[0, 0.5)``, the assumed rate of flipped preference labels.
    """

    summary = "robust DPO [−(1−ε)logσ(βh) + ε·logσ(−βh)]/(1−2ε), unbiased under label noise ε"

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0) -> None:
        super().__init__()
        check_beta(beta)
        check_label_smoothing(label_smoothing, upper=0.5, inclusive=False)  # 1 − 2ε divides the loss
        self.beta = beta
        self.label_smoothing = label_smoothing

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        chosen_ratio, rejected_ratio = log_ratios(policy, reference)  # (B,), (B,)
        logits = self.beta * (chosen_ratio - rejected_ratio)
        epsilon = self.label_smoothing
        losses = (-(1 - epsilon) * F.logsigmoid(logits) + epsilon * F.logsigmoid(-logits)) / (1 - 2 * epsilon)
        return LossOutput(
            losses=losses,
            chosen_rewards=(self.beta * chosen_ratio).detach(),
            rejected_rewards=(self.beta * rejected_ratio).detach(),
        )
