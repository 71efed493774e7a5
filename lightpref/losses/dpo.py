"""DPO, with optional label smoothing (conservative DPO)."""

from __future__ import annotations

from lightpref.losses.base import (
    LogProbs,
    LossOutput,
    PreferenceLoss,
    check_beta,
    check_label_smoothing,
    log_ratios,
    smoothed_sigmoid_loss,
)


class DPO(PreferenceLoss):
    """Direct Preference Optimization (sigmoid loss), with label smoothing for conservative DPO.

    Rafailov et al., 2023, https://arxiv.org/abs/2305.18290; cDPO: Mitchell, 2023.

    With ``ρc = log π(y⁺|x) − log π_ref(y⁺|x)``, ``ρr`` likewise for y⁻, and ``h = ρc − ρr``::

        L = −(1−ε)·logσ(β·h) − ε·logσ(−β·h)

    Args:
        beta: temperature β of the implicit reward ``β·ρ``.
        label_smoothing: ε, the assumed probability that a preference label is flipped, in ``[0, 0.5]``.
        length_normalized: use token-mean instead of summed log-probs (length-normalised DPO).
    """

    summary = "DPO sigmoid loss −logσ(β·h), with label smoothing ε (cDPO)"

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0, length_normalized: bool = False) -> None:
        super().__init__()
        check_beta(beta)
        check_label_smoothing(label_smoothing)
        self.beta = beta
        self.label_smoothing = label_smoothing
        self.length_normalized = length_normalized

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        chosen_ratio, rejected_ratio = log_ratios(policy, reference)  # (B,), (B,)
        logits = self.beta * (chosen_ratio - rejected_ratio)
        return LossOutput(
            losses=smoothed_sigmoid_loss(logits, self.label_smoothing),
            chosen_rewards=(self.beta * chosen_ratio).detach(),
            rejected_rewards=(self.beta * rejected_ratio).detach(),
        )
