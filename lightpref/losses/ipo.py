"""IPO: squared loss pulling the log-ratio margin to 1/(2β)."""

from __future__ import annotations

from lightpref.losses.base import LogProbs, LossOutput, PreferenceLoss, check_beta, log_ratios


class IPO(PreferenceLoss):
    """Identity Preference Optimisation: regress the log-ratio margin onto ``1/(2β)``.

    Azar et al., 2023, https://arxiv.org/abs/2310.12036. With ``h = ρc − ρr`` (β is the paper's τ)::

        L = (h − 1/(2β))²

    The paper uses summed log-probs, which is the default here. TRL's DPOTrainer computes IPO on token-mean
    log-probs; set ``length_normalized: true`` to match it.

    Args:
        beta: regularisation β (τ in the paper); the target margin is ``1/(2β)``.
        length_normalized: use token-mean instead of summed log-probs (TRL's IPO).
    """

    summary = "IPO squared loss (h − 1/(2β))², summed or token-mean log-probs"

    def __init__(self, beta: float = 0.1, length_normalized: bool = False) -> None:
        super().__init__()
        check_beta(beta)
        self.beta = beta
        self.length_normalized = length_normalized

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        chosen_ratio, rejected_ratio = log_ratios(policy, reference)  # (B,), (B,)
        margin = chosen_ratio - rejected_ratio
        return LossOutput(
            losses=(margin - 1 / (2 * self.beta)) ** 2,
            chosen_rewards=(self.beta * chosen_ratio).detach(),
            rejected_rewards=(self.beta * rejected_ratio).detach(),
        )
