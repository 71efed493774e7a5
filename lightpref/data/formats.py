"""Normalise raw preference records into :class:`PreferenceExample` (prompt, chosen, rejected).

Three input formats are understood, detected per dataset from its first valid row unless given explicitly:

- ``explicit``: ``{"prompt": str, "chosen": str, "rejected": str}``;
- ``conversational``: a ``prompt`` list of chat messages with assistant ``chosen``/``rejected`` turns (a list of
  messages, one message dict, or a plain string), or no ``prompt`` and two full conversations whose longest shared
  prefix is the prompt;
- ``hh_rlhf``: Anthropic HH-RLHF transcripts (``"\\n\\nHuman: … \\n\\nAssistant: …"``) whose shared part up to the
  last ``"\\n\\nAssistant:"`` is the prompt.

A pair record of any format may carry a numeric ``margin`` (how much better ``chosen`` is), which reward losses
read (:mod:`lightpref.reward.losses`); ``null`` or no field is no margin.

Ranked records (a prompt with K scored completions: ``ranked``, ``ultrafeedback``) normalise to a
:class:`~lightpref.data.ranked.RankedExample` instead (see :mod:`lightpref.data.ranked`), and unpaired ones (a
prompt, one completion and a boolean ``label``: ``unpaired``) to an :class:`~lightpref.data.unpaired.UnpairedExample`
(see :mod:`lightpref.data.unpaired`).

A record that cannot be normalised raises :class:`InvalidRecord` (a ``ValueError``) carrying the problem and its
fix; :func:`normalise_rows` adds where the row came from, or counts and skips it.

>>> normalise_record({"prompt": "2+2?", "chosen": " 4", "rejected": " 5"})
PreferenceExample(prompt='2+2?', chosen=' 4', rejected=' 5')
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from lightpref.data.ranked import RankedExample
    from lightpref.data.unpaired import UnpairedExample

Message = dict[str, Any]
Prompt = str | list[Message]
Format = Literal["auto", "explicit", "conversational", "hh_rlhf", "ranked", "ultrafeedback", "unpaired"]
FORMATS: tuple[str, ...] = get_args(Format)
RANKED_FORMATS = ("ranked", "ultrafeedback")  # normalised by lightpref.data.ranked
UNPAIRED_FORMAT = "unpaired"  # normalised by lightpref.data.unpaired


def unknown_format(key: str, value: object) -> str:
    """The message for a ``format`` that is none of :data:`FORMATS`, pair formats first."""
    pairs = [name for name in FORMATS if name not in RANKED_FORMATS]
    pairs = [name for name in pairs if name != UNPAIRED_FORMAT]
    return (f"`{key}` must be one of {pairs}, got {value!r}, or for ranked groups one of {list(RANKED_FORMATS)}, or "
            f"{UNPAIRED_FORMAT!r} for labelled single completions")

HH_HUMAN = "\n\nHuman:"
HH_ASSISTANT = "\n\nAssistant:"
_SKIP_FIX = "fix or remove the row, or set `skip_invalid: true` to skip such rows"


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


class InvalidRecord(ValueError):
    """A record that cannot be normalised; ``problem`` says what is wrong and ``fix`` what to do about it."""

    def __init__(self, problem: str, fix: str = _SKIP_FIX) -> None:
        super().__init__(f"{problem}; {fix}")
        self.problem = problem
        self.fix = fix


@dataclass
class NormaliseResult:
    """The examples of one source with the location of each, and how many invalid rows were skipped."""

    examples: list[PreferenceExample] = field(default_factory=list)
    locations: list[str] = field(default_factory=list)
    skipped: int = 0
    format: str | None = None


def detect_format(record: Any) -> str:
    """The format of one record, or :class:`InvalidRecord` when it matches none.

    >>> detect_format({"prompt": [{"role": "user", "content": "hi"}], "chosen": "a", "rejected": "b"})
    'conversational'
    >>> detect_format({"chosen": "\\n\\nHuman: hi\\n\\nAssistant: a", "rejected": "\\n\\nHuman: hi\\n\\nAssistant: b"})
    'hh_rlhf'
    """
    if not isinstance(record, dict):
        raise InvalidRecord(f"the row is a {type(record).__name__}, not an object with prompt/chosen/rejected fields")
    from lightpref.data.ranked import detect_ranked  # ranked formats build on this module's helpers

    ranked = detect_ranked(record)
    if ranked is not None:
        return ranked
    from lightpref.data.unpaired import is_unpaired

    if is_unpaired(record):
        return UNPAIRED_FORMAT
    prompt, chosen = record.get("prompt"), record.get("chosen")
    if isinstance(prompt, list) or (prompt is None and isinstance(chosen, list)):
        return "conversational"
    if prompt is None and isinstance(chosen, str) and HH_HUMAN in chosen and HH_ASSISTANT in chosen:
        return "hh_rlhf"
    if isinstance(prompt, str):
        return "explicit"
    raise InvalidRecord(
        f"cannot tell the format of a row with fields {sorted(record)}",
        "give `prompt`/`chosen`/`rejected` strings (explicit), chat messages (conversational) or HH-RLHF "
        f"transcripts, or set `format` to one of {[name for name in FORMATS if name != 'auto']}",
    )


def normalise_record(record: Any, format: str = "auto") -> PreferenceExample | RankedExample | UnpairedExample:
    """Normalise one raw record in the given format (``"auto"`` detects it from this record alone).

    >>> turn = "\\n\\nHuman: hi\\n\\nAssistant:"
    >>> normalise_record({"chosen": turn + " hello", "rejected": turn + " go"})
    PreferenceExample(prompt='\\n\\nHuman: hi\\n\\nAssistant:', chosen=' hello', rejected=' go')
    """
    if format == "auto":
        format = detect_format(record)
    if format in RANKED_FORMATS:
        from lightpref.data.ranked import NORMALISERS

        if not isinstance(record, dict):
            raise InvalidRecord(f"the row is a {type(record).__name__}, not an object with prompt/completions fields")
        return NORMALISERS[format](record)
    if format == UNPAIRED_FORMAT:
        from lightpref.data.unpaired import normalise_unpaired

        if not isinstance(record, dict):
            raise InvalidRecord(f"the row is a {type(record).__name__}, not an object with prompt/completion/label")
        return normalise_unpaired(record)
    if format not in _NORMALISERS:
        raise ValueError(f"unknown format {format!r}; use one of {list(FORMATS)}")
    if not isinstance(record, dict):
        raise InvalidRecord(f"the row is a {type(record).__name__}, not an object with prompt/chosen/rejected fields")
    example = _NORMALISERS[format](record)
    if example.chosen == example.rejected:
        raise InvalidRecord("`chosen` is identical to `rejected`, so the row states no preference")
    return example if record.get("margin") is None else replace(example, margin=_margin(record["margin"]))


def _margin(value: Any) -> float:
    """A pair's ``margin`` field: a finite number (how much better ``chosen`` is; a reward loss's m)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRecord(f"field `margin` is {value!r}, not a finite number",
                            f"give how much better `chosen` is as a number, leave the field out, or {_SKIP_FIX}")
    return float(value)


def normalise_rows(
    rows: Iterable[tuple[str, Any]], format: str = "auto", skip_invalid: bool = False
) -> NormaliseResult:
    """Normalise ``(location, record)`` rows of one dataset; the format is detected from the first valid row.

    An invalid row raises a ``ValueError`` that starts with its location, or is counted in ``skipped`` when
    ``skip_invalid``.

    >>> result = normalise_rows([("records[0]", {"prompt": "q", "chosen": "a", "rejected": "a"})], skip_invalid=True)
    >>> result.skipped, result.examples
    (1, [])
    """
    result = NormaliseResult()
    for location, example in iter_normalised(rows, format, skip_invalid, result):
        result.examples.append(example)
        result.locations.append(location)
    return result


def iter_normalised(
    rows: Iterable[tuple[str, Any]], format: str, skip_invalid: bool, result: NormaliseResult
) -> Iterator[tuple[str, PreferenceExample]]:
    """:func:`normalise_rows` one row at a time: yields ``(location, example)`` and keeps the detected format and
    the count of skipped rows in ``result`` (its lists are left alone), so a source of any size streams through.

    >>> result = NormaliseResult()
    >>> rows = [("r0", {"prompt": "q", "chosen": "a", "rejected": "a"}), ("r1", {"prompt": "q", "chosen": "a",
    ...         "rejected": "b"})]
    >>> [location for location, _ in iter_normalised(rows, "auto", True, result)], result.skipped, result.format
    (['r1'], 1, 'explicit')
    """
    if format not in FORMATS:
        raise ValueError(unknown_format("format", format))
    result.format = None if format == "auto" else format
    for location, record in rows:
        try:
            example = normalise_record(record, result.format or "auto")
        except InvalidRecord as error:
            if skip_invalid:
                result.skipped += 1
                continue
            raise ValueError(f"{location}: {error}") from None
        if result.format is None:
            result.format = detect_format(record)
        yield location, example


def _string_field(record: dict[str, Any], name: str, format: str) -> str:
    value = record.get(name)
    if value is None:
        raise InvalidRecord(f"field `{name}` is missing ({format} format)", f"add it, or {_SKIP_FIX}")
    if not isinstance(value, str):
        raise InvalidRecord(
            f"field `{name}` must be a string in the {format} format, got {type(value).__name__}",
            f"give a string, set `format` to the data's real format, or {_SKIP_FIX}",
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
            f"check the transcripts, use another `format`, or {_SKIP_FIX}",
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
            f"`rejected` share, or {_SKIP_FIX}",
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
            f"make the completion start with the assistant's reply, or {_SKIP_FIX}",
        )


def chat_messages(value: Any, name: str) -> list[Message]:
    """``value`` checked as a list of chat messages (each with a string ``role`` and ``content``), copied."""
    return _messages(value, name)


def _messages(value: Any, name: str) -> list[Message]:
    if value is None:
        raise InvalidRecord(f"field `{name}` is missing (conversational format)", f"add it, or {_SKIP_FIX}")
    if not isinstance(value, list):
        raise InvalidRecord(f"field `{name}` must be a list of chat messages, got {type(value).__name__}")
    for number, message in enumerate(value, 1):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or not message["role"]:
            raise InvalidRecord(
                f"message {number} of `{name}` is malformed: expected an object with a string `role`, got {message!r}",
                f'write each message as {{"role": "user", "content": "…"}}, or {_SKIP_FIX}',
            )
        if not isinstance(message.get("content"), str):
            raise InvalidRecord(
                f"message {number} of `{name}` has no string `content`: {message!r}",
                f'write each message as {{"role": "user", "content": "…"}}, or {_SKIP_FIX}',
            )
    return [dict(message) for message in value]


_NORMALISERS = {"explicit": _explicit, "conversational": _conversational, "hh_rlhf": _hh_rlhf}
