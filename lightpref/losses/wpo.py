"""WPO: reweight any preference loss by how likely the policy is to have produced each pair itself."""

from __future__ import annotations

import torch
from torch import Tensor

from lightpref.batch import PAIRS
from lightpref.losses.base import LogProbs, LossOutput, PreferenceLoss
from lightpref.losses.dpo import DPO


def mean_adjusted_logp(tokens: Tensor, log_collision: Tensor, mask: Tensor) -> Tensor:
    """ā per sequence, (B,): the token mean of ``log π(y_t|·) − log Σ_v π(v|·)²`` over the completion."""
    mask = mask.to(tokens.dtype)  # (B, T)
    return ((tokens - log_collision) * mask).sum(-1) / mask.sum(-1).clamp(min=1)


class WPO(PreferenceLoss):
    """Weighted Preference Optimisation: the wrapped loss, each pair weighted by its on-policy probability.

    Zhou et al., 2024, https://arxiv.org/abs/2406.11827 (as TRL's ``use_weighting``). With ``ā`` the token mean of
    ``log π(y_t|·) − log Σ_v π(v|·)²`` over a completion (the policy's, detached)::

        w = min(1, exp(ā⁺ + ā⁻)),   L = w · L_wrapped

    ``Σ_v π(v|·)²`` is the expected probability of a token the policy samples itself, so completions the policy
    would sample get weights near 1 and off-policy ones less. The wrapper takes on the wrapped
    loss's needs (reference, token means or sums, views) and adds per-token and collision log-probs, so the wrapped
    loss gets exactly the record it asked for. With a batch-coupled loss (``aot``) the weights multiply quantiles, not
    pairs. Metric: ``wpo/weight``, plus the wrapped loss's own.

    Args:
        loss: the loss to weight; ``dpo`` with its defaults when omitted.
    """

    summary = "WPO: wraps a loss and weights each pair by min(1, exp(ā⁺ + ā⁻)), its on-policy probability"
    reference_note = "as the wrapped loss"  # what `lightpref losses` shows: the wrapped loss decides
    needs_token_logps = True
    needs_collision_logps = True

    def __init__(self, loss: PreferenceLoss | None = None) -> None:
        super().__init__()
        loss = DPO() if loss is None else loss
        if not isinstance(loss, PreferenceLoss):
            raise TypeError(f"`loss` of WPO must be a PreferenceLoss, got {type(loss).__name__}")
        if loss.consumes != PAIRS:
            raise ValueError(f"WPO weights pairs, but {type(loss).__name__} consumes {loss.consumes!r} records; wrap "
                             "a pairwise loss")
        self.loss = loss
        self.requires_reference = loss.requires_reference
        self.length_normalized = loss.length_normalized
        self.views = loss.views

    @staticmethod
    def weights(policy: LogProbs) -> Tensor:
        """w per pair, (B,), detached."""
        fields = (policy.chosen_tokens, policy.chosen_mask, policy.chosen_log_collision,
                  policy.rejected_tokens, policy.rejected_mask, policy.rejected_log_collision)
        if any(field is None for field in fields):
            raise ValueError(
                "WPO needs per-token log-probs, completion masks and collision log-probs (`*_tokens`, `*_mask`, "
                "`*_log_collision`) in the policy record; it sets `needs_token_logps` and `needs_collision_logps` "
                "so that the module fills them"
            )
        with torch.no_grad():
            chosen = mean_adjusted_logp(policy.chosen_tokens, policy.chosen_log_collision, policy.chosen_mask)
            rejected = mean_adjusted_logp(policy.rejected_tokens, policy.rejected_log_collision, policy.rejected_mask)
            return torch.exp(chosen + rejected).clamp(max=1)

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        weights = self.weights(policy)  # (B,)
        output = self.loss(policy, reference)
        return LossOutput(
            losses=weights * output.losses,
            chosen_rewards=output.chosen_rewards,
            rejected_rewards=output.rejected_rewards,
            metrics={**output.metrics, "wpo/weight": weights},
        )
