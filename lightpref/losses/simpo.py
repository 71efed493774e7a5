"""SimPO: a reference-free margin loss on token-mean log-probs with a target reward margin γ."""

from __future__ import annotations

from lightpref.losses.base import (
    LogProbs,
    LossOutput,
    PreferenceLoss,
    check_beta,
    check_label_smoothing,
    check_non_negative,
    smoothed_sigmoid_loss,
)


class SimPO(PreferenceLoss):
    """Simple Preference Optimisation: the policy's own token-mean log-prob is the reward; no reference model.

    Meng, Xia, Chen, 2024, https://arxiv.org/abs/2405.14734. With token-mean log-probs ``p̄ = log π(y|x)/|y|`` and
    the target margin ``γ = β·gamma_beta_ratio``::

        L = −(1−ε)·logσ(β·(p̄c − p̄r) − γ) − ε·logσ(−(β·(p̄c − p̄r) − γ))

    Rewards are ``β·p̄c`` and ``β·p̄r``. The paper tunes γ through the ratio γ/β (its sweeps span about 0.25–0.5).
    TRL's CPOTrainer takes γ itself (``simpo_gamma``): ``gamma_beta_ratio = simpo_gamma / beta``.

    Args:
        beta: β, the scale of the reward ``β·p̄`` (the paper uses about 2.0–2.5).
        gamma_beta_ratio: γ/β ≥ 0; the margin asked for between the two rewards is ``γ = β·gamma_beta_ratio``.
        label_smoothing: ε in ``[0, 0.5]``, as in conservative DPO.
    """

    summary = "SimPO −logσ(β·(p̄c − p̄r) − γ) on token means, no reference"
    requires_reference = False
    length_normalized = True

    def __init__(self, beta: float = 2.0, gamma_beta_ratio: float = 0.5, label_smoothing: float = 0.0) -> None:
        super().__init__()
        check_beta(beta)
        check_label_smoothing(label_smoothing)
        check_non_negative("gamma_beta_ratio", gamma_beta_ratio,
                           "it is γ/β; the paper uses values around 0.25–0.5, and 0 drops the target margin")
        self.beta = beta
        self.gamma_beta_ratio = gamma_beta_ratio
        self.label_smoothing = label_smoothing

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        chosen_rewards, rejected_rewards = self.beta * policy.chosen, self.beta * policy.rejected  # (B,) token means
        logits = chosen_rewards - rejected_rewards - self.beta * self.gamma_beta_ratio
        return LossOutput(
            losses=smoothed_sigmoid_loss(logits, self.label_smoothing),
            chosen_rewards=chosen_rewards.detach(),
            rejected_rewards=rejected_rewards.detach(),
        )
