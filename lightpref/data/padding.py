"""(prompt, completion) token rows padded into one right-padded batch with the mask of the completion tokens.

The one padding step every collate shares: pairs (:mod:`lightpref.data.collate`), ranked groups
(:mod:`lightpref.data.groups`), labelled completions (:mod:`lightpref.data.unpaired`) and generated samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lightpref.batch import Sequences


def pad_rows(
    rows: Sequence[tuple[list[int], list[int]]], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> Sequences:
    """(prompt, completion) token rows as right-padded :class:`Sequences` with the mask of the completion tokens.

    >>> pad_rows([([5, 6], [8, 3]), ([7], [3])], pad_token_id=0).input_ids.tolist()
    [[5, 6, 8, 3], [7, 3, 0, 0]]
    """
    length = max(len(prompt) + len(completion) for prompt, completion in rows)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(rows), length), pad_token_id, dtype=torch.long)  # (N, T)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)  # (N, T)
    completion_mask = torch.zeros((len(rows), length), dtype=torch.bool)  # (N, T)
    for row, (prompt, completion) in enumerate(rows):
        end = len(prompt) + len(completion)
        input_ids[row, :end] = torch.tensor(list(prompt) + list(completion), dtype=torch.long)
        attention_mask[row, :end] = 1
        completion_mask[row, len(prompt) : end] = True
    return Sequences(input_ids, attention_mask, completion_mask)
