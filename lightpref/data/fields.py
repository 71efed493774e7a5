"""Checks of a raw record's fields shared by every data format: strings, chat messages and completions.

Each check returns the field's value (a copy, for messages) or raises :class:`InvalidRecord`, whose message says what
is wrong and how to fix it; the readers add where the row came from.

>>> assistant_turns(" 4", "chosen")
[{'role': 'assistant', 'content': ' 4'}]
>>> try:
...     string_field({"prompt": "  "}, "prompt", "explicit")
... except InvalidRecord as error:
...     print(error.problem)
field `prompt` is empty
"""

from __future__ import annotations

from typing import Any

Message = dict[str, Any]
Prompt = str | list[Message]
SKIP_FIX = "fix or remove the row, or set `skip_invalid: true` to skip such rows"


class InvalidRecord(ValueError):
    """A record that cannot be normalised; ``problem`` says what is wrong and ``fix`` what to do about it."""

    def __init__(self, problem: str, fix: str = SKIP_FIX) -> None:
        super().__init__(f"{problem}; {fix}")
        self.problem = problem
        self.fix = fix


def string_field(record: dict[str, Any], name: str, format: str) -> str:
    """The non-empty string field ``name`` of a ``format`` record."""
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


def assistant_turns(value: Any, name: str) -> list[Message]:
    """A completion as messages starting with an assistant turn: a string, one message, or a list of messages."""
    if isinstance(value, str):
        if not value.strip():
            raise InvalidRecord(f"field `{name}` is empty")
        return [{"role": "assistant", "content": value}]
    messages = chat_messages([value] if isinstance(value, dict) else value, name)
    check_completion(messages, name)
    return messages


def check_completion(messages: list[Message], name: str) -> None:
    """A completion's messages: not empty, and starting with the assistant's turn."""
    if not messages or not any(str(message["content"]).strip() for message in messages):
        raise InvalidRecord(f"the `{name}` completion is empty")
    if messages[0]["role"] != "assistant":
        raise InvalidRecord(
            f"the `{name}` completion starts with a {messages[0]['role']!r} turn, not an assistant turn",
            f"make the completion start with the assistant's reply, or {SKIP_FIX}",
        )


def chat_messages(value: Any, name: str) -> list[Message]:
    """``value`` checked as a list of chat messages (each with a string ``role`` and ``content``), copied."""
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
