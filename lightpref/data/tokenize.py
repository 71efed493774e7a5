"""Tokenise a normalised pair: prompt tokens, completion tokens ending in EOS, one prompt per view, truncated.

String prompts get the tokenizer's leading special tokens (a BOS if it adds one) and completions none; chat
conversations go through the tokenizer's chat template. Either way the prompt + completion text is tokenised jointly
and split where the prompt's tokens end, so the completion tokens are those the model sees after that prompt.

>>> from lightpref.data.formats import PreferenceExample
>>> from lightpref.testing import tiny_tokenizer
>>> tokenizer = tiny_tokenizer()
>>> pair = tokenize_pair(PreferenceExample("Hi", " yes", " no"), tokenizer, max_length=16, max_prompt_length=8)
>>> tokenizer.decode(pair.prompt_ids), tokenizer.decode(pair.chosen_ids), tokenizer.decode(pair.rejected_ids)
('Hi', ' yes<|im_end|>', ' no<|im_end|>')
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from lightpref.data.encode import encode_text, encode_texts, render_chat
from lightpref.data.example import PreferenceExample, Prompt
from lightpref.data.precut import cut_prompt, cut_texts

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lightpref.views import PromptView

@dataclass(frozen=True)
class TokenizedPair:
    """Token ids of one pair: the prompt, each completion (ending in EOS unless truncated) and each view's prompt."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    view_prompt_ids: dict[str, list[int]] = field(default_factory=dict)
    margin: float | None = None  # the record's `margin`, when it gives one

    def __repr__(self) -> str:  # the margin only when the record gives one
        margin = "" if self.margin is None else f", margin={self.margin!r}"
        return (f"TokenizedPair(prompt_ids={self.prompt_ids!r}, chosen_ids={self.chosen_ids!r}, "
                f"rejected_ids={self.rejected_ids!r}, view_prompt_ids={self.view_prompt_ids!r}{margin})")


@dataclass
class TokenizeStats:
    """Counts kept while tokenising a dataset; pass one to :func:`tokenize_pair` to collect them.

    ``dropped_by_truncation`` counts pairs left with an empty completion, or with identical chosen and rejected
    tokens (no preference left), once truncated. ``template_fallbacks`` counts conversations whose chat template
    does not render the prompt as a prefix of prompt + completion (the completion text is then the messages'
    content joined, plus EOS); ``split_fallbacks`` counts pairs whose joint tokens do not start with the prompt's
    (the completion is then tokenised on its own).
    """

    pairs: int = 0
    dropped_by_truncation: int = 0
    prompts_truncated: int = 0
    completions_truncated: int = 0
    template_fallbacks: int = 0
    split_fallbacks: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def check_lengths(max_length: int, max_prompt_length: int) -> None:
    """Reject lengths that leave no room for a prompt token or a completion token."""
    if not isinstance(max_prompt_length, int) or max_prompt_length < 1:
        raise ValueError(f"`max_prompt_length` must be an integer >= 1, got {max_prompt_length!r}")
    if not isinstance(max_length, int) or max_length <= max_prompt_length:
        raise ValueError(
            f"`max_length` ({max_length!r}) must be greater than `max_prompt_length` ({max_prompt_length!r}) "
            "so that completions keep at least one token; raise `max_length` or lower `max_prompt_length`"
        )


class PairError(ValueError):
    """A pair of a batch that cannot be tokenised; ``index`` is its position in the batch."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


def tokenize_pair(
    example: PreferenceExample,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    max_prompt_length: int,
    views: Mapping[str, PromptView] | None = None,
    stats: TokenizeStats | None = None,
) -> TokenizedPair | None:
    """Tokenise and truncate one pair, or ``None`` when truncation leaves nothing to compare (see ``stats``).

    Each view transforms the normalised prompt (before any chat template); the view's prompt is tokenised like the
    plain one and truncated from its start to fit both ``max_prompt_length`` and ``max_length`` next to the shared,
    already truncated completions.
    """
    try:
        return tokenize_pairs([example], tokenizer, max_length, max_prompt_length, views, stats)[0]
    except PairError as error:
        raise ValueError(str(error)) from None


def tokenize_pairs(
    examples: Sequence[PreferenceExample],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    max_prompt_length: int,
    views: Mapping[str, PromptView] | None = None,
    stats: TokenizeStats | None = None,
) -> list[TokenizedPair | None]:
    """:func:`tokenize_pair` of many pairs with one tokenizer call for all their texts (and one for the kept pairs'
    view prompts): the same tokens, pair for pair. A pair that cannot be tokenised raises :class:`PairError`
    naming its position in ``examples``.

    >>> from lightpref.testing import tiny_tokenizer
    >>> tokenizer, examples = tiny_tokenizer(), [PreferenceExample("Hi", " yes", " no")] * 2
    >>> tokenize_pairs(examples, tokenizer, 16, 8) == [tokenize_pair(examples[0], tokenizer, 16, 8)] * 2
    True
    """
    check_lengths(max_length, max_prompt_length)
    stats = TokenizeStats() if stats is None else stats
    eos, bos = tokenizer.eos_token_id, tokenizer.bos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token, which ends every completion; set `tokenizer.eos_token`")
    texts = []  # per pair: prompt text, then prompt + chosen and prompt + rejected completion texts
    for index, example in enumerate(examples):
        try:
            prompt_text = prompt_as_text(example.prompt, tokenizer)
            completions = [completion_text(example, prompt_text, completion, tokenizer, stats)
                           for completion in (example.chosen, example.rejected)]
            prompt_text, completions = cut_texts(prompt_text, completions, tokenizer, max_length, max_prompt_length)
        except ValueError as error:
            raise PairError(index, str(error)) from None
        texts.append((prompt_text, *completions))
    encoded = encode_texts([text for group in texts for text in (group[0], *(group[0] + c for c in group[1:]))],
                           tokenizer)
    pairs: list[TokenizedPair | None] = []
    kept: list[tuple[int, TokenizedPair]] = []
    for index, example in enumerate(examples):
        prompt_text, chosen_text, rejected_text = texts[index]
        prompt_ids, chosen_joint, rejected_joint = encoded[3 * index : 3 * index + 3]
        if not prompt_ids:
            raise PairError(index, f"the prompt {prompt_text!r} tokenises to no tokens; give a non-empty prompt")
        chosen_ids, rejected_ids = (
            end_completion(example, split_joint(prompt_ids, joint, text, tokenizer, stats), eos)
            for joint, text in ((chosen_joint, chosen_text), (rejected_joint, rejected_text))
        )
        truncated = truncate_pair(prompt_ids, chosen_ids, rejected_ids, max_length, max_prompt_length, bos)
        if truncated is None:
            stats.dropped_by_truncation += 1
            pairs.append(None)
            continue
        stats.prompts_truncated += len(truncated[0]) < len(prompt_ids)
        stats.completions_truncated += len(truncated[1]) < len(chosen_ids) or len(truncated[2]) < len(rejected_ids)
        stats.pairs += 1
        pair = TokenizedPair(*truncated, margin=example.margin)
        pairs.append(pair)
        kept.append((index, pair))
    if views and kept:
        _add_view_prompts(examples, kept, views, tokenizer, max_length, max_prompt_length)
    return pairs


def _add_view_prompts(
    examples: Sequence[PreferenceExample],
    kept: list[tuple[int, TokenizedPair]],
    views: Mapping[str, PromptView],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    max_prompt_length: int,
) -> None:
    """Fill in each kept pair's view prompts: the view's prompt tokenised like the plain one, cut from its start to
    fit ``max_prompt_length`` and ``max_length`` next to the pair's longest (already truncated) completion."""
    names, texts = list(views), []
    for index, _ in kept:
        try:
            texts += [cut_prompt(prompt_as_text(views[name].apply(copy.deepcopy(examples[index].prompt)), tokenizer),
                                 max_prompt_length, tokenizer, f"view {name!r}'s prompt") for name in names]
        except ValueError as error:
            raise PairError(index, str(error)) from None
    encoded = iter(encode_texts(texts, tokenizer))
    for index, pair in kept:
        budget = min(max_prompt_length, max_length - max(len(pair.chosen_ids), len(pair.rejected_ids)))
        for name in names:
            view_ids = next(encoded)
            if not view_ids:
                raise PairError(index, f"view {name!r} gives a prompt that tokenises to no tokens; check the view")
            pair.view_prompt_ids[name] = truncate_prompt(view_ids, budget, tokenizer.bos_token_id)


def prompt_as_text(prompt: Prompt, tokenizer: PreTrainedTokenizerBase) -> str:
    """The prompt's text: itself, or a conversation through the chat template with the generation prompt."""
    return prompt if isinstance(prompt, str) else render_chat(prompt, tokenizer, add_generation_prompt=True)


def encode_prompt(prompt: Prompt, tokenizer: PreTrainedTokenizerBase) -> tuple[str, list[int]]:
    """The prompt's text (after the chat template, with the generation prompt) and its token ids."""
    text = prompt_as_text(prompt, tokenizer)
    ids = encode_text(text, tokenizer)
    if not ids:
        raise ValueError(f"the prompt {text!r} tokenises to no tokens; give a non-empty prompt")
    return text, ids


def completion_text(
    example: PreferenceExample,
    prompt_text: str,
    completion: Prompt,
    tokenizer: PreTrainedTokenizerBase,
    stats: TokenizeStats,
) -> str:
    """The text that follows the prompt's text: a string completion as it is; for a conversation, the rendered
    prompt + completion after the rendered prompt (or, when the template breaks that prefix property, the messages'
    content joined by newlines, counted in ``stats.template_fallbacks``)."""
    if isinstance(completion, str):
        return completion
    full_text = render_chat([*example.prompt, *completion], tokenizer, add_generation_prompt=False)
    if full_text.startswith(prompt_text):
        return full_text[len(prompt_text) :]
    stats.template_fallbacks += 1
    return "\n".join(message["content"] for message in completion)


def end_completion(example: PreferenceExample, ids: list[int], eos: int) -> list[int]:
    """A completion's tokens ending with EOS: a string completion gets one unless it ends with it; a conversation's
    is cut right after its last EOS (see :func:`end_at_last_eos`)."""
    if not example.is_conversational:
        return ids if ids and ids[-1] == eos else [*ids, eos]
    return end_at_last_eos(ids, eos)


def split_joint(
    prompt_ids: list[int],
    joint_ids: list[int],
    completion_text: str,
    tokenizer: PreTrainedTokenizerBase,
    stats: TokenizeStats,
) -> list[int]:
    """The tokens of prompt + completion after the prompt's, or the completion tokenised alone (counted in
    ``stats.split_fallbacks``) when the joint tokens do not start with the prompt's."""
    if joint_ids[: len(prompt_ids)] == prompt_ids:
        return joint_ids[len(prompt_ids) :]
    stats.split_fallbacks += 1
    return list(tokenizer(completion_text, add_special_tokens=False)["input_ids"])


def end_at_last_eos(ids: list[int], eos: int) -> list[int]:
    """Cut right after the last EOS (dropping e.g. the newline a chat template writes after it), or append one.

    >>> end_at_last_eos([5, 3, 9], eos=3), end_at_last_eos([5, 9], eos=3)
    ([5, 3], [5, 9, 3])
    """
    if eos in ids:
        return ids[: len(ids) - ids[::-1].index(eos)]
    return [*ids, eos]


def truncate_prompt(ids: list[int], limit: int, bos_token_id: int | None) -> list[int]:
    """Keep the last ``limit`` tokens of a prompt, and its leading BOS if it has one.

    >>> truncate_prompt([1, 5, 6, 7, 8], 3, bos_token_id=1), truncate_prompt([5, 6, 7, 8], 3, bos_token_id=1)
    ([1, 7, 8], [6, 7, 8])
    """
    if len(ids) <= limit:
        return list(ids)
    head = ids[:1] if bos_token_id is not None and ids[0] == bos_token_id else []
    return head + ids[len(ids) - (limit - len(head)) :] if limit > len(head) else head


def truncate_pair(
    prompt_ids: list[int],
    chosen_ids: list[int],
    rejected_ids: list[int],
    max_length: int,
    max_prompt_length: int,
    bos_token_id: int | None,
) -> tuple[list[int], list[int], list[int]] | None:
    """The prompt cut from its start to ``max_prompt_length``, the completions cut from their end to fit
    ``max_length`` after it; ``None`` when a completion has nothing left or both are left identical.

    >>> truncate_pair([1, 2, 3], [4, 5, 6], [4, 7], max_length=4, max_prompt_length=2, bos_token_id=None)
    ([2, 3], [4, 5], [4, 7])
    >>> truncate_pair([1, 2, 3], [4, 5, 6], [4, 7], max_length=3, max_prompt_length=2, bos_token_id=None) is None
    True
    """
    prompt_ids = truncate_prompt(prompt_ids, max_prompt_length, bos_token_id)
    budget = max_length - len(prompt_ids)
    chosen_ids, rejected_ids = chosen_ids[:budget], rejected_ids[:budget]
    if not chosen_ids or not rejected_ids or chosen_ids == rejected_ids:
        return None
    return prompt_ids, chosen_ids, rejected_ids
