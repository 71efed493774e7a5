"""SPPO (hard labels): squared regression of each log-ratio onto ±1/(2β)."""

from __future__ import annotations

from lightpref.losses.base import LogProbs, LossOutput, PreferenceLoss, check_beta, log_ratios


class SPPOHard(PreferenceLoss):
    """Self-Play Preference Optimisation with hard win probabilities (TRL's ``sppo_hard``).

    Wu et al., 2024, https://arxiv.org/abs/2405.00675. SPPO regresses each log-ratio onto ``(P(y ≻ π) − ½)/β``,
    a win probability estimated outside the trainer (by PairRM in the paper). With the hard probabilities
    ``P = 1`` for y⁺ and ``P = 0`` for y⁻::

        L = (ρc − 1/(2β))² + (ρr + 1/(2β))²

    Unlike IPO, which regresses only the margin ``h``, each completion's log-ratio has its own target.

    Args:
        beta: β; the targets are ``±1/(2β)``.
    """

    summary = "SPPO hard (ρc − 1/(2β))² + (ρr + 1/(2β))²: each log-ratio regressed on its own target"

    def __init__(self, beta: float = 0.1) -> None:
        super().__init__()
        check_beta(beta)
        self.beta = beta

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        chosen_ratio, rejected_ratio = log_ratios(policy, reference)  # (B,), (B,)
        target = 1 / (2 * self.beta)
        return LossOutput(
            losses=(chosen_ratio - target) ** 2 + (rejected_ratio + target) ** 2,
            chosen_rewards=(self.beta * chosen_ratio).detach(),
            rejected_rewards=(self.beta * rejected_ratio).detach(),
        )
