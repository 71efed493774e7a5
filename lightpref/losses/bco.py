"""BCO (pair form): chosen and rejected rewards classified against a running mean of all rewards."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, distributed

from lightpref.losses.base import LogProbs, LossOutput, PreferenceLoss, check_beta, log_ratios


class BCOPair(PreferenceLoss):
    """Binary Classifier Optimisation on pairs: y⁺ classified above, y⁻ below, a running mean δ of the rewards.

    Jung et al., 2024, https://arxiv.org/abs/2404.04656 (pair form, as TRL's ``bco_pair``). With rewards
    ``r⁺ = β·ρc`` and ``r⁻ = β·ρr``::

        L = −logσ(r⁺ − δ) − logσ(−(r⁻ − δ))

    δ is the mean of every reward seen in training, both completions of every pair, kept in the buffers
    ``running_mean`` and ``running_count`` so checkpoints carry it. In training mode each call first folds in its
    batch (detached), then uses the new δ; in evaluation mode δ is only read::

        n = 2·B,  S = Σ (r⁺ + r⁻)          # summed over processes when torch.distributed is initialised
        count ← count + n;  δ ← δ + (S − n·δ) / count

    So δ is the exact cumulative mean, 0 before the first training batch. TRL's ``RunningMoments`` folds in each
    batch's mean as one sample, which is the same value whenever batches have equal sizes. With
    torch.distributed initialised every process must call the loss in training mode at each step (an all-reduce).

    Args:
        beta: temperature β of the implicit reward ``β·ρ``.
    """

    summary = "BCO pair −logσ(βρc − δ) − logσ(δ − βρr), δ a running mean of rewards (a buffer)"
    running_mean: Tensor
    running_count: Tensor

    def __init__(self, beta: float = 0.1) -> None:
        super().__init__()
        check_beta(beta)
        self.beta = beta
        self.register_buffer("running_mean", torch.zeros(()))
        self.register_buffer("running_count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, rewards: Tensor) -> None:
        """Fold a batch of rewards (any shape) into δ, across all processes when distributed."""
        rewards = rewards.detach().float()
        stats = torch.stack([rewards.sum(), rewards.new_tensor(float(rewards.numel()))])  # (2,): sum, count
        if distributed.is_available() and distributed.is_initialized():
            distributed.all_reduce(stats, op=distributed.ReduceOp.SUM)
        total, count = stats.unbind()
        new_count = self.running_count + count.round().long()
        mean = self.running_mean.float()
        self.running_mean.copy_(mean + (total - count * mean) / new_count.clamp(min=1))
        self.running_count.copy_(new_count)

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        chosen_ratio, rejected_ratio = log_ratios(policy, reference)  # (B,), (B,)
        chosen_rewards, rejected_rewards = self.beta * chosen_ratio, self.beta * rejected_ratio
        if self.training:
            self.update(torch.cat([chosen_rewards, rejected_rewards]))
        delta = self.running_mean.detach().to(chosen_rewards.dtype)
        losses = -F.logsigmoid(chosen_rewards - delta) - F.logsigmoid(-(rejected_rewards - delta))
        return LossOutput(
            losses=losses,
            chosen_rewards=chosen_rewards.detach(),
            rejected_rewards=rejected_rewards.detach(),
            metrics={"bco_pair/delta": delta},
        )
