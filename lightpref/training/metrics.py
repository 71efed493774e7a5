"""The metrics of a batch, under the names users know from other trainers, and their logging via torchmetrics."""

from __future__ import annotations

from collections.abc import Mapping

from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lightpref.batch import split_pairs
from lightpref.losses import LogProbs, LossOutput
from lightpref.training.forward import TokenLogProbs


def batch_metrics(output: LossOutput, policy_tokens: TokenLogProbs, vocab: int | None) -> dict[str, Tensor]:
    """Per-pair values (or batch scalars) to average: losses, implicit rewards, summed log-probs, mean logits.

    ``logits/*`` is the mean raw logit over completion tokens and vocabulary (needs the vocabulary size).
    """
    (chosen, rejected), (chosen_mask, rejected_mask) = split_pairs(policy_tokens.logps), split_pairs(policy_tokens.mask)
    sums = LogProbs.from_tokens(chosen, rejected, chosen_mask, rejected_mask)
    metrics = {
        "loss": output.losses.detach(),
        "rewards/chosen": output.chosen_rewards,
        "rewards/rejected": output.rejected_rewards,
        "rewards/accuracies": (output.chosen_rewards > output.rejected_rewards).float(),
        "rewards/margins": output.chosen_rewards - output.rejected_rewards,
        "logps/chosen": sums.chosen.detach(),
        "logps/rejected": sums.rejected.detach(),
        **{name: value.detach() for name, value in output.metrics.items()},
    }
    if vocab:
        chosen_logits, rejected_logits = split_pairs(policy_tokens.logits_sum)
        for name, logits, tokens in (("chosen", chosen_logits, sums.chosen_lengths),
                                     ("rejected", rejected_logits, sums.rejected_lengths)):
            metrics[f"logits/{name}"] = logits.sum() / (tokens.sum() * vocab).clamp(min=1)
    return metrics


def log_metrics(module: LightningModule, store: nn.ModuleDict, attribute: str, stage: str,
                metrics: Mapping[str, Tensor], pairs: int) -> None:
    """Average each metric with a torchmetrics ``MeanMetric`` (reduced across processes) and log it: per step in
    training under its own name, per epoch otherwise under ``<stage>/<name>``. ``store`` (found on the module at
    ``attribute``) keeps one metric per name, created on first use."""
    for name, value in metrics.items():
        key = name.replace(".", "_")
        if key not in store:
            store[key] = MeanMetric(dist_sync_on_step=stage == "train").to(module.device)
        metric = store[key]
        metric(value.float().reshape(-1))
        module.log(name if stage == "train" else f"{stage}/{name}", metric, on_step=stage == "train",
                   on_epoch=stage != "train", batch_size=pairs, prog_bar=name in ("loss", "rewards/accuracies"),
                   metric_attribute=f"{attribute}.{key}")
