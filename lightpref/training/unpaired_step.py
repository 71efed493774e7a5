"""The training step of an unpaired loss: one packed forward over the labelled completions (and, for a loss that
declares ``needs_mismatched``, their mismatched completions), the loss's records, and TRL's KTO metric names.

Each example's completion and its mismatched completion share the example's prompt (:class:`~lightpref.batch.
UnpairedBatch`), so the shared-prompt forward computes that prompt once for both.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lightpref.batch import UnpairedBatch
from lightpref.losses import LossOutput, PreferenceLoss
from lightpref.losses.base import check_output
from lightpref.losses.shapes import UnpairedLogProbs
from lightpref.training.forward import TokenLogProbs


def scored_rows(loss: PreferenceLoss, batch: UnpairedBatch) -> UnpairedBatch:
    """The rows a loss needs: every row, or without the mismatched ones when it needs no KL estimate."""
    return batch if getattr(loss, "needs_mismatched", False) else batch.completions_only()


def unpaired_record(tokens: TokenLogProbs, batch: UnpairedBatch, length_normalized: bool,
                    mismatched: bool) -> UnpairedLogProbs:
    """The (B,) record of an (N, T) result of ``batch``'s rows (the mismatched ones too when ``mismatched``)."""
    lengths = tokens.mask.sum(-1)  # (N,)
    sums = (tokens.logps * tokens.mask).sum(-1)  # (N,)
    if length_normalized:
        sums = sums / lengths.clamp(min=1)
    own = batch.rows_at(0)
    return UnpairedLogProbs(logps=sums[own], labels=batch.labels(), lengths=lengths[own],
                            mismatched=sums[batch.rows_at(1)] if mismatched else None)


def unpaired_metrics(output: LossOutput, policy: TokenLogProbs, batch: UnpairedBatch,
                     vocab: int | None) -> dict[str, Tensor]:
    """Per-example values (or batch scalars) to average, under TRL's KTO names: ``rewards/chosen`` and
    ``logps/chosen`` over the desirable examples, ``*/rejected`` over the undesirable ones, ``rewards/margins`` (the
    difference of the two mean rewards, when the batch has both), ``logits/*`` (mean logit over completion tokens and
    vocabulary), and the loss's own metrics (``kl`` for KTO). Every key is present on every batch, empty when the batch
    has no example of that label: under DDP/FSDP the metrics are reduced across processes at every step, so all
    processes must log the same names (a name whose examples no process has logs NaN for that step)."""
    own = batch.rows_at(0)
    labels = batch.labels()
    logps = (policy.logps * policy.mask).sum(-1)[own].detach()  # (B,) summed, whatever the loss uses
    rewards = output.chosen_rewards
    metrics = {"loss": output.losses.detach(), **{name: value.detach() for name, value in output.metrics.items()}}
    for name, selected in (("chosen", labels), ("rejected", ~labels)):  # every key on every batch: see above
        metrics[f"rewards/{name}"] = rewards[selected]
        metrics[f"logps/{name}"] = logps[selected]
        if vocab:
            tokens = policy.mask[own][selected].sum()
            logits = policy.logits_sum[own][selected].sum() / (tokens * vocab).clamp(min=1)
            metrics[f"logits/{name}"] = logits.reshape(1)[: int(bool(selected.any()))]
    both = bool(labels.any() and (~labels).any())
    margin = rewards[labels].mean() - rewards[~labels].mean() if both else rewards.new_zeros(())
    metrics["rewards/margins"] = margin.reshape(1)[: int(both)]
    return metrics


def unpaired_step(loss: PreferenceLoss, score_policy: Callable[[UnpairedBatch], TokenLogProbs],
                  score_reference: Callable[[UnpairedBatch], TokenLogProbs] | None, batch: UnpairedBatch,
                  vocab: int | None) -> tuple[dict[str, Tensor], Tensor]:
    """Metrics and loss of one batch of labelled completions."""
    rows = scored_rows(loss, batch)
    mismatched, mean = getattr(loss, "needs_mismatched", False), loss.length_normalized
    policy_tokens = score_policy(rows)
    policy = unpaired_record(policy_tokens, rows, mean, mismatched)
    reference = None
    if score_reference is not None:
        reference = unpaired_record(score_reference(rows), rows, mean, mismatched)
    with torch.autocast(policy_tokens.logps.device.type, enabled=False):  # loss math in float32 (mixed precision)
        output = check_output(loss, loss(policy, reference), len(policy.logps))
    return unpaired_metrics(output, policy_tokens, rows, vocab), output.losses.mean()
