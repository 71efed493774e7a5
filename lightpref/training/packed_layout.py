"""The packed layout of a batch: rows that share a prompt as one sequence, sequences packed into rows, and the
attention masks that keep every token's context that of its own row in the plain batch.

A pair ``prompt ∥ chosen ∥ rejected`` (a ranked group ``prompt ∥ c1 ∥ … ∥ cK``)::

    tokens     p0 p1 p2 | c0 c1 | r0 r1 r2
    positions   0  1  2 |  3  4 |  3  4  5     each completion continues from the prompt's end
    r0 sees    p0 p1 p2 |       | r0           the prompt and itself, never another completion

:mod:`lightpref.training.packing` runs the model over this layout.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lightpref.batch import pair_groups

if TYPE_CHECKING:
    from transformers import PreTrainedModel

PROMPT, CHOSEN, REJECTED, PADDING = 0, 1, 2, -1  # the branch of each packed token


@dataclass(frozen=True)
class PackedBatch:
    """An (N, T) batch of rows, grouped by the prompt they share, rearranged into R packed rows of length L.

    ``source[n, t]`` is the index into the flattened (R·L) packing of the token that stands for ``input_ids[n, t]``
    (a row's shared prompt tokens point at its group's first row's copy), -1 on padding.
    """

    input_ids: Tensor  # (R, L)
    position_ids: Tensor  # (R, L) each token's position in its own row of the plain batch
    segment_ids: Tensor  # (R, L) the sequence a token belongs to (tokens attend within it), -1 on padding
    branch: Tensor  # (R, L) PROMPT, or 1 + the row's rank in its group (CHOSEN, REJECTED, …), PADDING
    source: Tensor  # (N, T)


def pack_batch(
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    shared_prompt: bool = True,
    pack: bool = True,
    max_packed_length: int | None = None,
    groups: Tensor | None = None,
) -> PackedBatch:
    """Rearrange a right-padded (N, T) batch whose rows come in groups that share a prompt.

    ``groups`` (N,) gives each row's group, numbered 0..G-1 (``None``: a pair batch, see :func:`pair_groups`). With
    ``shared_prompt`` each group is one sequence ``prompt ∥ c1 ∥ … ∥ cK``: its prompt (the common prefix of its rows
    before any completion starts) stored once, then each row's own tokens in row order, positions continuing from
    the prompt; each completion attends to the prompt and to itself only. Without it each row is a sequence. With
    ``pack`` the sequences are packed, in order, into rows of at most ``max_packed_length`` tokens, filled evenly
    (``None``: all in one row); without it each sequence has its own row. Rows are right-padded to the longest.

    >>> ids = torch.tensor([[5, 6, 7, 0], [5, 6, 8, 9]])
    >>> packed = pack_batch(ids, (ids > 0).long(), torch.tensor([[0, 0, 1, 0], [0, 0, 1, 1]]).bool())
    >>> packed.input_ids.tolist(), packed.position_ids.tolist(), packed.branch.tolist()
    ([[5, 6, 7, 8, 9]], [[0, 1, 2, 2, 3]], [[0, 0, 1, 2, 2]])
    >>> ids = torch.tensor([[5, 6, 7], [5, 6, 8], [5, 6, 9]])  # one prompt, three completions
    >>> pack_batch(ids, torch.ones_like(ids), ids > 6, groups=torch.tensor([0, 0, 0])).branch.tolist()
    [[0, 0, 1, 2, 3]]
    """
    rows, width = input_ids.shape  # (N, T)
    device = input_ids.device
    attended = attention_mask.bool()
    positions = torch.arange(width, device=device)  # (T,)
    row_index = torch.arange(rows, device=device)  # (N,)
    if shared_prompt:
        group = pair_groups(rows, device) if groups is None else groups.to(device=device, dtype=torch.long)  # (N,)
        order = torch.argsort(group, stable=True)  # (N,) rows group by group, in row order within a group
        group_size = torch.bincount(group)  # (G,)
        group_start = torch.cumsum(group_size, 0) - group_size  # (G,) first position of each group in `order`
        rank = torch.empty_like(order)
        rank[order] = row_index - group_start[group[order]]  # (N,) each row's rank within its group
        leader = order[group_start][group]  # (N,) the first row of each row's group
        first = torch.where(completion_mask.any(1), completion_mask.int().argmax(1), attended.sum(1))  # (N,)
        same = (input_ids == input_ids[leader]) & attended & attended[leader]  # (N, T)
        own_shared = torch.minimum(first, same.int().cumprod(1).sum(1))  # (N,)
        shared = torch.full_like(group_size, width).scatter_reduce(0, group, own_shared, "amin")  # (G,)
        start = torch.where(rank == 0, 0, shared[group])  # (N,) each row's first token of its own
        segment = group
        row_branch = CHOSEN + rank  # (N,) CHOSEN, REJECTED, … in row order within a group
        is_prompt = positions[None] < shared[group][:, None]  # (N, T)
    else:
        start = torch.zeros(rows, dtype=torch.long, device=device)
        segment, order = row_index, row_index
        row_branch = torch.full((rows,), CHOSEN, device=device)
        is_prompt = torch.zeros_like(attended)
    own = attended & (positions[None] >= start[:, None])  # (N, T) the tokens each row places in the packing
    branch = torch.where(is_prompt, PROMPT, row_branch[:, None])  # (N, T)

    # global index of each own token, rows taken in `order` (a group's rows are adjacent), then per row
    in_order = torch.cumsum(own[order].flatten().long(), 0).view(rows, width) - 1  # (N, T)
    global_index = torch.empty_like(in_order)
    global_index[order] = in_order
    segments = int(segment.max()) + 1
    lengths = torch.zeros(segments, dtype=torch.long, device=device).index_add_(0, segment, own.sum(1))  # (S,)
    packed_row, row_offset = _assign_rows(lengths.tolist(), max_packed_length if pack else 0)
    packed_rows, length = packed_row[-1] + 1, max(o + n for o, n in zip(row_offset, lengths.tolist(), strict=True))
    first_index = torch.cumsum(lengths, 0) - lengths  # (S,) each segment's first global index
    shift = torch.tensor(packed_row, device=device) * length + torch.tensor(row_offset, device=device) - first_index
    flat_index = global_index + shift[segment][:, None]  # (N, T)

    def place(values: Tensor, fill: int) -> Tensor:
        flat = torch.full((packed_rows * length,), fill, dtype=torch.long, device=device)
        flat[flat_index[own]] = values[own].long()
        return flat.view(packed_rows, length)  # (R, L)

    source = torch.where(own, flat_index, -1)  # (N, T)
    if shared_prompt:  # a row's shared prompt tokens are its group leader's
        source = torch.where(is_prompt, source[leader], source)
    return PackedBatch(
        input_ids=place(input_ids, 0),
        position_ids=place(positions.expand(rows, width), 0),
        segment_ids=place(segment[:, None].expand(rows, width), -1),
        branch=place(branch, PADDING),
        source=source,
    )


def _assign_rows(lengths: list[int], max_length: int | None) -> tuple[list[int], list[int]]:
    """Each sequence's packed row and offset in it, sequences in order: as few rows of at most ``max_length`` tokens
    as taking sequences while they fit gives (``None``: one row; 0: a row each; a longer sequence has a row of its
    own), filled evenly: the longest row as short as that many rows allow, so that the rows' padding and their
    attention (quadratic in a row's length) are the least.

    >>> _assign_rows([3, 4, 2, 5], max_length=6)
    ([0, 1, 1, 2], [0, 0, 4, 0])
    >>> _assign_rows([2, 2, 2, 2, 2], max_length=8)  # two rows: 6 + 4 tokens, not 8 + 2
    ([0, 0, 0, 1, 1], [0, 2, 4, 0, 2])
    """
    if not max_length or len(lengths) < 2:
        return _fill_rows(lengths, max_length)
    count = _fill_rows(lengths, max_length)[0][-1] + 1
    low, high = min(max_length, -(-sum(lengths) // count)), max_length
    while low < high:  # the shortest limit that still needs no more than `count` rows
        middle = (low + high) // 2
        low, high = (low, middle) if _fill_rows(lengths, middle)[0][-1] < count else (middle + 1, high)
    return _fill_rows(lengths, low)


def _fill_rows(lengths: list[int], max_length: int | None) -> tuple[list[int], list[int]]:
    """Each sequence's row and offset, a row taking sequences in order while they fit in ``max_length`` tokens."""
    rows, offsets, row, used = [], [], 0, 0
    for length in lengths:
        if used and max_length is not None and used + length > max_length:
            row, used = row + 1, 0
        rows.append(row)
        offsets.append(used)
        used += length
    return rows, offsets


def attention_mask_4d(packed: PackedBatch) -> Tensor:
    """(R, 1, L, L) bool, True where a query may attend a key: causally within its sequence, and only to the prompt
    or to its own completion (a rejected token never sees the chosen one). Padding attends only to itself, so no
    row of the mask is empty."""
    segment, branch = packed.segment_ids, packed.branch  # (R, L)
    index = torch.arange(segment.shape[1], device=segment.device)  # (L,)
    allowed = (segment[:, :, None] == segment[:, None, :]) & (segment[:, :, None] >= 0)  # (R, L, L)
    allowed &= index[:, None] >= index[None, :]
    allowed &= (branch[:, None, :] == PROMPT) | (branch[:, None, :] == branch[:, :, None])
    allowed |= torch.eye(segment.shape[1], dtype=torch.bool, device=segment.device)
    return allowed[:, None]


def block_mask(packed: PackedBatch) -> object:
    """The same mask as :func:`attention_mask_4d` as a FlexAttention ``BlockMask`` (blocks with no allowed pair are
    skipped instead of computed)."""
    from torch.nn.attention.flex_attention import create_block_mask

    segment, branch = packed.segment_ids, packed.branch

    def mask_mod(b: Tensor, h: Tensor, q: Tensor, k: Tensor) -> Tensor:
        within = (segment[b, q] == segment[b, k]) & (segment[b, q] >= 0) & (q >= k)
        return (within & ((branch[b, k] == PROMPT) | (branch[b, k] == branch[b, q]))) | (q == k)

    rows, length = segment.shape
    return create_block_mask(mask_mod, rows, None, length, length, device=segment.device)


def auto_packed_length(model: PreTrainedModel) -> int:
    """The default longest packed row: 4 × the model's hidden size, at most 8192 tokens.

    A dense-masked row of L tokens costs O(L·d) attention per token (masked blocks are computed too), the rest of a
    layer O(d²): rows much longer than d spend more on attention than packing saves on padding, and the mask takes
    O(L²) memory. Measured on CPU (4 HH-RLHF pairs a batch): SmolLM2-135M (d = 576) is fastest with one ~1000-token
    row (2.1× the plain forward, 1.8× with a row per pair); the 32-wide test model is 0.6× with one 2500-token row
    but 1.16× with a row per pair.
    """
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return min(8192, 4 * int(getattr(config, "hidden_size", 2048)))


def unsupported_reason(model: PreTrainedModel, attention_mask: Tensor, completion_mask: Tensor) -> str | None:
    """Why a custom-mask or packed forward would not equal the plain forward here, or ``None``."""
    config = model.config
    window = getattr(config, "sliding_window", None)
    sliding = "sliding_attention" in (getattr(config, "layer_types", None) or []) or getattr(
        config, "use_sliding_window", True
    )
    if window and sliding and attention_mask.sum(1).max() > window:
        return f"{type(model).__name__} has sliding-window attention, which a custom attention mask would drop"
    decoder = model.get_decoder()
    if decoder is None or "position_ids" not in inspect.signature(decoder.forward).parameters:
        return f"{type(model).__name__}'s decoder takes no `position_ids`"
    lengths = attention_mask.sum(1, keepdim=True)  # (2B, 1)
    if not torch.equal(attention_mask.bool(), torch.arange(attention_mask.shape[1], device=lengths.device) < lengths):
        return "the batch is not right-padded (the plain forward's positions would differ)"
    if (completion_mask.bool() & ~attention_mask.bool()).any():
        return "`completion_mask` marks padding tokens"
    return None
