"""Per-token log-probs of completion tokens, written once and used by training, validation and evaluation.

The model's decoder runs over the whole (prompt + completion) sequences, but the output projection and the
log-softmax run only at the positions that predict a completion token, a chunk of rows at a time. When gradients
are needed each chunk is recomputed in the backward pass instead of being kept, so the float32 logits never exist
for the whole batch at once: peak extra memory is one ``(chunk, vocab)`` block, and the prompt positions (most of
the tokens in multi-turn data) cost no vocabulary projection at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel


@dataclass(frozen=True)
class TokenLogProbs:
    """Per-token results over a batch of N sequences of length T."""

    logps: Tensor  # (N, T) log π(x_t | x_<t) on completion tokens, 0 elsewhere
    mask: Tensor  # (N, T) bool, the completion tokens
    logits_sum: Tensor  # (N,) sum over completion positions and vocabulary of the raw logits (for logging)
    log_collision: Tensor | None = None  # (N, T) log Σ_v π(v | x_<t), 0 elsewhere; only when asked


def _output_head(model: PreTrainedModel) -> tuple[nn.Module, nn.Module, float | None]:
    """The decoder body, the output projection and the final logit soft-cap (if the architecture has one)."""
    decoder = model.get_decoder()
    head = model.get_output_embeddings()
    if decoder is None or head is None:
        raise TypeError(
            f"{type(model).__name__} exposes no decoder/output embeddings; set `logits_chunk_size: null` to run "
            "the model's own forward instead"
        )
    return decoder, head, getattr(model.config, "final_logit_softcapping", None)


def _chunk_logps(
    head: nn.Module, hidden: Tensor, targets: Tensor, softcap: float | None, with_collision: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    logits = head(hidden).float()  # (c, V)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    log_normaliser = torch.logsumexp(logits, dim=-1)  # (c,)
    logps = logits.gather(-1, targets[:, None]).squeeze(-1) - log_normaliser
    collision = None
    if with_collision:  # log Σ_v p_v² = logsumexp(2·logits) − 2·logsumexp(logits)
        collision = torch.logsumexp(2 * logits, dim=-1) - 2 * log_normaliser
    return logps, logits.detach().sum(-1), collision


def completion_logprobs(
    model: PreTrainedModel,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    chunk_size: int | None = 1024,
    with_collision: bool = False,
) -> TokenLogProbs:
    """Log-probs of the completion tokens of ``input_ids`` under ``model``.

    Args:
        input_ids: (N, T) right-padded token ids.
        attention_mask: (N, T) 1 on real tokens.
        completion_mask: (N, T) bool, True on the tokens whose log-prob is wanted (never position 0).
        chunk_size: rows of completion positions projected to the vocabulary at a time; ``None`` runs the
            model's own full forward (exact for any architecture, but materialises (N, T, V) logits).
        with_collision: also return ``log Σ_v π(v|·)²`` per token.
    """
    completion_mask = completion_mask.bool()
    target_mask = completion_mask[:, 1:]  # (N, T-1): position t-1 predicts token t
    targets = input_ids[:, 1:][target_mask]  # (M,)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    logps, logits_sums, collision = target_logprobs(
        model, inputs, lambda outputs: outputs[:, :-1][target_mask], targets, chunk_size, with_collision
    )
    return scatter_completion(completion_mask, logps, logits_sums, collision)


def target_logprobs(
    model: PreTrainedModel,
    inputs: dict[str, Tensor | None],
    select: Callable[[Tensor], Tensor],
    targets: Tensor,
    chunk_size: int | None,
    with_collision: bool,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Run ``model`` on ``inputs`` and return the log-probs of ``targets`` (M,) predicted at the positions that
    ``select`` picks from a (R, L, ·) output as (M, ·): from the decoder's hidden states, projected ``chunk_size``
    rows at a time, or (``chunk_size`` ``None``) from the model's own full logits. Returns what
    :func:`head_logprobs` returns."""
    if chunk_size is None:
        logits = model(**inputs, use_cache=False).logits  # (R, L, V)
        return _chunk_logps(nn.Identity(), select(logits), targets, None, with_collision)
    decoder, head, softcap = _output_head(model)
    hidden = decoder(**inputs, use_cache=False).last_hidden_state  # (R, L, H)
    return head_logprobs(head, select(hidden), targets, softcap, chunk_size, with_collision)


def head_logprobs(
    head: nn.Module, rows: Tensor, targets: Tensor, softcap: float | None, chunk_size: int, with_collision: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Log-probs of ``targets`` (M,) from the hidden states ``rows`` (M, H) that predict them, ``chunk_size`` rows
    projected to the vocabulary at a time (recomputed in the backward pass when gradients are needed).

    Returns the (M,) log-probs, the (M,) sums of raw logits over the vocabulary, and the (M,) log collision
    probabilities (``None`` unless ``with_collision``).
    """
    recompute = torch.is_grad_enabled() and rows.requires_grad
    pieces = []
    for start in range(0, rows.shape[0], chunk_size):
        chunk = slice(start, start + chunk_size)
        args = (head, rows[chunk], targets[chunk], softcap, with_collision)
        pieces.append(checkpoint(_chunk_logps, *args, use_reentrant=False) if recompute else _chunk_logps(*args))
    if not pieces:  # no completion token at all
        empty = rows.new_zeros(0, dtype=torch.float32)
        return empty, empty, empty if with_collision else None
    logps = torch.cat([piece[0] for piece in pieces])
    logits_sums = torch.cat([piece[1] for piece in pieces])
    collision = torch.cat([piece[2] for piece in pieces]) if with_collision else None
    return logps, logits_sums, collision


def scatter_completion(
    completion_mask: Tensor, logps: Tensor, logits_sums: Tensor, collision: Tensor | None
) -> TokenLogProbs:
    """The (N, T) :class:`TokenLogProbs` of per-target values (M,) given in the order of ``completion_mask[:, 1:]``."""
    target_mask = completion_mask[:, 1:]  # (N, T-1)

    def scatter(values: Tensor) -> Tensor:
        full = values.new_zeros(completion_mask.shape)  # (N, T)
        full[:, 1:][target_mask] = values
        return full

    return TokenLogProbs(
        logps=scatter(logps),
        mask=completion_mask,
        logits_sum=scatter(logits_sums).sum(-1),
        log_collision=scatter(collision) if collision is not None else None,
    )
