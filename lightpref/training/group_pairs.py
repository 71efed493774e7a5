"""Which pairs a pairwise loss trains on inside each ranked group (``model.group_pairs``).

A rule maps a :class:`~lightpref.batch.GroupBatch`'s rows (their groups and scores) to ordered pairs of rows
``(better, worse)``, group after group. All the pairs of a group share the group's one forward: the loss sees P
pairs, the models ran each prompt and each completion once. With K = 2 every rule gives the group's one pair, so
training is exactly pair training.

>>> groups, scores = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([1.0, 3.0, 2.0, 0.0, 5.0])
>>> [rows.tolist() for rows in AllPairs()(groups, scores)]
[[1, 1, 2, 4], [0, 2, 0, 3]]
>>> [rows.tolist() for rows in BestVsRest()(groups, scores)], [rows.tolist() for rows in BestVsWorst()(groups, scores)]
([[1, 1, 4], [0, 2, 3]], [[1, 4], [0, 3]])
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class GroupPairs:
    """Base class: ``rule(group_ids, scores)`` gives the (P,) better rows and the (P,) worse rows of the pairs to
    train on, ordered by better row, then worse row. Subclass it for a rule of your own."""

    def __call__(self, group_ids: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
        keep = self.keep(group_ids, scores)  # (N, N): keep[i, j] pairs row i above row j
        better, worse = keep.nonzero(as_tuple=True)
        return better, worse

    def keep(self, group_ids: Tensor, scores: Tensor) -> Tensor:
        """(N, N) bool: True where row i is paired above row j."""
        raise NotImplementedError

    def __repr__(self) -> str:
        settings = ", ".join(f"{key}={value!r}" for key, value in sorted(vars(self).items()))
        return f"{type(self).__name__}({settings})"


def _gaps(group_ids: Tensor, scores: Tensor) -> Tensor:
    """(N, N) score of row i minus score of row j within a group, NaN across groups."""
    same = group_ids[:, None] == group_ids[None, :]
    return torch.where(same, scores[:, None] - scores[None, :], torch.nan)


class AllPairs(GroupPairs):
    """Every ordered pair whose score gap is at least ``min_gap`` (``None``: every pair with different scores).

    Args:
        min_gap: the smallest score difference that makes a pair, > 0.
    """

    def __init__(self, min_gap: float | None = None) -> None:
        if min_gap is not None and not (isinstance(min_gap, (int, float)) and 0 < min_gap < math.inf):
            raise ValueError(f"`min_gap` must be a positive number or null (every pair with different scores), "
                             f"got {min_gap!r}")
        self.min_gap = min_gap

    def keep(self, group_ids: Tensor, scores: Tensor) -> Tensor:
        gaps = _gaps(group_ids, scores)
        return gaps >= self.min_gap if self.min_gap is not None else gaps > 0


def _extreme(group_ids: Tensor, scores: Tensor, best: bool) -> Tensor:
    """(N,) bool: the first row of each group with its highest (``best``) or lowest score."""
    groups = int(group_ids.max()) + 1
    target = torch.full((groups,), -math.inf if best else math.inf, dtype=scores.dtype, device=scores.device)
    target = target.scatter_reduce(0, group_ids, scores, "amax" if best else "amin")
    hits = scores == target[group_ids]
    rows = torch.arange(len(scores), device=scores.device)
    first = torch.full((groups,), len(scores), device=scores.device).scatter_reduce(
        0, group_ids[hits], rows[hits], "amin")
    return rows == first[group_ids]


class BestVsRest(GroupPairs):
    """Each group's best completion (the first, among ties) against every completion scored below it."""

    def keep(self, group_ids: Tensor, scores: Tensor) -> Tensor:
        return _extreme(group_ids, scores, best=True)[:, None] & (_gaps(group_ids, scores) > 0)


class BestVsWorst(GroupPairs):
    """Each group's best completion against its worst (the first of each, among ties): one pair per group."""

    def keep(self, group_ids: Tensor, scores: Tensor) -> Tensor:
        extremes = _extreme(group_ids, scores, best=True)[:, None] & _extreme(group_ids, scores, best=False)[None, :]
        return extremes & (_gaps(group_ids, scores) > 0)
