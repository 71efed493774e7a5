"""A normalised preference pair, the names of the record formats, and the error a row that cannot be read raises.

Every other data module builds on these: :mod:`lightpref.data.pair_formats` reads the three pair formats,
:mod:`lightpref.data.ranked` and :mod:`lightpref.data.unpaired` the others, and :mod:`lightpref.data.formats` picks one.

>>> PreferenceExample("2+2?", " 4", " 5", margin=1.0)
PreferenceExample(prompt='2+2?', chosen=' 4', rejected=' 5', margin=1.0)
>>> str(InvalidRecord("field `prompt` is empty"))
'field `prompt` is empty; fix or remove the row, or set `skip_invalid: true` to skip such rows'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

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


SKIP_FIX = "fix or remove the row, or set `skip_invalid: true` to skip such rows"


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

    def __init__(self, problem: str, fix: str = SKIP_FIX) -> None:
        super().__init__(f"{problem}; {fix}")
        self.problem = problem
        self.fix = fix
