"""Unpaired feedback: one completion of a prompt, labelled desirable (``true``) or undesirable (``false``).

The layout is TRL's: ``{"prompt": ..., "completion": ..., "label": true | false}``, the prompt a string with a string
completion, or chat messages with the completion as a string, one assistant message or a list of messages starting
with an assistant turn. Detected by the ``completion`` field (or a ``label`` without ``chosen``), or named with
``format: unpaired``.

Each example is stored with a mismatched completion beside its own: the completion of the example before it among
the consecutive examples tokenised together (rotated by one, the first taking the last's, as TRL does within each
block of its dataset), which KTO scores under this example's prompt to estimate its KL term. Both are tokenised
with the prompt like a ranked group of two (:mod:`lightpref.data.groups`): the same truncation rules, one stored
row (``prompt_ids``, ``completion_ids`` = [own, mismatched], ``label``), collated into an
:class:`~lightpref.batch.UnpairedBatch`.

>>> normalise_unpaired({"prompt": "2+2?", "completion": " 4", "label": True})
UnpairedExample(prompt='2+2?', completion=' 4', label=True)
>>> [example.completions for example in with_mismatched([UnpairedExample("a", " 1", True),
...                                                      UnpairedExample("b", " 2", False)])]
[[' 1', ' 2'], [' 2', ' 1']]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import torch

from lightpref.batch import UnpairedBatch
from lightpref.data.example import InvalidRecord, Prompt
from lightpref.data.groups import tokenize_groups
from lightpref.data.padding import pad_rows
from lightpref.data.pair_formats import assistant_turns, chat_messages
from lightpref.data.ranked import RankedExample
from lightpref.data.tokenize import TokenizeStats

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

UNPAIRED_SCHEMA = pa.schema([("prompt_ids", pa.list_(pa.int32())), ("completion_ids", pa.list_(pa.list_(pa.int32()))),
                             ("label", pa.bool_())])


@dataclass(frozen=True)
class UnpairedExample:
    """One normalised labelled completion."""

    prompt: Prompt
    completion: Prompt
    label: bool

    @property
    def is_conversational(self) -> bool:
        return isinstance(self.prompt, list)


def is_unpaired(record: dict[str, Any]) -> bool:
    """Whether a record is in the unpaired layout: it has a ``completion``, or a ``label`` and no ``chosen``."""
    return "completion" in record or ("label" in record and "chosen" not in record)


def normalise_unpaired(record: dict[str, Any]) -> UnpairedExample:
    """The ``unpaired`` format (see the module docstring); :class:`InvalidRecord` names the missing or bad field."""
    for name in ("prompt", "completion", "label"):
        if name not in record:
            raise InvalidRecord(f"field `{name}` is missing (unpaired format: prompt, completion, label)")
    label = record["label"]
    if not isinstance(label, bool):
        raise InvalidRecord(f"field `label` must be true or false, got {label!r}",
                            "write `true` for a desirable completion and `false` for an undesirable one, or fix or "
                            "remove the row, or set `skip_invalid: true` to skip such rows")
    prompt = record["prompt"]
    if isinstance(prompt, list):
        messages = chat_messages(prompt, "prompt")
        if not messages:
            raise InvalidRecord("field `prompt` is an empty list of messages")
        return UnpairedExample(messages, assistant_turns(record["completion"], "completion"), label)
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRecord(f"field `prompt` must be a non-empty string or a list of chat messages, got {prompt!r}")
    completion = record["completion"]
    if not isinstance(completion, str) or not completion.strip():
        raise InvalidRecord(f"field `completion` must be a non-empty string when the prompt is a string, got "
                            f"{completion!r}")
    return UnpairedExample(prompt, completion, label)


def with_mismatched(examples: Sequence[UnpairedExample]) -> list[RankedExample]:
    """Each example with the completion of the one before it (the first with the last's), among examples of the same
    kind (string or chat prompts); an example alone of its kind gets its own completion. Each comes as the group
    :func:`~lightpref.data.groups.tokenize_groups` reads: ``completions`` = [own, mismatched], both scored with the
    label."""
    groups: list[RankedExample | None] = [None] * len(examples)
    for conversational in (False, True):
        positions = [n for n, example in enumerate(examples) if example.is_conversational == conversational]
        for previous, position in zip(positions[-1:] + positions[:-1], positions, strict=True):
            example, score = examples[position], float(examples[position].label)
            groups[position] = RankedExample(example.prompt, [example.completion, examples[previous].completion],
                                             [score, score])
    return [group for group in groups if group is not None]


def tokenize_unpaired(
    examples: Sequence[UnpairedExample], tokenizer: PreTrainedTokenizerBase, max_length: int, max_prompt_length: int,
    stats: TokenizeStats | None = None,
) -> list[dict[str, Any] | None]:
    """Stored rows of the examples (``None`` where truncation leaves a completion empty), each with its mismatched
    completion; an example that cannot be tokenised raises :class:`~lightpref.data.tokenize.PairError` naming it."""
    groups = tokenize_groups(with_mismatched(examples), tokenizer, max_length, max_prompt_length, stats)
    return [None if group is None else {"prompt_ids": group.prompt_ids, "completion_ids": group.completion_ids,
                                        "label": example.label}
            for group, example in zip(groups, examples, strict=True)]


def unpaired_record_batch(rows: Sequence[dict[str, Any]]) -> pa.RecordBatch:
    """Stored rows as one Arrow record batch of :data:`UNPAIRED_SCHEMA`."""
    return pa.RecordBatch.from_pylist(list(rows), schema=UNPAIRED_SCHEMA)


def collate_unpaired(rows: Sequence[dict[str, Any]], pad_token_id: int,
                     pad_to_multiple_of: int | None = None) -> UnpairedBatch:
    """B stored rows as an :class:`~lightpref.batch.UnpairedBatch`: example b's rows 2b (its completion) and 2b + 1
    (its mismatched completion).

    >>> batch = collate_unpaired([{"prompt_ids": [5], "completion_ids": [[7], [8, 3]], "label": True}], 0)
    >>> batch.input_ids.tolist(), batch.group_ids.tolist(), batch.scores.tolist()
    ([[5, 7, 0], [5, 8, 3]], [0, 0], [1.0, 1.0])
    """
    if not rows:
        raise ValueError("cannot collate an empty list of examples")
    pairs = [(list(row["prompt_ids"]), list(ids)) for row in rows for ids in row["completion_ids"]]
    main = pad_rows(pairs, pad_token_id, pad_to_multiple_of)
    group_ids = torch.arange(len(rows)).repeat_interleave(2)
    scores = torch.tensor([float(row["label"]) for row in rows], dtype=torch.float32).repeat_interleave(2)
    return UnpairedBatch(main.input_ids, main.attention_mask, main.completion_mask, group_ids, scores)


def label_counts(labels: Sequence[bool]) -> tuple[int, int]:
    """(desirable, undesirable) among stored labels."""
    desirable = sum(bool(label) for label in labels)
    return desirable, len(labels) - desirable
