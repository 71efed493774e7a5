"""One scalar score per sequence, read at its last token: the reward model's forward, written once.

A reward model here is a Hugging Face sequence-classification model with one label: a decoder body (its
``base_model_prefix`` attribute, e.g. ``model``) and a linear ``score`` head. The score of a row is the head applied
to the body's hidden state at the row's last real token.

:func:`plain_scores` runs the body over the right-padded (N, T) rows as they are. :func:`packed_scores` runs it
once over the packed layout of :mod:`lightpref.training.packing` — each pair as ``prompt ∥ chosen ∥ rejected``, the
prompt computed once, the rejected completion blind to the chosen one, sequences packed into rows without padding — and
reads each completion's score at its own last token. Both give the same (N,) scores and gradients (tested on SDPA,
eager and FlexAttention); where the attention implementation cannot take the packed layout, the plain forward runs
with a one-time warning naming the reason.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from lightpref.batch import Sequences
from lightpref.training.packing import (
    MASKED_ATTENTION,
    PACKING_ONLY,
    auto_packed_length,
    pack_batch,
    packed_inputs,
)

HEAD = "score"  # the one-label head of transformers' *ForSequenceClassification decoders
_warned: set[str] = set()


def reward_parts(model: nn.Module) -> tuple[nn.Module, nn.Module, PreTrainedModel]:
    """The decoder body, the score head and the transformers model of ``model`` (which may carry a peft adapter:
    the body then holds the adapter's layers and the head is peft's trainable copy)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(base, getattr(base, "base_model_prefix", ""), None)
    head = getattr(base, HEAD, None)
    if body is None or head is None:
        raise TypeError(
            f"{type(base).__name__} is not a decoder sequence-classification model with a `{HEAD}` head; reward "
            "models are loaded with AutoModelForSequenceClassification (Llama, Qwen, Mistral, SmolLM… architectures)"
        )
    return body, head, base


def last_token_index(attention_mask: Tensor) -> Tensor:
    """(N,) each right-padded row's last real position.

    >>> last_token_index(torch.tensor([[1, 1, 0], [1, 1, 1]])).tolist()
    [1, 2]
    """
    return attention_mask.long().sum(1) - 1


def plain_scores(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """(N,) float32 scores of right-padded rows (N, T), each read at its last real token."""
    body, head, _ = reward_parts(model)
    hidden = body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state  # (N, T, H)
    rows = hidden[torch.arange(input_ids.shape[0], device=input_ids.device), last_token_index(attention_mask)]
    return head(rows).squeeze(-1).float()  # (N,)


def _why_plain(model: PreTrainedModel, body: nn.Module, attention_mask: Tensor, implementation: str) -> str | None:
    """Why the packed forward would not equal the plain one for this model and batch, or ``None``."""
    if implementation not in MASKED_ATTENTION + PACKING_ONLY:
        return f"attention implementation {implementation!r} takes no custom mask or packed sequences"
    config = model.config
    window = getattr(config, "sliding_window", None)
    sliding = "sliding_attention" in (getattr(config, "layer_types", None) or []) or getattr(
        config, "use_sliding_window", True)
    if window and sliding and attention_mask.sum(1).max() > window:
        return f"{type(model).__name__} has sliding-window attention, which a custom attention mask would drop"
    if "position_ids" not in inspect.signature(body.forward).parameters:
        return f"{type(model).__name__}'s decoder takes no `position_ids`"
    lengths = attention_mask.sum(1, keepdim=True)  # (N, 1)
    if not torch.equal(attention_mask.bool(), torch.arange(attention_mask.shape[1], device=lengths.device) < lengths):
        return "the batch is not right-padded"
    return None


def packed_scores(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    shared_prompt: bool = True,
    pack: bool = True,
    max_packed_length: int | None = None,
    groups: Tensor | None = None,
) -> Tensor:
    """:func:`plain_scores` of a (2B, T) pair batch (chosen rows, then rejected rows) or, with ``groups`` (N,), of
    rows in groups that share a prompt (a ranked group's completions), each prompt computed once (``shared_prompt``)
    and/or the sequences packed into rows without padding (``pack``): the same (N,) scores. ``max_packed_length``
    is the longest packed row (``None``: :func:`~lightpref.training.packing.auto_packed_length`).
    """
    body, head, base = reward_parts(model)
    implementation = getattr(base.config, "_attn_implementation", None) or "eager"
    if shared_prompt and implementation in PACKING_ONLY:
        _warn_once(f"{implementation} takes no custom attention mask, so prompts are not shared (packing only)")
        shared_prompt = False
    if not shared_prompt and not pack:
        return plain_scores(model, input_ids, attention_mask)
    reason = _why_plain(base, body, attention_mask, implementation)
    if reason:
        _warn_once(f"{reason}; scoring with the plain forward")
        return plain_scores(model, input_ids, attention_mask)
    if implementation in PACKING_ONLY:
        max_packed_length = None  # one row: sequence boundaries come from the restarting position ids
    elif max_packed_length is None:
        max_packed_length = auto_packed_length(base)
    packed = pack_batch(input_ids, attention_mask, completion_mask.bool(), shared_prompt, pack, max_packed_length,
                        groups)
    hidden = body(**packed_inputs(base, packed), use_cache=False).last_hidden_state  # (R, L, H)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    index = packed.source[rows, last_token_index(attention_mask)]  # (2B,) each row's last token in the packing
    return head(hidden.flatten(0, 1)[index]).squeeze(-1).float()  # (2B,)


def _warn_once(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"lightpref: {reason}", stacklevel=3)


@dataclass(frozen=True)
class RewardScorer:
    """The reward model's training forward as one small object: (N,) scores of a batch's rows.

    Args:
        pack: pack the sequences into rows without padding.
        shared_prompt: compute each prompt once, for the rows that share it (a pair's, a ranked group's).
    """

    pack: bool = True
    shared_prompt: bool = True

    def __call__(self, model: nn.Module, sequences: Sequences) -> Tensor:
        return packed_scores(model, sequences.input_ids, sequences.attention_mask, sequences.completion_mask,
                             shared_prompt=self.shared_prompt, pack=self.pack, groups=sequences.row_groups())
