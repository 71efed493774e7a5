"""Collate tokenised pairs into the batch the module consumes, and store pairs as Arrow rows.

A batch of B pairs is a :class:`lightpref.batch.PairBatch`: ``input_ids`` (2B, T) with rows 0..B-1 prompt + chosen
and rows B..2B-1 prompt + rejected, right-padded with the pad token; ``attention_mask`` (2B, T), 1 on real tokens;
``completion_mask`` (2B, T), True exactly on completion tokens; ``views``, the same layout with each prompt view's
prompt (only when the pairs have views); ``margin`` (B,) when some pair's record gives one; ``index`` and ``split``
when the rows say where they come from.

>>> pair = TokenizedPair(prompt_ids=[5, 6], chosen_ids=[7, 3], rejected_ids=[3])
>>> batch = collate_pairs([pair], pad_token_id=0)
>>> batch.input_ids.tolist(), batch.completion_mask.long().tolist()
([[5, 6, 7, 3], [5, 6, 3, 0]], [[0, 0, 1, 1], [0, 0, 1, 0]])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lightpref.batch import GroupBatch, PairBatch, Sequences
from lightpref.data.padding import pad_rows
from lightpref.data.tokenize import TokenizedPair

__all__ = [  # pad_rows lives in lightpref.data.padding; it keeps working from here
    "MARGIN_COLUMN", "VIEW_COLUMN", "collate_pairs", "collate_rows", "pad_rows", "pair_from_row", "pair_margins",
    "pair_sequences", "pair_to_row",
]

VIEW_COLUMN = "view_prompt_ids/"
MARGIN_COLUMN = "margin"  # a pair's margin, when its record gives one (null otherwise)


def collate_pairs(
    pairs: Sequence[TokenizedPair], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> PairBatch:
    """The batch of ``pairs`` (see the module docstring); T is the longest row, rounded up to ``pad_to_multiple_of``."""
    if not pairs:
        raise ValueError("cannot collate an empty list of pairs")
    view_names = sorted(pairs[0].view_prompt_ids)
    for pair in pairs:
        if sorted(pair.view_prompt_ids) != view_names:
            raise ValueError(
                f"all pairs of a batch must have the same views, got {view_names} and {sorted(pair.view_prompt_ids)}"
            )
    main = pair_sequences([pair.prompt_ids for pair in pairs], pairs, pad_token_id, pad_to_multiple_of)
    views = {
        name: pair_sequences([pair.view_prompt_ids[name] for pair in pairs], pairs, pad_token_id, pad_to_multiple_of)
        for name in view_names
    }
    return PairBatch(main.input_ids, main.attention_mask, main.completion_mask, views, margin=pair_margins(pairs))


def pair_margins(pairs: Sequence[TokenizedPair]) -> torch.Tensor | None:
    """(B,) float32 the pairs' margins, 0 for a pair without one; ``None`` when no pair has one.

    >>> pair_margins([TokenizedPair([1], [2], [3], margin=1.5), TokenizedPair([1], [2], [4])]).tolist()
    [1.5, 0.0]
    """
    if all(pair.margin is None for pair in pairs):
        return None
    return torch.tensor([pair.margin or 0.0 for pair in pairs], dtype=torch.float32)


def pair_sequences(
    prompts: Sequence[list[int]],
    pairs: Sequence[TokenizedPair],
    pad_token_id: int,
    pad_to_multiple_of: int | None = None,
) -> Sequences:
    """Each prompt followed by its pair's chosen completion, then each prompt followed by its pair's rejected one."""
    chosen = [(prompt, pair.chosen_ids) for prompt, pair in zip(prompts, pairs, strict=True)]
    rejected = [(prompt, pair.rejected_ids) for prompt, pair in zip(prompts, pairs, strict=True)]
    return pad_rows(chosen + rejected, pad_token_id, pad_to_multiple_of)


def pair_to_row(pair: TokenizedPair) -> dict[str, list[int]]:
    """A pair as a flat row for an Arrow dataset; each view's prompt is a column ``view_prompt_ids/<name>``.

    >>> pair_to_row(TokenizedPair([1], [2], [3], {"kind": [4, 1]}))
    {'prompt_ids': [1], 'chosen_ids': [2], 'rejected_ids': [3], 'view_prompt_ids/kind': [4, 1]}
    """
    row = {"prompt_ids": pair.prompt_ids, "chosen_ids": pair.chosen_ids, "rejected_ids": pair.rejected_ids}
    row.update({VIEW_COLUMN + name: ids for name, ids in pair.view_prompt_ids.items()})
    if pair.margin is not None:
        row[MARGIN_COLUMN] = pair.margin
    return row


def pair_from_row(row: dict[str, Any]) -> TokenizedPair:
    """The pair stored by :func:`pair_to_row`.

    >>> pair_from_row({"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3], "view_prompt_ids/kind": [4, 1]})
    TokenizedPair(prompt_ids=[1], chosen_ids=[2], rejected_ids=[3], view_prompt_ids={'kind': [4, 1]})
    """
    views = {key[len(VIEW_COLUMN) :]: list(ids) for key, ids in row.items() if key.startswith(VIEW_COLUMN)}
    margin = row.get(MARGIN_COLUMN)
    return TokenizedPair(list(row["prompt_ids"]), list(row["chosen_ids"]), list(row["rejected_ids"]), views,
                         None if margin is None else float(margin))


def collate_rows(
    rows: Sequence[dict[str, Any]], pad_token_id: int, pad_to_multiple_of: int | None = None,
    split: str | None = None,
) -> PairBatch | GroupBatch:
    """:func:`collate_pairs` of stored rows, or :func:`~lightpref.data.groups.collate_groups` of stored ranked
    groups: the DataLoader's ``collate_fn``.

    Rows that carry their position in the split (``"index"``) give the batch an ``index`` (B,) tensor, by which
    precomputed reference log-probs are looked up, together with the batch's ``split``.
    """
    batch: PairBatch | GroupBatch
    if rows and "label" in rows[0]:  # labelled single completions (lightpref.data.unpaired)
        from lightpref.data.unpaired import collate_unpaired

        batch = collate_unpaired(rows, pad_token_id, pad_to_multiple_of)
    elif rows and "completion_ids" in rows[0]:  # ranked groups (lightpref.data.groups)
        from lightpref.data.groups import collate_groups, group_from_row

        batch = collate_groups([group_from_row(row) for row in rows], pad_token_id, pad_to_multiple_of)
    else:
        batch = collate_pairs([pair_from_row(row) for row in rows], pad_token_id, pad_to_multiple_of)
    if rows and "index" in rows[0]:
        batch.index = torch.tensor([row["index"] for row in rows], dtype=torch.long)  # (B,) or (G,)
    batch.split = split
    return batch
