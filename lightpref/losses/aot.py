"""AOT: distributional alignment by optimal transport, as a DPO loss on batch-sorted quantities."""

from __future__ import annotations

import torch
from torch import Tensor

from lightpref.losses.base import (
    LogProbs,
    LossOutput,
    PreferenceLoss,
    check_beta,
    check_label_smoothing,
    log_ratios,
    smoothed_sigmoid_loss,
)


class AOT(PreferenceLoss):
    """Alignment via Optimal Transport, paired form (TRL's ``aot``): the policy's margins dominate the reference's.

    Melnyk et al., 2024, https://arxiv.org/abs/2406.05882. With ``sort`` ascending over the batch, the policy
    margins ``m = log π(y⁺|x) − log π(y⁻|x)`` and the reference margins ``m_ref`` likewise::

        δ = sort(m) − sort(m_ref);  L_i = −(1−ε)·logσ(β·δ_i) − ε·logσ(−β·δ_i)

    Matching sorted values is the one-dimensional optimal transport between the two empirical distributions, so
    the loss asks for first-order stochastic dominance of one distribution over the other, not for each pair's
    margin. ``losses[i]`` belongs to the i-th quantile, not to pair i; rewards stay per pair (``β·ρ``).

    The sort couples the pairs of a batch: under data parallelism each process sorts its own local batch (no
    gather), so results depend on the per-device batch size, and a batch of one pair is DPO.

    Args:
        beta: temperature β.
        label_smoothing: ε in ``[0, 0.5]``, as in conservative DPO.
    """

    summary = "AOT (paired): DPO on sorted policy margins minus sorted reference margins across the batch"

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0) -> None:
        super().__init__()
        check_beta(beta)
        check_label_smoothing(label_smoothing)
        self.beta = beta
        self.label_smoothing = label_smoothing

    def sorted_gap(self, policy: LogProbs, reference: LogProbs) -> Tensor:
        """δ, (B,): the sorted quantities to be ordered, chosen side minus rejected side."""
        policy_margins = torch.sort(policy.chosen - policy.rejected).values  # (B,)
        reference_margins = torch.sort(reference.chosen - reference.rejected).values  # (B,)
        return policy_margins - reference_margins

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        chosen_ratio, rejected_ratio = log_ratios(policy, reference)  # (B,), (B,)
        return LossOutput(
            losses=smoothed_sigmoid_loss(self.beta * self.sorted_gap(policy, reference), self.label_smoothing),
            chosen_rewards=(self.beta * chosen_ratio).detach(),
            rejected_rewards=(self.beta * rejected_ratio).detach(),
        )


class AOTPair(AOT):
    """Alignment via Optimal Transport, unpaired form (TRL's ``aot_pair``): chosen log-ratios dominate rejected ones.

    Melnyk et al., 2024, https://arxiv.org/abs/2406.05882. The chosen and rejected log-ratios are sorted separately
    across the batch, so which y⁻ came with which y⁺ does not matter (the form for unpaired data)::

        δ = sort(ρc) − sort(ρr);  L_i = −(1−ε)·logσ(β·δ_i) − ε·logσ(−β·δ_i)

    As for ``aot``, ``losses[i]`` belongs to the i-th quantile, and each process sorts only its local batch.

    Args:
        beta: temperature β.
        label_smoothing: ε in ``[0, 0.5]``, as in conservative DPO.
    """

    summary = "AOT (unpaired): DPO on sorted chosen log-ratios minus sorted rejected log-ratios across the batch"

    def sorted_gap(self, policy: LogProbs, reference: LogProbs) -> Tensor:
        chosen_ratio, rejected_ratio = log_ratios(policy, reference)  # (B,), (B,)
        return torch.sort(chosen_ratio).values - torch.sort(rejected_ratio).values
