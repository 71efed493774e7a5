"""Ranked groups on the pair path: tokenise a prompt with K scored completions, store it, collate groups.

A group is tokenised like a pair (:mod:`lightpref.data.tokenize`): the prompt text and each prompt + completion text
jointly, split where the prompt's tokens end, every completion ending in EOS; then truncated by the pair rules
extended to K completions (:func:`truncate_group`). Groups are stored as Arrow rows (``prompt_ids``,
``completion_ids`` a list of K token lists, ``scores``) and collated into a :class:`~lightpref.batch.GroupBatch`.

>>> from lightpref.testing import tiny_tokenizer
>>> from lightpref.data.ranked import RankedExample
>>> tokenizer = tiny_tokenizer()
>>> group = tokenize_groups([RankedExample("Hi", [" yes", " no", " ok"], [2.0, 0.0, 1.0])], tokenizer, 16, 8)[0]
>>> [tokenizer.decode(ids) for ids in group.completion_ids], group.scores
([' yes<|im_end|>', ' no<|im_end|>', ' ok<|im_end|>'], [2.0, 0.0, 1.0])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import torch

from lightpref.batch import GroupBatch
from lightpref.data.padding import pad_rows
from lightpref.data.tokenize import (
    PairError,
    TokenizeStats,
    check_lengths,
    completion_text,
    encode_texts,
    end_completion,
    prompt_as_text,
    split_joint,
    truncate_prompt,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lightpref.data.ranked import RankedExample

GROUP_COLUMNS = ("prompt_ids", "completion_ids", "scores")
GROUP_SCHEMA = pa.schema([("prompt_ids", pa.list_(pa.int32())), ("completion_ids", pa.list_(pa.list_(pa.int32()))),
                          ("scores", pa.list_(pa.float64()))])


@dataclass(frozen=True)
class TokenizedGroup:
    """Token ids of one ranked group: the prompt and each completion (ending in EOS unless truncated), with scores."""

    prompt_ids: list[int]
    completion_ids: list[list[int]]
    scores: list[float]


def truncate_group(
    prompt_ids: list[int], completion_ids: list[list[int]], scores: Sequence[float], max_length: int,
    max_prompt_length: int, bos_token_id: int | None,
) -> tuple[list[int], list[list[int]]] | None:
    """The pair rules for K completions: the prompt cut from its start to ``max_prompt_length``, every completion cut
    from its end to fit ``max_length`` after it; ``None`` when a completion has nothing left or two completions with
    different scores are left identical (their order would be lost). K = 2 is :func:`~lightpref.data.tokenize.
    truncate_pair`.

    >>> truncate_group([1, 2, 3], [[4, 5, 6], [4, 7], [8]], [3, 2, 1], 4, 2, bos_token_id=None)
    ([2, 3], [[4, 5], [4, 7], [8]])
    >>> truncate_group([1, 2, 3], [[4, 5, 6], [4, 7]], [3, 2], 3, 2, bos_token_id=None) is None
    True
    """
    prompt_ids = truncate_prompt(prompt_ids, max_prompt_length, bos_token_id)
    budget = max_length - len(prompt_ids)
    completion_ids = [ids[:budget] for ids in completion_ids]
    if not all(completion_ids):
        return None
    for first, (ids, score) in enumerate(zip(completion_ids, scores, strict=True)):
        if any(ids == other and score != other_score
               for other, other_score in zip(completion_ids[first + 1 :], scores[first + 1 :], strict=True)):
            return None
    return prompt_ids, completion_ids


def tokenize_groups(
    examples: Sequence[RankedExample],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    max_prompt_length: int,
    stats: TokenizeStats | None = None,
) -> list[TokenizedGroup | None]:
    """Tokenise and truncate ranked groups with one tokenizer call, ``None`` for a group truncation leaves without an
    order (counted in ``stats.dropped_by_truncation``; ``stats.pairs`` counts the groups kept). A group that cannot be
    tokenised raises :class:`~lightpref.data.tokenize.PairError` naming its position."""
    check_lengths(max_length, max_prompt_length)
    stats = TokenizeStats() if stats is None else stats
    eos, bos = tokenizer.eos_token_id, tokenizer.bos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token, which ends every completion; set `tokenizer.eos_token`")
    texts: list[tuple[str, list[str]]] = []
    for index, example in enumerate(examples):
        try:
            prompt_text = prompt_as_text(example.prompt, tokenizer)
            texts.append((prompt_text, [completion_text(example, prompt_text, completion, tokenizer, stats)
                                        for completion in example.completions]))
        except ValueError as error:
            raise PairError(index, str(error)) from None
    encoded = iter(encode_texts([text for prompt, completions in texts
                                 for text in (prompt, *(prompt + completion for completion in completions))],
                                tokenizer))
    groups: list[TokenizedGroup | None] = []
    for index, (example, (prompt_text, completions)) in enumerate(zip(examples, texts, strict=True)):
        prompt_ids = next(encoded)
        joints = [next(encoded) for _ in completions]
        if not prompt_ids:
            raise PairError(index, f"the prompt {prompt_text!r} tokenises to no tokens; give a non-empty prompt")
        completion_ids = [end_completion(example, split_joint(prompt_ids, joint, text, tokenizer, stats), eos)
                          for joint, text in zip(joints, completions, strict=True)]
        truncated = truncate_group(prompt_ids, completion_ids, example.scores, max_length, max_prompt_length, bos)
        if truncated is None:
            stats.dropped_by_truncation += 1
            groups.append(None)
            continue
        stats.prompts_truncated += len(truncated[0]) < len(prompt_ids)
        stats.completions_truncated += any(len(cut) < len(ids) for cut, ids in zip(truncated[1], completion_ids,
                                                                                    strict=True))
        stats.pairs += 1
        groups.append(TokenizedGroup(truncated[0], truncated[1], list(example.scores)))
    return groups


def groups_record_batch(groups: Sequence[TokenizedGroup]) -> pa.RecordBatch:
    """Kept groups as one Arrow record batch of :data:`GROUP_SCHEMA`."""
    columns = [[group.prompt_ids for group in groups], [group.completion_ids for group in groups],
               [group.scores for group in groups]]
    return pa.record_batch([pa.array(column, type=field.type) for column, field in zip(columns, GROUP_SCHEMA,
                                                                                        strict=True)],
                           schema=GROUP_SCHEMA)


def group_to_row(group: TokenizedGroup) -> dict[str, Any]:
    """A group as a flat row (the Arrow columns of :data:`GROUP_SCHEMA`)."""
    return {"prompt_ids": group.prompt_ids, "completion_ids": group.completion_ids, "scores": group.scores}


def group_from_row(row: dict[str, Any]) -> TokenizedGroup:
    """The group stored by :func:`group_to_row`."""
    return TokenizedGroup(list(row["prompt_ids"]), [list(ids) for ids in row["completion_ids"]],
                          [float(score) for score in row["scores"]])


def collate_groups(
    groups: Sequence[TokenizedGroup], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> GroupBatch:
    """G groups as a :class:`~lightpref.batch.GroupBatch`: each group's prompt + completion rows, group after group.

    >>> batch = collate_groups([TokenizedGroup([5], [[7], [8, 3]], [1.0, 0.0]), TokenizedGroup([4], [[2], [6], [9]],
    ...                         [0.0, 2.0, 1.0])], pad_token_id=0)
    >>> batch.input_ids.tolist(), batch.group_ids.tolist(), batch.scores.tolist()
    ([[5, 7, 0], [5, 8, 3], [4, 2, 0], [4, 6, 0], [4, 9, 0]], [0, 0, 1, 1, 1], [1.0, 0.0, 0.0, 2.0, 1.0])
    """
    if not groups:
        raise ValueError("cannot collate an empty list of groups")
    rows = [(group.prompt_ids, completion) for group in groups for completion in group.completion_ids]
    main = pad_rows(rows, pad_token_id, pad_to_multiple_of)
    group_ids = torch.tensor([number for number, group in enumerate(groups) for _ in group.completion_ids])
    scores = torch.tensor([score for group in groups for score in group.scores], dtype=torch.float32)
    return GroupBatch(main.input_ids, main.attention_mask, main.completion_mask, group_ids, scores)
