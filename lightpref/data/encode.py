"""Text to token ids as a tokenizer gives them to lightpref: chat messages through the tokenizer's chat template,
texts with its leading special tokens (a BOS for Llama-style tokenizers) and nothing after them.

>>> from lightpref.testing import tiny_tokenizer
>>> tokenizer = tiny_tokenizer()
>>> encode_texts(["ab", "a"], tokenizer) == [encode_text("ab", tokenizer), encode_text("a", tokenizer)]
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lightpref.data.example import Message

NO_CHAT_TEMPLATE = (
    "the data is conversational (chat messages) but the tokenizer has no chat template; use a tokenizer that has "
    "one (an instruct or chat model's), set `tokenizer.chat_template`, or give the data in the explicit format "
    "(`prompt`/`chosen`/`rejected` strings)"
)


def render_chat(messages: list[Message], tokenizer: PreTrainedTokenizerBase, add_generation_prompt: bool) -> str:
    """Messages as text through the tokenizer's chat template, or a clear error when it has none."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(NO_CHAT_TEMPLATE)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def encode_text(text: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids of a text with the tokenizer's leading special tokens, unless the text already starts with BOS."""
    return encode_texts([text], tokenizer)[0]


def encode_texts(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
    """:func:`encode_text` of many texts in one tokenizer call."""
    if not texts:
        return []
    lead, bos_text = leading_special_ids(tokenizer), tokenizer.bos_token
    has_bos_text = isinstance(bos_text, str) and bool(bos_text)
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [
        list(ids) if has_bos_text and text.startswith(bos_text) else lead + list(ids)
        for text, ids in zip(texts, encoded, strict=True)
    ]


def leading_special_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The special tokens the tokenizer puts before a text (a BOS for Llama-style tokenizers), never those after."""
    plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    special = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    for start in range(len(special) - len(plain) + 1):
        if special[start : start + len(plain)] == plain:
            return special[:start]
    return []
