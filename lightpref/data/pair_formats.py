"""The three pair formats, each read into a :class:`PreferenceExample` (prompt, chosen, rejected).

- ``explicit``: ``{"prompt": str, "chosen": str, "rejected": str}``;
- ``conversational``: chat messages, with or without a ``prompt`` field (see :mod:`lightpref.data.formats`);
- ``hh_rlhf``: Anthropic HH-RLHF transcripts, split after the last shared ``"\\n\\nAssistant:"``.

:data:`NORMALISERS` maps each format's name to its reader; :func:`lightpref.data.formats.normalise_record` picks one.

>>> NORMALISERS["explicit"]({"prompt": "2+2?", "chosen": " 4", "rejected": " 5"})
PreferenceExample(prompt='2+2?', chosen=' 4', rejected=' 5')
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lightpref.data.fields import (
    SKIP_FIX,
    InvalidRecord,
    Prompt,
    assistant_turns,
    chat_messages,
    check_completion,
    string_field,
)

HH_HUMAN = "\n\nHuman:"
HH_ASSISTANT = "\n\nAssistant:"


@dataclass(frozen=True)
class PreferenceExample:
    """One normalised preference pair.

    ``prompt`` is a string or a list of chat messages; ``chosen``/``rejected`` are strings when the prompt is a
    string and lists of messages (starting with an assistant turn) when it is a conversation.
    """

    prompt: Prompt
    chosen: Prompt
    rejected: Prompt
    margin: float | None = None  # how much better `chosen` is, from the record's optional `margin` field

    @property
    def is_conversational(self) -> bool:
        return isinstance(self.prompt, list)

    def __repr__(self) -> str:  # the margin only when the record gives one
        margin = "" if self.margin is None else f", margin={self.margin!r}"
        return f"PreferenceExample(prompt={self.prompt!r}, chosen={self.chosen!r}, rejected={self.rejected!r}{margin})"


def _explicit(record: dict[str, Any]) -> PreferenceExample:
    return PreferenceExample(*(string_field(record, name, "explicit") for name in ("prompt", "chosen", "rejected")))


def _hh_rlhf(record: dict[str, Any]) -> PreferenceExample:
    chosen, rejected = (string_field(record, name, "hh_rlhf") for name in ("chosen", "rejected"))
    shared = os.path.commonprefix([chosen, rejected])
    end = shared.rfind(HH_ASSISTANT)
    if end < 0:
        raise InvalidRecord(
            f"`chosen` and `rejected` share no {HH_ASSISTANT!r} turn, so there is no prompt to split off",
            f"check the transcripts, use another `format`, or {SKIP_FIX}",
        )
    prompt = chosen[: end + len(HH_ASSISTANT)]
    example = PreferenceExample(prompt, chosen[len(prompt) :], rejected[len(prompt) :])
    for name in ("chosen", "rejected"):
        if not getattr(example, name).strip() and chosen != rejected:
            raise InvalidRecord(f"the `{name}` completion (after the last shared {HH_ASSISTANT!r}) is empty")
    return example


def _conversational(record: dict[str, Any]) -> PreferenceExample:
    prompt = record.get("prompt")
    if isinstance(prompt, list):
        prompt = chat_messages(prompt, "prompt")
        if not prompt:
            raise InvalidRecord("field `prompt` is an empty list of messages")
        chosen, rejected = (assistant_turns(record.get(name), name) for name in ("chosen", "rejected"))
        return PreferenceExample(prompt, chosen, rejected)
    if prompt is not None:
        raise InvalidRecord(
            f"field `prompt` must be a list of chat messages in the conversational format, got {type(prompt).__name__}",
            "give the prompt as messages, drop the `prompt` field so the prompt is the messages `chosen` and "
            f"`rejected` share, or {SKIP_FIX}",
        )
    chosen, rejected = (chat_messages(record.get(name), name) for name in ("chosen", "rejected"))
    if chosen == rejected:
        raise InvalidRecord("`chosen` is identical to `rejected`, so the row states no preference")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0:
        raise InvalidRecord("`chosen` and `rejected` share no leading messages, so there is no prompt")
    example = PreferenceExample(chosen[:shared], chosen[shared:], rejected[shared:])
    for name in ("chosen", "rejected"):
        check_completion(getattr(example, name), name)
    return example


NORMALISERS: dict[str, Callable[[dict[str, Any]], PreferenceExample]] = {
    "explicit": _explicit, "conversational": _conversational, "hh_rlhf": _hh_rlhf,
}
