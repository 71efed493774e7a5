"""One chunk of normalised examples tokenised into one Arrow record batch: the unit of work of the tokenising
pipeline (:mod:`lightpref.data.pipeline`), run in this process or on workers (:mod:`lightpref.data.chunk_pool`).

>>> from lightpref.data.formats import PreferenceExample
>>> from lightpref.testing import tiny_tokenizer
>>> job = TokenizeJob(tiny_tokenizer(), max_length=16, max_prompt_length=8)
>>> batch, counts = tokenize_chunk(job, [("r0", PreferenceExample("Hi", " yes", " no"))])
>>> batch.num_rows, batch.schema.names, counts["pairs"]
(1, ['prompt_ids', 'chosen_ids', 'rejected_ids', 'margin'], 1)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from lightpref.data.collate import MARGIN_COLUMN, VIEW_COLUMN
from lightpref.data.example import PreferenceExample
from lightpref.data.groups import GROUP_SCHEMA, groups_record_batch, tokenize_groups
from lightpref.data.ranked import RankedExample
from lightpref.data.tokenize import PairError, TokenizeStats, tokenize_pairs
from lightpref.data.unpaired import UNPAIRED_SCHEMA, UnpairedExample, tokenize_unpaired, unpaired_record_batch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lightpref.views import PromptView

Chunk = list[tuple[str, PreferenceExample]]  # (location, example)
IDS = pa.list_(pa.int32())


@dataclass(frozen=True)
class TokenizeJob:
    """Everything a worker needs to tokenise chunks (sent to each worker process once)."""

    tokenizer: PreTrainedTokenizerBase
    max_length: int
    max_prompt_length: int
    views: Mapping[str, PromptView] = field(default_factory=dict)
    ranked: bool = False  # the records are ranked groups (:mod:`lightpref.data.groups`), not pairs
    unpaired: bool = False  # the records are labelled single completions (:mod:`lightpref.data.unpaired`)

    def schema(self) -> pa.Schema:
        """The Arrow columns of a stored pair (see :func:`lightpref.data.collate.pair_to_row`) or group."""
        if self.unpaired:
            return UNPAIRED_SCHEMA
        if self.ranked:
            return GROUP_SCHEMA
        names = ["prompt_ids", "chosen_ids", "rejected_ids"] + [VIEW_COLUMN + name for name in self.views]
        return pa.schema([(name, IDS) for name in names] + [(MARGIN_COLUMN, pa.float32())])  # null: no margin


@contextmanager
def located(chunk: Chunk) -> Iterator[None]:
    """A :class:`~lightpref.data.tokenize.PairError` raised as a ``ValueError`` starting with its row's location."""
    try:
        yield
    except PairError as error:
        raise ValueError(f"{chunk[error.index][0]}: {error}") from None


def tokenize_chunk(job: TokenizeJob, chunk: Chunk) -> tuple[pa.RecordBatch, dict[str, int]]:
    """The kept pairs of a chunk as one record batch, and the chunk's counts; an error names the row's location."""
    stats = TokenizeStats()
    examples = checked_shape(chunk, job.ranked, job.unpaired)
    if job.unpaired:
        with located(chunk):
            rows = tokenize_unpaired(examples, job.tokenizer, job.max_length, job.max_prompt_length, stats)
        return unpaired_record_batch([row for row in rows if row is not None]), stats.as_dict()
    if job.ranked:
        with located(chunk):
            groups = tokenize_groups(examples, job.tokenizer, job.max_length, job.max_prompt_length, stats)
        return groups_record_batch([group for group in groups if group is not None]), stats.as_dict()
    with located(chunk):
        pairs = tokenize_pairs(examples, job.tokenizer, job.max_length, job.max_prompt_length, job.views, stats)
    kept = [pair for pair in pairs if pair is not None]
    columns = [[pair.prompt_ids for pair in kept], [pair.chosen_ids for pair in kept]]
    columns += [[pair.rejected_ids for pair in kept]]
    columns += [[pair.view_prompt_ids[name] for pair in kept] for name in job.views]
    margins = pa.array([pair.margin for pair in kept], type=pa.float32())
    return pa.record_batch([*(ids_array(column) for column in columns), margins], schema=job.schema()), stats.as_dict()


def ids_array(rows: list[list[int]]) -> pa.ListArray:
    """Lists of token ids as an Arrow ``list<int32>`` array, built from flat numpy buffers (``pa.array`` on Python
    lists is ~15x slower).

    >>> ids_array([[1, 2], [], [3]]).to_pylist()
    [[1, 2], [], [3]]
    """
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, rows), dtype=np.int64, count=len(rows)), out=offsets[1:])
    values = np.fromiter(chain.from_iterable(rows), dtype=np.int32, count=int(offsets[-1]))
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


def checked_shape(chunk: Sequence[tuple[str, Any]], ranked: bool, unpaired: bool = False) -> list[Any]:
    """The examples of ``(location, example)`` rows, each checked to be of the run's shape (all ranked groups, all
    labelled single completions, or all pairs): a mixture is an error naming the first row that differs."""
    wanted = "unpaired" if unpaired else "ranked" if ranked else "pairs"
    names = {"ranked": ("a ranked record", "ranked groups"), "unpaired": ("a labelled single completion",
             "labelled single completions"), "pairs": ("a pair", "pairs")}
    for location, example in chunk:
        found = ("unpaired" if isinstance(example, UnpairedExample) else
                 "ranked" if isinstance(example, RankedExample) else "pairs")
        if found != wanted:
            raise ValueError(f"{location}: {names[found][0]} among {names[wanted][1]}; every source of a run must give "
                             "the same shape (prompt/chosen/rejected pairs, prompt/completions/scores groups, or "
                             "prompt/completion/label examples)")
    return [example for _, example in chunk]
