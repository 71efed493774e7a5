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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from lightpref.data.example import (
    FORMATS,
    RANKED_FORMATS,
    SKIP_FIX,
    UNPAIRED_FORMAT,
    Format,
    InvalidRecord,
    Message,
    PreferenceExample,
    Prompt,
    unknown_format,
)
from lightpref.data.pair_formats import HH_ASSISTANT, HH_HUMAN, assistant_turns, chat_messages
from lightpref.data.pair_formats import NORMALISERS as PAIR_NORMALISERS

if TYPE_CHECKING:
    from lightpref.data.ranked import RankedExample
    from lightpref.data.unpaired import UnpairedExample

__all__ = [  # the pair, format names and chat checks live in example/pair_formats; these names keep working here
    "FORMATS", "HH_ASSISTANT", "HH_HUMAN", "RANKED_FORMATS", "UNPAIRED_FORMAT", "Format", "InvalidRecord", "Message",
    "NormaliseResult", "PreferenceExample", "Prompt", "assistant_turns", "chat_messages", "detect_format",
    "iter_normalised", "normalise_record", "normalise_rows", "unknown_format",
]


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
    from lightpref.data.ranked import detect_ranked

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
    if format not in PAIR_NORMALISERS:
        raise ValueError(f"unknown format {format!r}; use one of {list(FORMATS)}")
    if not isinstance(record, dict):
        raise InvalidRecord(f"the row is a {type(record).__name__}, not an object with prompt/chosen/rejected fields")
    example = PAIR_NORMALISERS[format](record)
    if example.chosen == example.rejected:
        raise InvalidRecord("`chosen` is identical to `rejected`, so the row states no preference")
    return example if record.get("margin") is None else replace(example, margin=_margin(record["margin"]))


def _margin(value: Any) -> float:
    """A pair's ``margin`` field: a finite number (how much better ``chosen`` is; a reward loss's m)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRecord(f"field `margin` is {value!r}, not a finite number",
                            f"give how much better `chosen` is as a number, leave the field out, or {SKIP_FIX}")
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

