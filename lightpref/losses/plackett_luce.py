"""Plackett–Luce DPO: the DPO paper's generalisation from pairs to rankings of K completions."""

from __future__ import annotations

import torch

from lightpref.batch import RANKED
from lightpref.losses.base import LossOutput, PreferenceLoss, check_beta
from lightpref.losses.shapes import RankedLogProbs


class PlackettLuce(PreferenceLoss):
    """DPO under the Plackett–Luce ranking model (Rafailov et al., 2023, https://arxiv.org/abs/2305.18290, A.3).

    With rewards ``r_k = β·ρ_k = β·(log π(y_k|x) − log π_ref(y_k|x))`` and the completions ranked by score,
    ``τ(1)`` the best::

        L = −Σ_{k=1..K} log [ exp(r_τ(k)) / Σ_{j ≥ k} exp(r_τ(j)) ]

    i.e. the best completion is picked from all K, the second from the remaining K − 1, and so on (the last term is
    0). For K = 2 it is DPO, ``−logσ(β·(ρ₁ − ρ₂))``. Ties: a completion's stage counts every completion not scored
    above it (tied ones included) in its denominator, so the loss does not depend on the order of tied completions;
    without ties this is the formula above exactly.

    Rewards logged as ``rewards/chosen`` and ``rewards/rejected`` are those of each group's best and worst.

    Args:
        beta: temperature β of the implicit reward ``β·ρ``.
        length_normalized: use token-mean instead of summed log-probs.
    """

    summary = "Plackett–Luce DPO −Σₖ log softmax over the completions not ranked above k of β·ρ: listwise, K = 2 is DPO"
    consumes = RANKED

    def __init__(self, beta: float = 0.1, length_normalized: bool = False) -> None:
        super().__init__()
        check_beta(beta)
        self.beta = beta
        self.length_normalized = length_normalized

    def forward(self, policy: RankedLogProbs, reference: RankedLogProbs | None) -> LossOutput:
        rewards = self.beta * (policy.logps - reference.logps)  # (G, K)
        scores, mask = policy.scores, policy.mask
        # stage k of group g chooses k among the completions j not scored above it: (G, K, K)
        candidates = mask[:, None, :] & (scores[:, None, :] <= scores[:, :, None])
        candidates |= torch.eye(scores.shape[-1], dtype=torch.bool, device=scores.device)  # padding: itself only
        log_denominator = torch.logsumexp(rewards[:, None, :].masked_fill(~candidates, -torch.inf), dim=-1)  # (G, K)
        losses = -((rewards - log_denominator) * mask).sum(-1)  # (G,)
        best, worst = policy.best(), policy.worst()
        detached = rewards.detach()
        return LossOutput(losses=losses, chosen_rewards=policy.at(detached, best),
                          rejected_rewards=policy.at(detached, worst))
