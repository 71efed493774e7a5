"""From one forward's per-row log-probs to the records a loss consumes: pairs picked out of groups, or groups.

The models score every row of a batch once (:class:`~lightpref.training.packing.Scorer`); these functions only index and
reduce the result, so the pairs formed inside a group share its forward and its gradient flows back through it.

>>> groups, scores = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([1.0, 3.0, 2.0, 0.0, 5.0])
>>> position, size = group_positions(groups)
>>> position.tolist(), size
([0, 1, 2, 0, 1], 3)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import torch
from torch import Tensor

from lightpref.batch import GroupBatch, Sequences, split_pairs
from lightpref.losses import LogProbs, PreferenceLoss
from lightpref.losses.shapes import RankedLogProbs
from lightpref.training.forward import TokenLogProbs


def batch_groups(batch: Sequences) -> tuple[Tensor, Tensor]:
    """(N,) each row's group and (N,) its score: a group batch's own; a pair batch's pairs, chosen scored 1 and
    rejected 0."""
    if isinstance(batch, GroupBatch):
        return batch.group_ids, batch.scores
    pairs = batch.num_pairs
    scores = torch.cat([torch.ones(pairs), torch.zeros(pairs)]).to(batch.input_ids.device)
    return batch.row_groups(), scores


def group_positions(group_ids: Tensor) -> tuple[Tensor, int]:
    """(N,) each row's position within its group (rows in order), and K, the size of the largest group."""
    order = torch.argsort(group_ids, stable=True)
    size = torch.bincount(group_ids)  # (G,)
    start = torch.cumsum(size, 0) - size
    position = torch.empty_like(order)
    position[order] = torch.arange(len(order), device=order.device) - start[group_ids[order]]
    return position, int(size.max())


def pair_rows(tokens: TokenLogProbs, better: Tensor, worse: Tensor) -> TokenLogProbs:
    """The (2P, T) pair layout of rows of a result: rows ``better`` (P,), then rows ``worse`` (P,)."""
    rows = torch.cat([better, worse])

    def pick(values: Tensor | None) -> Tensor | None:
        return None if values is None else values[rows]

    return TokenLogProbs(logps=tokens.logps[rows], mask=tokens.mask[rows], logits_sum=tokens.logits_sum[rows],
                         log_collision=pick(tokens.log_collision))


def ranked_record(tokens: TokenLogProbs, group_ids: Tensor, scores: Tensor,
                  length_normalized: bool = False) -> RankedLogProbs:
    """The (G, K) record of an (N, T) result whose rows are grouped by ``group_ids`` and rated by ``scores``."""
    mask = tokens.mask
    sums = (tokens.logps * mask).sum(-1)  # (N,)
    lengths = mask.sum(-1)  # (N,)
    if length_normalized:
        sums = sums / lengths.clamp(min=1)
    position, width = group_positions(group_ids)
    groups = int(group_ids.max()) + 1

    def place(values: Tensor, fill: float | bool) -> Tensor:
        out = torch.full((groups, width), fill, dtype=values.dtype, device=values.device)
        out[group_ids, position] = values
        return out  # (G, K)

    return RankedLogProbs(logps=place(sums, 0.0), scores=place(scores.to(torch.float32), 0.0),
                          mask=place(torch.ones_like(lengths, dtype=torch.bool), False), lengths=place(lengths, 0))


def best_and_worst_rows(group_ids: Tensor, record: RankedLogProbs) -> tuple[Tensor, Tensor]:
    """(G,) the row of each group's best and of its worst completion (for the pair metrics of a ranked loss)."""
    position, width = group_positions(group_ids)
    row_at = torch.full(record.mask.shape, -1, dtype=torch.long, device=group_ids.device)
    row_at[group_ids, position] = torch.arange(len(group_ids), device=group_ids.device)
    return record.at(row_at, record.best()), record.at(row_at, record.worst())


def pair_record(tokens: TokenLogProbs, loss: PreferenceLoss,
                views: Mapping[str, TokenLogProbs] | None = None) -> LogProbs:
    """Split a (2B, T) result (chosen rows, then rejected rows) into the loss's per-pair record, holding exactly what
    ``loss`` declared: per-token log-probs only when it needs them, the collision log-probs when computed, and the
    same record of each extra prompt view."""
    (chosen, rejected), (chosen_mask, rejected_mask) = split_pairs(tokens.logps), split_pairs(tokens.mask)
    record = LogProbs.from_tokens(chosen, rejected, chosen_mask, rejected_mask,
                                  length_normalized=loss.length_normalized)
    if not loss.needs_token_logps:
        record = replace(record, chosen_tokens=None, rejected_tokens=None, chosen_mask=None, rejected_mask=None)
    if tokens.log_collision is not None:
        chosen_collision, rejected_collision = split_pairs(tokens.log_collision)
        record = replace(record, chosen_log_collision=chosen_collision, rejected_log_collision=rejected_collision)
    return replace(record, views={name: pair_record(view, loss) for name, view in (views or {}).items()})
