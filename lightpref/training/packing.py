"""Shared-prompt and padding-free forwards: the same per-token log-probs as the plain forward, from fewer tokens.

The rows of a batch come in groups that share a prompt (often most of the tokens): a pair's chosen and rejected
rows, or a ranked group's K completions (:meth:`~lightpref.batch.Sequences.row_groups`). The shared-prompt forward
runs each group as one sequence ``prompt ∥ c1 ∥ … ∥ cK`` (a pair: ``prompt ∥ chosen ∥ rejected``)::

    tokens     p0 p1 p2 | c0 c1 | r0 r1 r2
    positions   0  1  2 |  3  4 |  3  4  5     each completion continues from the prompt's end
    r0 sees    p0 p1 p2 |       | r0           the prompt and itself, never another completion

so every token sees exactly the context it has in its own row of the plain batch, at the same position: the hidden
states (and so log-probs and gradients) are those of the plain forward, with the prompt computed once. The first
completion token of each row is predicted from the hidden state of the last prompt position, shared by the group.

Padding-free packing concatenates the sequences of a batch into rows (one row, unless they are long for the model:
:func:`auto_packed_length`), positions restarting per sequence and attention block-diagonal, so no compute goes to
padding. Both need a custom 4D attention mask, which SDPA and eager attention accept as given (transformers returns
a user-supplied 4D mask unchanged); FlexAttention gets a ``BlockMask``. FlashAttention-2 takes no custom mask: it
packs without sharing the prompt (sequence boundaries from ``position_ids``). Anything else falls back to the plain
forward with a one-time warning naming the reason.

The layout itself (:func:`pack_batch`) and its masks are :mod:`lightpref.training.packed_layout`'s; this module runs
the model over it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedModel

from lightpref.batch import Sequences, UnpairedBatch
from lightpref.training.forward import TokenLogProbs, completion_logprobs, scatter_completion, target_logprobs
from lightpref.training.packed_layout import (
    PackedBatch,
    attention_mask_4d,
    auto_packed_length,
    block_mask,
    pack_batch,
    unsupported_reason,
)

MASKED_ATTENTION = ("sdpa", "eager", "flex_attention")  # take a custom 4D mask (a BlockMask for flex)
PACKING_ONLY = ("flash_attention_2", "flash_attention_3")  # pack from position_ids, no custom mask
_warned: set[str] = set()


def _warn_once(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"lightpref: {reason}", stacklevel=3)


def packed_inputs(model: PreTrainedModel, packed: PackedBatch) -> dict[str, Tensor | object | None]:
    """The model inputs of a packed batch: its token ids, positions and the attention mask its attention
    implementation takes (a dense (R, 1, L, L) mask for SDPA, additive for eager, a ``BlockMask`` for FlexAttention,
    none for FlashAttention, which reads sequence boundaries from the restarting positions)."""
    implementation = getattr(model.config, "_attn_implementation", None) or "eager"
    if implementation in PACKING_ONLY:
        mask = None
    elif implementation == "flex_attention":
        mask = block_mask(packed)
    else:
        mask = attention_mask_4d(packed)  # (R, 1, L, L)
        if implementation == "eager":  # eager adds the mask to the scores
            mask = torch.zeros(mask.shape, dtype=model.dtype, device=mask.device).masked_fill(
                ~mask, torch.finfo(model.dtype).min
            )
    return {"input_ids": packed.input_ids, "attention_mask": mask, "position_ids": packed.position_ids}


def packed_completion_logprobs(
    model: PreTrainedModel,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    chunk_size: int | None = 1024,
    with_collision: bool = False,
    pack: bool = True,
    shared_prompt: bool = True,
    max_packed_length: int | None = None,
    groups: Tensor | None = None,
) -> TokenLogProbs:
    """:func:`lightpref.training.forward.completion_logprobs` of an (N, T) batch whose rows share prompts by ``groups``
    (a pair batch when ``None``; see :func:`pack_batch`), with each group's prompt computed once (``shared_prompt``)
    and/or the batch packed into one row without padding (``pack``); the result is the same (N, T)
    :class:`TokenLogProbs`.

    Packed rows hold at most ``max_packed_length`` tokens (a longer sequence has a row of its own); ``None`` is
    :func:`auto_packed_length`. FlashAttention packs into one row.

    Where the model's attention implementation cannot do what is asked exactly, it does the most it can (FlashAttention
    packs without sharing the prompt) or the plain forward, and warns once with the reason.
    """
    implementation = getattr(model.config, "_attn_implementation", None) or "eager"
    if shared_prompt and implementation in PACKING_ONLY:
        _warn_once(f"{implementation} takes no custom attention mask, so prompts are not shared (packing only)")
        shared_prompt = False
    if not shared_prompt and not pack:
        return completion_logprobs(model, input_ids, attention_mask, completion_mask, chunk_size, with_collision)
    reason = None
    if implementation not in MASKED_ATTENTION + PACKING_ONLY:
        reason = f"attention implementation {implementation!r} takes no custom mask or packed sequences"
    reason = reason or unsupported_reason(model, attention_mask, completion_mask)
    if reason:
        _warn_once(f"{reason}; using the plain forward")
        return completion_logprobs(model, input_ids, attention_mask, completion_mask, chunk_size, with_collision)

    completion_mask = completion_mask.bool()
    if implementation in PACKING_ONLY:
        max_packed_length = None  # transformers reads packed sequences from position ids in a batch of one row
    elif max_packed_length is None:
        max_packed_length = auto_packed_length(model)
    packed = pack_batch(input_ids, attention_mask, completion_mask, shared_prompt, pack, max_packed_length, groups)
    inputs = packed_inputs(model, packed)

    target_mask = completion_mask[:, 1:]  # (N, T-1): position t-1 predicts token t
    targets = input_ids[:, 1:][target_mask]  # (M,)
    predictors = packed.source[:, :-1][target_mask]  # (M,) packed index of each target's previous token
    logps, logits_sums, collision = target_logprobs(
        model, inputs, lambda outputs: outputs.flatten(0, 1)[predictors], targets, chunk_size, with_collision
    )
    return scatter_completion(completion_mask, logps, logits_sums, collision)


@dataclass(frozen=True)
class Scorer:
    """The training forward, as one small public object: per-token log-probs of a batch's completions under a model.

    Training, validation and the precomputed reference cache all score through the same :class:`Scorer`, so cached
    reference log-probs are exactly those the training forward would compute.

    Args:
        chunk_size: completion positions projected to the vocabulary at a time (``None``: the model's own forward).
        pack: pack the sequences into rows without padding.
        shared_prompt: compute each group's prompt once (the rows' groups from ``sequences.row_groups()``: a pair
            batch's chosen rows, then rejected rows, or a :class:`~lightpref.batch.GroupBatch`'s groups).
    """

    chunk_size: int | None = 1024
    pack: bool = True
    shared_prompt: bool = True

    def __call__(self, model: PreTrainedModel, sequences: Sequences, with_collision: bool = False) -> TokenLogProbs:
        """(N, T) per-token log-probs of ``sequences``' completion tokens under ``model`` (an unpaired batch with
        mismatched rows through :func:`lightpref.training.split_forward.score_unpaired`, the policy and the reference
        alike, so both compute the same values)."""
        mismatched = isinstance(sequences, UnpairedBatch) and len(sequences.rows_at(0)) < len(sequences.input_ids)
        if mismatched and not with_collision:
            from lightpref.training.split_forward import score_unpaired  # it builds on this module

            return score_unpaired(self, model, sequences)
        return packed_completion_logprobs(
            model, sequences.input_ids, sequences.attention_mask, sequences.completion_mask,
            chunk_size=self.chunk_size, with_collision=with_collision, pack=self.pack, shared_prompt=self.shared_prompt,
            groups=sequences.row_groups(),
        )
