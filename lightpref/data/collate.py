"""Collate tokenised pairs into the batch the module consumes, and store pairs as Arrow rows.

The batch of B pairs (the module depends on exactly this layout)::

    {
        "input_ids":       LongTensor (2B, T)  rows 0..B-1 prompt + chosen, rows B..2B-1 prompt + rejected,
                                               right-padded with the pad token
        "attention_mask":  LongTensor (2B, T)  1 on real tokens
        "completion_mask": BoolTensor (2B, T)  True exactly on completion tokens
        "views": {name: {"input_ids", "attention_mask", "completion_mask"}}  # the same layout with each view's
                                               # prompt; present only when the pairs have views
    }

>>> pair = TokenizedPair(prompt_ids=[5, 6], chosen_ids=[7, 3], rejected_ids=[3])
>>> batch = collate_pairs([pair], pad_token_id=0)
>>> batch["input_ids"].tolist(), batch["completion_mask"].long().tolist()
([[5, 6, 7, 3], [5, 6, 3, 0]], [[0, 0, 1, 1], [0, 0, 1, 0]])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lightpref.data.tokenize import TokenizedPair

VIEW_COLUMN = "view_prompt_ids/"


def collate_pairs(
    pairs: Sequence[TokenizedPair], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, Any]:
    """The batch of ``pairs`` (see the module docstring); T is the longest row, rounded up to ``pad_to_multiple_of``."""
    if not pairs:
        raise ValueError("cannot collate an empty list of pairs")
    view_names = sorted(pairs[0].view_prompt_ids)
    for pair in pairs:
        if sorted(pair.view_prompt_ids) != view_names:
            raise ValueError(
                f"all pairs of a batch must have the same views, got {view_names} and {sorted(pair.view_prompt_ids)}"
            )
    batch = pad_rows([pair.prompt_ids for pair in pairs], pairs, pad_token_id, pad_to_multiple_of)
    if view_names:
        batch["views"] = {
            name: pad_rows([pair.view_prompt_ids[name] for pair in pairs], pairs, pad_token_id, pad_to_multiple_of)
            for name in view_names
        }
    return batch


def pad_rows(
    prompts: Sequence[list[int]],
    pairs: Sequence[TokenizedPair],
    pad_token_id: int,
    pad_to_multiple_of: int | None = None,
) -> dict[str, Tensor]:
    """``input_ids``/``attention_mask``/``completion_mask`` of each prompt followed by its pair's chosen, then
    each prompt followed by its pair's rejected completion, right-padded."""
    rows = [(prompt, pair.chosen_ids) for prompt, pair in zip(prompts, pairs, strict=True)]
    rows += [(prompt, pair.rejected_ids) for prompt, pair in zip(prompts, pairs, strict=True)]
    length = max(len(prompt) + len(completion) for prompt, completion in rows)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(rows), length), pad_token_id, dtype=torch.long)  # (2B, T)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)  # (2B, T)
    completion_mask = torch.zeros((len(rows), length), dtype=torch.bool)  # (2B, T)
    for row, (prompt, completion) in enumerate(rows):
        end = len(prompt) + len(completion)
        input_ids[row, :end] = torch.tensor(prompt + completion, dtype=torch.long)
        attention_mask[row, :end] = 1
        completion_mask[row, len(prompt) : end] = True
    return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}


def pair_to_row(pair: TokenizedPair) -> dict[str, list[int]]:
    """A pair as a flat row for an Arrow dataset; each view's prompt is a column ``view_prompt_ids/<name>``.

    >>> pair_to_row(TokenizedPair([1], [2], [3], {"kind": [4, 1]}))
    {'prompt_ids': [1], 'chosen_ids': [2], 'rejected_ids': [3], 'view_prompt_ids/kind': [4, 1]}
    """
    row = {"prompt_ids": pair.prompt_ids, "chosen_ids": pair.chosen_ids, "rejected_ids": pair.rejected_ids}
    row.update({VIEW_COLUMN + name: ids for name, ids in pair.view_prompt_ids.items()})
    return row


def pair_from_row(row: dict[str, Any]) -> TokenizedPair:
    """The pair stored by :func:`pair_to_row`.

    >>> pair_from_row({"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3], "view_prompt_ids/kind": [4, 1]})
    TokenizedPair(prompt_ids=[1], chosen_ids=[2], rejected_ids=[3], view_prompt_ids={'kind': [4, 1]})
    """
    views = {key[len(VIEW_COLUMN) :]: list(ids) for key, ids in row.items() if key.startswith(VIEW_COLUMN)}
    return TokenizedPair(list(row["prompt_ids"]), list(row["chosen_ids"]), list(row["rejected_ids"]), views)


def collate_rows(
    rows: Sequence[dict[str, Any]], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, Any]:
    """:func:`collate_pairs` of stored rows: the DataLoader's ``collate_fn``.

    Rows that carry their position in the split (``"index"``) give the batch an ``"index"`` (B,) tensor, by which
    precomputed reference log-probs are looked up.
    """
    batch = collate_pairs([pair_from_row(row) for row in rows], pad_token_id, pad_to_multiple_of)
    if rows and "index" in rows[0]:
        batch["index"] = torch.tensor([row["index"] for row in rows], dtype=torch.long)  # (B,)
    return batch
