"""The policy forward of an unpaired batch in two passes: the completions with gradient, then their mismatched
completions without, attending to the cached keys and values of the prompt they share.

KTO's reference point z₀ needs ``log π(y'|x)`` of each example's mismatched completion y' under its prompt x, with no
gradient. Scoring prompt ∥ completion ∥ mismatched completion in one gradient-tracking pass (the shared-prompt forward
of :mod:`lightpref.training.packing`) keeps the mismatched tokens' activations for a backward pass whose result z₀
then discards. Here:

1. pass 1 (gradient) runs the packed ``prompt ∥ completion`` sequences and keeps every layer's keys and values;
2. pass 2 (no gradient) runs only the mismatched completion tokens, packed into the same rows, each attending to the
   cached keys and values of its own example's prompt and causally to itself, at the positions that continue from
   the prompt's end::

       pass 1 keys   p0 p1 p2 c0 c1 | q0 q1 d0          two examples packed in one row
       pass 2        m0 m1 | n0 n1 n2                   m sees p0 p1 p2 and m; n sees q0 q1 and n

   The first mismatched token is predicted from the last prompt position's hidden state of pass 1 (detached).

Every token sees the context it has in its own row of the plain batch at the same position, so the log-probs are
those of the plain forward; the prompt is computed once and the mismatched tokens keep nothing for backward.

Where this cannot be done, the mismatched rows get a separate forward under ``torch.no_grad`` (the prompt computed
again, still nothing kept for backward): attention implementations other than SDPA and eager (FlexAttention takes a
``BlockMask`` over equal query and key lengths, FlashAttention no custom mask), ``logits_chunk_size: null`` (the
model's own forward), gradient checkpointing (transformers turns the cache off), a :class:`Scorer` without shared
prompts, an example whose two rows do not share their prompt tokens, and whatever
:mod:`lightpref.training.packing` itself falls back on (sliding windows, left padding, no ``position_ids``).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from transformers import DynamicCache, PreTrainedModel

from lightpref.batch import UnpairedBatch
from lightpref.training.forward import TokenLogProbs, _output_head, head_logprobs, scatter_completion
from lightpref.training.packed_layout import (
    PROMPT,
    attention_mask_4d,
    auto_packed_length,
    pack_batch,
    unsupported_reason,
)

if TYPE_CHECKING:
    from lightpref.training.packing import Scorer  # the caller: it routes unpaired batches here

CACHED_ATTENTION = ("sdpa", "eager")  # take a 4D mask whose keys are the cache's then the new tokens'


def split_unsupported(model: PreTrainedModel, scorer: Scorer, batch: UnpairedBatch) -> str | None:
    """Why the two-pass forward cannot score ``batch`` exactly here, or ``None``."""
    implementation = getattr(model.config, "_attn_implementation", None) or "eager"
    if implementation not in CACHED_ATTENTION:
        return f"attention implementation {implementation!r} cannot attend to a cached prompt under a custom mask"
    if scorer.chunk_size is None:
        return "`logits_chunk_size: null` runs the model's own forward"
    if not scorer.shared_prompt:
        return "the scorer does not share prompts"
    checkpointing = "is_activation_checkpointing" if hasattr(model, "is_activation_checkpointing") else (
        "is_gradient_checkpointing")
    if getattr(model, checkpointing, False):
        return "gradient checkpointing turns the key/value cache off"
    reason = unsupported_reason(model, batch.attention_mask, batch.completion_mask)
    if reason:
        return reason
    own, mismatched = batch.rows_at(0), batch.rows_at(1)
    prompt = _prompt_lengths(batch.completion_mask[own])  # (B,)
    positions = torch.arange(batch.input_ids.shape[1], device=prompt.device)[None]  # (1, T)
    in_prompt = positions < prompt[:, None]  # (B, T)
    same = (batch.input_ids[own] == batch.input_ids[mismatched]) | ~in_prompt
    if not bool(same.all()) or not torch.equal(_prompt_lengths(batch.completion_mask[mismatched]), prompt):
        return "an example's completion and mismatched completion do not share its prompt tokens"
    return None


def _prompt_lengths(completion_mask: Tensor) -> Tensor:
    """(B,) the index of each row's first completion token."""
    return completion_mask.int().argmax(1)


def score_unpaired(scorer: Scorer, model: PreTrainedModel, batch: UnpairedBatch) -> TokenLogProbs:
    """(N, T) per-token log-probs of an unpaired batch's rows (each example's completion and mismatched completion)
    under ``model``: with gradient (when enabled) on the completions, without on the mismatched completions, in two
    passes (see the module docstring) or, where those cannot be done, a separate no-grad forward of the mismatched
    rows. :class:`Scorer` routes such batches here, for the policy and the reference alike, so that at the first step
    (policy = reference) the mismatched log-ratios are exactly 0."""
    mismatched = batch.rows_at(1)
    if split_unsupported(model, scorer, batch) is None:
        return split_logprobs(model, batch, scorer.chunk_size, auto_packed_length(model) if scorer.pack else 0)
    completions = scorer(model, batch.completions_only())
    with torch.no_grad():
        others = scorer(model, _rows(batch, mismatched))
    return _interleave(batch, completions, others)


def split_logprobs(model: PreTrainedModel, batch: UnpairedBatch, chunk_size: int,
                   max_packed_length: int | None) -> TokenLogProbs:
    """The two-pass forward of the module docstring (SDPA or eager attention; right-padded rows whose two rows per
    example share the prompt: :func:`split_unsupported`). Sequences are packed into rows of at most
    ``max_packed_length`` tokens (0: a row each)."""
    decoder, head, softcap = _output_head(model)
    own, mismatched = batch.rows_at(0), batch.rows_at(1)
    ids, completion = batch.input_ids, batch.completion_mask.bool()  # (N, T)
    examples, width = len(own), ids.shape[1]
    device = ids.device
    packed = pack_batch(ids[own], batch.attention_mask[own], completion[own], True, max_packed_length != 0,
                        max_packed_length or None, torch.arange(examples, device=device))
    rows, length = packed.input_ids.shape  # (R, L)
    cache = DynamicCache()
    hidden = decoder(input_ids=packed.input_ids, attention_mask=_additive(model, attention_mask_4d(packed)),
                     position_ids=packed.position_ids, use_cache=True, **_cache_argument(decoder, cache)
                     ).last_hidden_state  # (R, L, H)
    own_completion = completion[own]
    own_logps = head_logprobs(head, hidden.flatten(0, 1)[packed.source[:, :-1][own_completion[:, 1:]]],
                              ids[own][:, 1:][own_completion[:, 1:]], softcap, chunk_size, False)
    completions = scatter_completion(own_completion, *own_logps)

    with torch.no_grad():
        prompt = _prompt_lengths(completion[own])  # (B,)
        other_completion = completion[mismatched]  # (B, T)
        other_lengths = other_completion.sum(1)  # (B,)
        packed_row = packed.source[torch.arange(examples, device=device), prompt - 1] // length  # (B,) each example's
        offsets = torch.zeros_like(other_lengths)  # (B,) each mismatched completion's first index in its pass-2 row
        for row in range(rows):  # examples in packing order within each row
            members = packed_row == row
            offsets[members] = torch.cumsum(other_lengths[members], 0) - other_lengths[members]
        extra = int((offsets + other_lengths).max())  # L2
        index = packed_row[:, None] * extra + offsets[:, None] + torch.cumsum(other_completion.long(), 1) - 1  # (B, T)
        flat = torch.full((rows * extra,), -1, dtype=torch.long, device=device)
        flat[index[other_completion]] = torch.arange(examples, device=device)[:, None].expand(-1, width)[
            other_completion]
        example_of = flat.view(rows, extra)  # (R, L2) the example of each pass-2 token, -1 on padding
        input_ids = torch.zeros(rows * extra, dtype=torch.long, device=device)
        input_ids[index[other_completion]] = ids[mismatched][other_completion]
        positions = torch.zeros(rows * extra, dtype=torch.long, device=device)
        positions[index[other_completion]] = torch.arange(width, device=device).expand(examples, -1)[other_completion]

        # keys: the cached pass-1 row, then the pass-2 row; a query sees its example's prompt and its own earlier tokens
        segment = packed.segment_ids  # (R, L) pass-1 tokens' example (a group is an example here)
        sees_cache = (example_of[:, :, None] == segment[:, None, :]) & (packed.branch[:, None, :] == PROMPT)
        step = torch.arange(extra, device=device)
        sees_new = (example_of[:, :, None] == example_of[:, None, :]) & (step[:, None] >= step[None, :])
        sees_new |= torch.eye(extra, dtype=torch.bool, device=device)  # padding sees itself only
        sees_cache &= example_of[:, :, None] >= 0
        mask = torch.cat([sees_cache, sees_new], dim=2)[:, None]  # (R, 1, L2, L + L2)
        frozen = DynamicCache()
        for layer, cached in enumerate(cache.layers):
            frozen.update(cached.keys.detach(), cached.values.detach(), layer)
        hidden_new = decoder(input_ids=input_ids.view(rows, extra), attention_mask=_additive(model, mask),
                             position_ids=positions.view(rows, extra), use_cache=True,
                             **_cache_argument(decoder, frozen)).last_hidden_state  # (R, L2, H)
        states = torch.cat([hidden.detach().flatten(0, 1), hidden_new.flatten(0, 1)])  # (R·L + R·L2, H)
        source = torch.where(other_completion, rows * length + index, packed.source)  # (B, T) prompt: pass 1
        targets = other_completion[:, 1:]
        other_logps = head_logprobs(head, states[source[:, :-1][targets]], ids[mismatched][:, 1:][targets], softcap,
                                    chunk_size, False)
        others = scatter_completion(other_completion, *other_logps)
    return _interleave(batch, completions, others)


def _cache_argument(decoder: torch.nn.Module, cache: DynamicCache) -> dict[str, DynamicCache]:
    """The cache as the decoder's forward names it (``cache`` in recent transformers, ``past_key_values`` before)."""
    name = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
    return {name: cache}


def _additive(model: PreTrainedModel, mask: Tensor) -> Tensor:
    """A boolean mask as the attention implementation takes it: as is for SDPA, additive for eager."""
    if (getattr(model.config, "_attn_implementation", None) or "eager") != "eager":
        return mask
    return torch.zeros(mask.shape, dtype=model.dtype, device=mask.device).masked_fill(~mask,
                                                                                      torch.finfo(model.dtype).min)


def _rows(batch: UnpairedBatch, rows: Tensor) -> UnpairedBatch:
    """The batch of the given rows only (one row per example)."""
    return UnpairedBatch(batch.input_ids[rows], batch.attention_mask[rows], batch.completion_mask[rows],
                         batch.group_ids[rows], batch.scores[rows], batch.index, batch.split)


def _interleave(batch: UnpairedBatch, completions: TokenLogProbs, others: TokenLogProbs) -> TokenLogProbs:
    """The (N, T) result of the whole batch from its (B, T) completion rows and (B, T) mismatched rows."""
    own, mismatched = batch.rows_at(0), batch.rows_at(1)

    def merge(first: Tensor, second: Tensor) -> Tensor:
        merged = first.new_zeros((len(batch.group_ids), *first.shape[1:]))
        merged[own] = first
        merged[mismatched] = second.to(first.dtype)
        return merged

    return TokenLogProbs(logps=merge(completions.logps, others.logps), mask=batch.completion_mask.bool(),
                         logits_sum=merge(completions.logits_sum, others.logits_sum))
