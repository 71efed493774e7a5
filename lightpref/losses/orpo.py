"""ORPO: the chosen completion's NLL plus a log-odds-ratio preference term, without a reference model."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightpref.losses.base import LogProbs, LossOutput, PreferenceLoss, check_beta

LOG_PROB_CEILING = -1e-6  # a token-mean log-prob of exactly 0 has infinite odds; clamp just below it


def log1m_exp(x: Tensor) -> Tensor:
    """``log(1 − e^x)`` for ``x < 0``, accurate at both ends (x is first clamped to ``≤ LOG_PROB_CEILING``)."""
    x = x.clamp(max=LOG_PROB_CEILING)
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


class ORPO(PreferenceLoss):
    """Odds Ratio Preference Optimisation: SFT on y⁺ plus a penalty on the log odds ratio of y⁺ over y⁻.

    Hong, Lee, Thorne, 2024, https://arxiv.org/abs/2403.07691. With token-mean log-probs ``p̄`` (so ``e^p̄`` is the
    geometric-mean token probability) and ``odds(p̄) = e^p̄ / (1 − e^p̄)``::

        log_odds = (p̄c − p̄r) − (log(1 − e^p̄c) − log(1 − e^p̄r))
        L = −p̄c − λ·logσ(log_odds)

    ``log(1 − e^p̄)`` is computed stably (``log(−expm1(p̄))`` near 0), with ``p̄`` clamped to ``≤ −1e-6``. The NLL is
    each pair's token mean; TRL pools all chosen tokens of the batch into one cross-entropy. Rewards are
    ``λ·p̄c`` and ``λ·p̄r`` (as in TRL). Metrics, as TRL names them: ``orpo/log_odds_ratio`` (``logσ(log_odds)``),
    ``orpo/log_odds_chosen`` (``log_odds``) and ``orpo/nll_loss``.

    Args:
        beta: λ, the weight of the odds-ratio term (named ``beta`` as in TRL's ORPOConfig, default 0.1).
    """

    summary = "ORPO −p̄c − λ·logσ(log odds(y⁺) − log odds(y⁻)) on token means, no reference"
    requires_reference = False
    length_normalized = True

    def __init__(self, beta: float = 0.1) -> None:
        super().__init__()
        check_beta(beta)
        self.beta = beta

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        chosen, rejected = policy.chosen, policy.rejected  # (B,) token means
        log_odds = (chosen - rejected) - (log1m_exp(chosen) - log1m_exp(rejected))
        ratio = F.logsigmoid(log_odds)
        return LossOutput(
            losses=-chosen - self.beta * ratio,
            chosen_rewards=(self.beta * chosen).detach(),
            rejected_rewards=(self.beta * rejected).detach(),
            metrics={
                "orpo/log_odds_ratio": ratio.detach(),
                "orpo/log_odds_chosen": log_odds.detach(),
                "orpo/nll_loss": -chosen.detach(),
            },
        )
