"""Normalise ranked records: one prompt with K ≥ 2 completions and a score for each (higher is better, ties allowed).

Two formats, detected like the pair formats (:func:`lightpref.data.formats.detect_format`) or named by ``format``:

- ``ranked``: ``{"prompt": ..., "completions": [c1, ..., cK], "scores": [s1, ..., sK]}``, or ``"ranks"`` instead of
  ``"scores"`` (rank 1 is the best). The prompt is a string with string completions, or chat messages with
  completions given as strings, one assistant message, or lists of messages starting with an assistant turn.
- ``ultrafeedback``: UltraFeedback's raw layout, ``{"instruction": ..., "completions": [{"response": ...,
  "overall_score": ...}, ...]}`` (``prompt`` is read when there is no ``instruction``).

>>> normalise_ranked({"prompt": "2+2?", "completions": [" 4", " 5", " 3"], "ranks": [1, 2, 2]})
RankedExample(prompt='2+2?', completions=[' 4', ' 5', ' 3'], scores=[-1.0, -2.0, -2.0])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lightpref.data.example import RANKED_FORMATS, InvalidRecord, Prompt
from lightpref.data.pair_formats import assistant_turns, chat_messages

__all__ = ["RANKED_FORMATS", "RankedExample", "detect_ranked", "normalise_ranked", "normalise_ultrafeedback"]


@dataclass(frozen=True)
class RankedExample:
    """One normalised ranked group: a prompt, K ≥ 2 completions, and their scores (higher is better)."""

    prompt: Prompt
    completions: list[Prompt]
    scores: list[float]

    @property
    def is_conversational(self) -> bool:
        return isinstance(self.prompt, list)


def detect_ranked(record: dict[str, Any]) -> str | None:
    """``"ultrafeedback"`` or ``"ranked"`` for a record with a ``completions`` list, else ``None``.

    >>> detect_ranked({"instruction": "q", "completions": [{"response": "a", "overall_score": 3}]})
    'ultrafeedback'
    """
    completions = record.get("completions")
    if not isinstance(completions, list):
        return None
    if completions and isinstance(completions[0], dict) and "response" in completions[0]:
        return "ultrafeedback"
    return "ranked"


def _number(value: Any, name: str, position: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRecord(f"{name} {position} is {value!r}, not a finite number",
                            "give every completion a numeric score, or fix or remove the row, or set "
                            "`skip_invalid: true` to skip such rows")
    return float(value)


def _group(prompt: Prompt, completions: list[Prompt], scores: list[float]) -> RankedExample:
    """Check what every ranked format shares: K ≥ 2, one score per completion, some order, no contradiction."""
    if len(completions) < 2:
        raise InvalidRecord(f"the row has {len(completions)} completion(s); a ranked row needs at least 2")
    if len(scores) != len(completions):
        raise InvalidRecord(f"the row has {len(completions)} completions but {len(scores)} scores; give one score "
                            "(or rank) per completion")
    if len(set(scores)) == 1:
        raise InvalidRecord("every completion has the same score, so the row states no preference")
    for first in range(len(completions)):
        for second in range(first + 1, len(completions)):
            if completions[first] == completions[second] and scores[first] != scores[second]:
                raise InvalidRecord(f"completions {first + 1} and {second + 1} are identical but scored "
                                    f"differently ({scores[first]} and {scores[second]})")
    return RankedExample(prompt, completions, scores)


def _completions(record: dict[str, Any], conversational: bool) -> list[Prompt]:
    values = record.get("completions")
    if not isinstance(values, list):
        raise InvalidRecord("field `completions` must be a list of completions (ranked format)")
    completions: list[Prompt] = []
    for position, value in enumerate(values, 1):
        name = f"completions[{position - 1}]"
        if conversational:
            completions.append(assistant_turns(value, name))
        elif not isinstance(value, str) or not value.strip():
            raise InvalidRecord(f"`{name}` must be a non-empty string when the prompt is a string, got {value!r}")
        else:
            completions.append(value)
    return completions


def _prompt(value: Any, name: str) -> Prompt:
    if isinstance(value, list):
        messages = chat_messages(value, name)
        if not messages:
            raise InvalidRecord(f"field `{name}` is an empty list of messages")
        return messages
    if not isinstance(value, str) or not value.strip():
        raise InvalidRecord(f"field `{name}` must be a non-empty string or a list of chat messages, got {value!r}")
    return value


def normalise_ranked(record: dict[str, Any]) -> RankedExample:
    """The ``ranked`` format (see the module docstring)."""
    prompt = _prompt(record.get("prompt"), "prompt")
    completions = _completions(record, isinstance(prompt, list))
    if ("scores" in record) == ("ranks" in record):
        raise InvalidRecord("a ranked row needs exactly one of `scores` (higher is better) and `ranks` (1 is best)")
    name = "score" if "scores" in record else "rank"
    values = record.get(f"{name}s")
    if not isinstance(values, list):
        raise InvalidRecord(f"field `{name}s` must be a list of numbers, got {type(values).__name__}")
    numbers = [_number(value, name, position) for position, value in enumerate(values, 1)]
    return _group(prompt, completions, numbers if name == "score" else [-rank for rank in numbers])


def normalise_ultrafeedback(record: dict[str, Any]) -> RankedExample:
    """UltraFeedback's raw layout: ``instruction`` (or ``prompt``), ``completions[i].response`` and
    ``completions[i].overall_score``."""
    prompt = _prompt(record.get("instruction", record.get("prompt")), "instruction")
    values = record.get("completions")
    if not isinstance(values, list) or not all(isinstance(value, dict) for value in values):
        raise InvalidRecord("field `completions` must be a list of objects with `response` and `overall_score` "
                            "(ultrafeedback format)")
    flat = {"completions": [value.get("response") for value in values]}
    completions = _completions(flat, isinstance(prompt, list))
    scores = [_number(value.get("overall_score"), "overall_score", position)
              for position, value in enumerate(values, 1)]
    return _group(prompt, completions, scores)


NORMALISERS = {"ranked": normalise_ranked, "ultrafeedback": normalise_ultrafeedback}
