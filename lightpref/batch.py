"""The batches every part of lightpref passes around: token rows grouped by the prompt they share.

A :class:`PairBatch` holds B preference pairs as 2B right-padded rows: rows ``0..B-1`` each pair's prompt + chosen
completion, rows ``B..2B-1`` the same prompts + rejected completions. That convention lives here only:
:meth:`Sequences.chosen` and :meth:`Sequences.rejected` (or :func:`split_pairs` for any per-row result, such as
per-token log-probs) are how the rest of the code reads a half. A :class:`GroupBatch` holds G ranked groups, each a
prompt with K ≥ 2 scored completions, as ΣK rows group after group; :meth:`Sequences.row_groups` gives any batch's
row → group map, which is all the shared-prompt forward needs.

>>> import torch
>>> ids = torch.tensor([[5, 6, 7], [5, 6, 8]])
>>> batch = PairBatch(ids, torch.ones_like(ids), torch.tensor([[0, 0, 1], [0, 0, 1]]).bool(), split="val")
>>> batch.num_pairs, batch.chosen(batch.input_ids).tolist(), batch.rejected(batch.input_ids).tolist()
(1, [[5, 6, 7]], [[5, 6, 8]])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor

MAIN = ""  # the plain prompt's name among a batch's prompt views
PAIRS, RANKED = "pairs", "ranked"  # the shapes of data: PairBatch, GroupBatch (and of the records losses consume)
UNPAIRED = "unpaired"  # single completions labelled desirable or not: UnpairedBatch
RECORD_NAMES = {PAIRS: "pairs", RANKED: "ranked groups", UNPAIRED: "unpaired examples"}  # their names in messages


def split_pairs(rows: Tensor) -> tuple[Tensor, Tensor]:
    """The chosen and rejected halves of a per-row tensor (2B, ...) of a pair batch: ((B, ...), (B, ...))."""
    pairs = rows.shape[0] // 2
    return rows[:pairs], rows[pairs:]


def pair_groups(rows: int, device: torch.device | None = None) -> Tensor:
    """The group of each row of a (2B, T) pair batch: row n and row n + B share pair n's prompt.

    >>> pair_groups(4).tolist()
    [0, 1, 0, 1]
    """
    return torch.arange(rows, device=device) % max(rows // 2, 1)


@dataclass
class Sequences:
    """Right-padded token rows with the mask of the completion tokens whose log-probs are wanted.

    Indexing by field name (``sequences["input_ids"]``) reads the same tensors, for code written against the
    dictionary layout.
    """

    input_ids: Tensor  # (N, T) right-padded with the pad token
    attention_mask: Tensor  # (N, T) 1 on real tokens
    completion_mask: Tensor  # (N, T) bool, True exactly on completion tokens

    @property
    def num_pairs(self) -> int:
        """B, when the rows are pairs (chosen rows, then rejected rows)."""
        return self.input_ids.shape[0] // 2

    def chosen(self, rows: Tensor) -> Tensor:
        """The chosen half (B, ...) of a per-row tensor (2B, ...) of these sequences."""
        return split_pairs(rows)[0]

    def rejected(self, rows: Tensor) -> Tensor:
        """The rejected half (B, ...) of a per-row tensor (2B, ...) of these sequences."""
        return split_pairs(rows)[1]

    def row_groups(self) -> Tensor:
        """(N,) the group of rows sharing a prompt that each row belongs to: here pairs (see :func:`pair_groups`)."""
        return pair_groups(self.input_ids.shape[0], self.input_ids.device)

    def __getitem__(self, name: str) -> Any:
        if name not in {item.name for item in fields(self)}:
            raise KeyError(name)
        return getattr(self, name)


@dataclass
class PairBatch(Sequences):
    """B pairs: the main rows (2B, T), the same completions under each prompt view, and where the pairs come from.

    ``index`` (B,) holds each pair's position in its ``split`` (``"train"`` or ``"val"``); precomputed reference
    log-probs are looked up by both. Batches built by hand may leave them out.
    """

    views: dict[str, Sequences] = field(default_factory=dict)  # name -> (2B, T_view) rows with that view's prompt
    index: Tensor | None = None  # (B,)
    split: str | None = None
    margin: Tensor | None = None  # (B,) float: the pairs' margins from the data (0 where a pair gives none)

    def view(self, name: str) -> Sequences:
        """The rows of one prompt view (:data:`MAIN` is the plain prompt)."""
        return self if name == MAIN else self.views[name]

    @classmethod
    def of(cls, batch: PairBatch | Mapping[str, Any], split: str | None = None) -> PairBatch:
        """``batch`` as a :class:`PairBatch`: itself, or built from a mapping with the same keys (``split`` fills a
        missing one)."""
        if isinstance(batch, PairBatch):
            return batch if batch.split is not None or split is None else replace(batch, split=split)
        if not isinstance(batch, Mapping):
            raise TypeError(f"expected a PairBatch or a mapping of tensors, got {type(batch).__name__}")
        views = {name: value if isinstance(value, Sequences) else Sequences(
            value["input_ids"], value["attention_mask"], value["completion_mask"].bool()
        ) for name, value in batch.get("views", {}).items()}
        return cls(batch["input_ids"], batch["attention_mask"], batch["completion_mask"].bool(), views,
                   batch.get("index"), batch.get("split", split), batch.get("margin"))


@dataclass
class GroupBatch(Sequences):
    """G ranked groups: group g's prompt with each of its K_g ≥ 2 completions, ΣK_g rows in all, group after group.

    ``group_ids`` (N,) numbers each row's group 0..G-1 (non-decreasing); ``scores`` (N,) rates each completion,
    higher is better, ties allowed. ``index`` (G,) and ``split`` say where the groups come from, as for pairs.

    >>> ids = torch.tensor([[5, 7], [5, 8], [5, 9]])
    >>> batch = GroupBatch(ids, torch.ones_like(ids), ids > 5, torch.tensor([0, 0, 0]), torch.tensor([1.0, 3, 2]))
    >>> batch.num_groups, batch.row_groups().tolist()
    (1, [0, 0, 0])
    """

    group_ids: Tensor  # (N,)
    scores: Tensor  # (N,) float
    index: Tensor | None = None  # (G,)
    split: str | None = None
    views: dict[str, Sequences] = field(default_factory=dict)  # prompt views are not tokenised for groups

    @property
    def num_groups(self) -> int:
        """G."""
        return int(self.group_ids[-1]) + 1 if self.group_ids.numel() else 0

    def row_groups(self) -> Tensor:
        return self.group_ids

    def view(self, name: str) -> Sequences:
        """The rows of one prompt view: ranked groups have only the plain prompt (:data:`MAIN`)."""
        if name != MAIN:
            raise KeyError(f"ranked groups are tokenised without prompt views, so there is no view {name!r}")
        return self


@dataclass
class UnpairedBatch(GroupBatch):
    """B labelled completions, each a group of two rows sharing its prompt: the completion itself (position 0), then
    a mismatched completion (position 1: another example's, see :mod:`lightpref.data.unpaired`) whose log-ratio
    estimates the KL term of KTO. ``scores`` (N,) repeat each example's label (1.0 desirable, 0.0 undesirable) on
    both rows; a batch holding only the completions (:meth:`completions_only`) has one row per group.

    >>> ids = torch.tensor([[5, 7], [5, 8], [4, 8], [4, 7]])
    >>> batch = UnpairedBatch(ids, torch.ones_like(ids), ids > 5, torch.tensor([0, 0, 1, 1]),
    ...                       torch.tensor([1.0, 1.0, 0.0, 0.0]))
    >>> batch.labels().tolist(), batch.completions_only().input_ids.tolist()
    ([True, False], [[5, 7], [4, 8]])
    """

    def rows_at(self, position: int) -> Tensor:
        """(B,) the row of each example's completion (``position`` 0) or of its mismatched completion (1)."""
        first = torch.ones_like(self.group_ids, dtype=torch.bool)
        first[1:] = self.group_ids[1:] != self.group_ids[:-1]
        starts = first.nonzero().squeeze(-1)
        return starts + position

    def labels(self) -> Tensor:
        """(B,) bool, True on desirable completions."""
        return self.scores[self.rows_at(0)] > 0.5

    def completions_only(self) -> UnpairedBatch:
        """The batch without its mismatched rows (for losses that need no KL estimate)."""
        rows = self.rows_at(0)
        return UnpairedBatch(self.input_ids[rows], self.attention_mask[rows], self.completion_mask[rows],
                             self.group_ids[rows], self.scores[rows], self.index, self.split)
