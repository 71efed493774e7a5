"""The three pair formats' normalisers (``explicit``, ``conversational``, ``hh_rlhf``) and the chat-message checks
that ranked and unpaired records share.

Each normaliser takes one record (a dict) and returns a :class:`~lightpref.data.example.PreferenceExample` or raises
:class:`~lightpref.data.example.InvalidRecord`; :func:`lightpref.data.formats.normalise_record` picks among them.

>>> turn = "\\n\\nHuman: hi\\n\\nAssistant:"
>>> NORMALISERS["hh_rlhf"]({"chosen": turn + " yo", "rejected": turn + " no"})
PreferenceExample(prompt='\\n\\nHuman: hi\\n\\nAssistant:', chosen=' yo', rejected=' no')
>>> assistant_turns("hello", "chosen")
[{'role': 'assistant', 'content': 'hello'}]
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from lightpref.data.example import SKIP_FIX, InvalidRecord, Message, PreferenceExample

HH_HUMAN = "\n\nHuman:"
HH_ASSISTANT = "\n\nAssistant:"


def _string_field(record: dict[str, Any], name: str, format: str) -> str:
    value = record.get(name)
    if value is None:
        raise InvalidRecord(f"field `{name}` is missing ({format} format)", f"add it, or {SKIP_FIX}")
    if not isinstance(value, str):
        raise InvalidRecord(
            f"field `{name}` must be a string in the {format} format, got {type(value).__name__}",
            f"give a string, set `format` to the data's real format, or {SKIP_FIX}",
        )
    if not value.strip():
        raise InvalidRecord(f"field `{name}` is empty")
    return value


def _explicit(record: dict[str, Any]) -> PreferenceExample:
    return PreferenceExample(*(_string_field(record, name, "explicit") for name in ("prompt", "chosen", "rejected")))


def _hh_rlhf(record: dict[str, Any]) -> PreferenceExample:
    chosen, rejected = (_string_field(record, name, "hh_rlhf") for name in ("chosen", "rejected"))
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
        prompt = _messages(prompt, "prompt")
        if not prompt:
            raise InvalidRecord("field `prompt` is an empty list of messages")
        return PreferenceExample(prompt, _assistant_turns(record, "chosen"), _assistant_turns(record, "rejected"))
    if prompt is not None:
        raise InvalidRecord(
            f"field `prompt` must be a list of chat messages in the conversational format, got {type(prompt).__name__}",
            "give the prompt as messages, drop the `prompt` field so the prompt is the messages `chosen` and "
            f"`rejected` share, or {SKIP_FIX}",
        )
    chosen, rejected = (_messages(record.get(name), name) for name in ("chosen", "rejected"))
    if chosen == rejected:
        raise InvalidRecord("`chosen` is identical to `rejected`, so the row states no preference")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0:
        raise InvalidRecord("`chosen` and `rejected` share no leading messages, so there is no prompt")
    example = PreferenceExample(chosen[:shared], chosen[shared:], rejected[shared:])
    for name in ("chosen", "rejected"):
        _check_completion(getattr(example, name), name)
    return example


def _assistant_turns(record: dict[str, Any], name: str) -> list[Message]:
    return assistant_turns(record.get(name), name)


def assistant_turns(value: Any, name: str) -> list[Message]:
    """A completion as messages starting with an assistant turn: a string, one message, or a list of messages."""
    if isinstance(value, str):
        if not value.strip():
            raise InvalidRecord(f"field `{name}` is empty")
        return [{"role": "assistant", "content": value}]
    messages = _messages([value] if isinstance(value, dict) else value, name)
    _check_completion(messages, name)
    return messages


def _check_completion(messages: list[Message], name: str) -> None:
    if not messages or not any(str(message["content"]).strip() for message in messages):
        raise InvalidRecord(f"the `{name}` completion is empty")
    if messages[0]["role"] != "assistant":
        raise InvalidRecord(
            f"the `{name}` completion starts with a {messages[0]['role']!r} turn, not an assistant turn",
            f"make the completion start with the assistant's reply, or {SKIP_FIX}",
        )


def chat_messages(value: Any, name: str) -> list[Message]:
    """``value`` checked as a list of chat messages (each with a string ``role`` and ``content``), copied."""
    return _messages(value, name)


def _messages(value: Any, name: str) -> list[Message]:
    if value is None:
        raise InvalidRecord(f"field `{name}` is missing (conversational format)", f"add it, or {SKIP_FIX}")
    if not isinstance(value, list):
        raise InvalidRecord(f"field `{name}` must be a list of chat messages, got {type(value).__name__}")
    for number, message in enumerate(value, 1):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or not message["role"]:
            raise InvalidRecord(
                f"message {number} of `{name}` is malformed: expected an object with a string `role`, got {message!r}",
                f'write each message as {{"role": "user", "content": "…"}}, or {SKIP_FIX}',
            )
        if not isinstance(message.get("content"), str):
            raise InvalidRecord(
                f"message {number} of `{name}` has no string `content`: {message!r}",
                f'write each message as {{"role": "user", "content": "…"}}, or {SKIP_FIX}',
            )
    return [dict(message) for message in value]


NORMALISERS: dict[str, Callable[[dict[str, Any]], PreferenceExample]] = {
    "explicit": _explicit, "conversational": _conversational, "hh_rlhf": _hh_rlhf}
"""Each pair format's normaliser."""
