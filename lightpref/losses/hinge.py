"""SLiC-style hinge loss on the log-ratio margin."""

from __future__ import annotations

import torch

from lightpref.losses.base import LogProbs, LossOutput, PreferenceLoss, check_beta, log_ratios


class Hinge(PreferenceLoss):
    """Hinge loss on the log-ratio margin (SLiC's calibration loss, reference-normalised as in TRL's ``hinge``).

    Zhao et al., 2023, https://arxiv.org/abs/2305.10425. With ``h = ρc − ρr``::

        L = max(0, 1 − β·h)

    SLiC-HF writes ``max(0, δ − log π(y⁺|x) + log π(y⁻|x))`` on the policy alone; TRL's form, used here, puts the
    log-ratio margin ``h`` in place of the log-prob margin and ``δ = 1/β``, since ``max(0, 1 − β·h) =
    β·max(0, 1/β − h)``. A pair whose margin already exceeds ``1/β`` gives no loss and no gradient.

    Args:
        beta: inverse margin β; a pair stops contributing once ``h ≥ 1/β``.
    """

    summary = "SLiC hinge max(0, 1 − β·h) on the log-ratio margin"

    def __init__(self, beta: float = 0.1) -> None:
        super().__init__()
        check_beta(beta)
        self.beta = beta

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        chosen_ratio, rejected_ratio = log_ratios(policy, reference)  # (B,), (B,)
        return LossOutput(
            losses=torch.relu(1 - self.beta * (chosen_ratio - rejected_ratio)),
            chosen_rewards=(self.beta * chosen_ratio).detach(),
            rejected_rewards=(self.beta * rejected_ratio).detach(),
        )
