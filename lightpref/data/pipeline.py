"""Tokenise a split's sources into one Arrow file, a chunk at a time, on several processes, in bounded memory.

Rows are read and normalised one at a time (:func:`~lightpref.data.formats.iter_normalised`), grouped into chunks of
``CHUNK_PAIRS`` examples, tokenised a chunk per tokenizer call (:func:`~lightpref.data.tokenize.tokenize_pairs`) and
each chunk's kept pairs appended to the file as one Arrow record batch. At most ``2 * num_proc`` chunks are in flight,
so memory does not grow with the data. Chunks are cut from the input alone and written in input order, so the file
is byte-identical whatever the number of processes. An error names the row's location, as on one process.

>>> from lightpref.data.formats import PreferenceExample
>>> from lightpref.testing import tiny_tokenizer
>>> job = TokenizeJob(tiny_tokenizer(), max_length=16, max_prompt_length=8)
>>> batch, counts = tokenize_chunk(job, [("r0", PreferenceExample("Hi", " yes", " no"))])
>>> batch.num_rows, batch.schema.names, counts["pairs"]
(1, ['prompt_ids', 'chosen_ids', 'rejected_ids', 'margin'], 1)
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from lightpref.data.collate import MARGIN_COLUMN, VIEW_COLUMN
from lightpref.data.formats import NormaliseResult, PreferenceExample, iter_normalised
from lightpref.data.groups import GROUP_SCHEMA, checked_shape, groups_record_batch, tokenize_groups
from lightpref.data.sources import Row
from lightpref.data.tokenize import PairError, TokenizeStats, tokenize_pairs
from lightpref.data.unpaired import UNPAIRED_SCHEMA, tokenize_unpaired, unpaired_record_batch
from lightpref.data.workers import die_with_parent

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lightpref.views import PromptView

CHUNK_PAIRS = 1000  # examples per tokenizer call and per Arrow record batch; part of the cache's byte layout
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


def tokenize_chunk(job: TokenizeJob, chunk: Chunk) -> tuple[pa.RecordBatch, dict[str, int]]:
    """The kept pairs of a chunk as one record batch, and the chunk's counts; an error names the row's location."""
    stats = TokenizeStats()
    examples = checked_shape(chunk, job.ranked, job.unpaired)
    if job.unpaired:
        try:
            rows = tokenize_unpaired(examples, job.tokenizer, job.max_length, job.max_prompt_length, stats)
        except PairError as error:
            raise ValueError(f"{chunk[error.index][0]}: {error}") from None
        return unpaired_record_batch([row for row in rows if row is not None]), stats.as_dict()
    if job.ranked:
        try:
            groups = tokenize_groups(examples, job.tokenizer, job.max_length, job.max_prompt_length, stats)
        except PairError as error:
            raise ValueError(f"{chunk[error.index][0]}: {error}") from None
        return groups_record_batch([group for group in groups if group is not None]), stats.as_dict()
    try:
        pairs = tokenize_pairs(examples, job.tokenizer, job.max_length, job.max_prompt_length, job.views, stats)
    except PairError as error:
        raise ValueError(f"{chunk[error.index][0]}: {error}") from None
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


def chunked(rows: Iterable[Any], size: int = CHUNK_PAIRS) -> Iterator[list[Any]]:
    """Consecutive lists of ``size`` items (the last may be shorter).

    >>> list(chunked(range(5), 2))
    [[0, 1], [2, 3], [4]]
    """
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


def default_num_proc() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_WORKER_JOB: TokenizeJob | None = None
TOKENIZERS_PARALLELISM = "TOKENIZERS_PARALLELISM"


def _start_worker(job: TokenizeJob, parent: int) -> None:
    global _WORKER_JOB
    die_with_parent(parent)
    for name in ("SIGINT", "SIGTERM"):  # the parent handles these and stops the workers itself
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    os.environ[TOKENIZERS_PARALLELISM] = "false"  # one thread per worker: the processes are the parallelism
    _WORKER_JOB = job


def _tokenize_in_worker(chunk: Chunk) -> tuple[pa.RecordBatch, dict[str, int]]:
    assert _WORKER_JOB is not None, "the worker was started without a job"
    return tokenize_chunk(_WORKER_JOB, chunk)


class ChunkTokenizer:
    """Tokenises chunks in order, in this process or on ``num_proc`` worker processes (started at the second chunk,
    so small data never pays for them). Use as a context manager; the workers stop on exit. A worker that dies
    (killed, e.g. out of memory) is an error, never a hang. The workers end with this process however it ends (on
    Linux; see :func:`~lightpref.data.workers.die_with_parent`) and ignore SIGINT and SIGTERM, which this process
    handles."""

    def __init__(self, job: TokenizeJob, num_proc: int = 1) -> None:
        self.job, self.num_proc = job, num_proc
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> ChunkTokenizer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pool is not None:
            try:
                # the chunks being tokenised finish (killing a worker could cut a result it is sending in half, and
                # leave the pool waiting for the rest forever); the others are cancelled
                self._pool.shutdown(wait=True, cancel_futures=True)
            finally:
                self._pool = None
                gc.unfreeze()

    def map(self, chunks: Iterable[Chunk]) -> Iterator[tuple[pa.RecordBatch, dict[str, int]]]:
        """Each chunk's record batch and counts, in the order of ``chunks``."""
        iterator = iter(chunks)
        first = next(iterator, None)
        if first is None:
            return
        second = next(iterator, None)
        if second is None or self.num_proc <= 1:
            head = [first] if second is None else [first, second]
            yield from (tokenize_chunk(self.job, chunk) for chunk in chain(head, iterator))
            return
        pool = self._start_pool()
        pending: deque[Future] = deque()
        for chunk in chain([first, second], iterator):
            pending.append(pool.submit(_tokenize_in_worker, chunk))
            if len(pending) >= 2 * self.num_proc:  # bounded look-ahead: memory stays flat
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())

    def _start_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # fork starts workers in milliseconds without re-importing; elsewhere fork is unsafe, so spawn.
            context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
            pool = ProcessPoolExecutor(self.num_proc, context, initializer=_start_worker,
                                       initargs=(self.job, os.getpid()))
            previous = os.environ.get(TOKENIZERS_PARALLELISM)
            os.environ[TOKENIZERS_PARALLELISM] = "false"  # set when forking: the tokenizers library then stays quiet
            # Frozen objects are left alone by the garbage collector, in the forked workers and, until the workers
            # stop, in this process too: a full collection here would otherwise write to every page of objects the
            # workers share (~100 MiB of copies, measured), so memory would grow once the first one ran.
            gc.freeze()
            try:
                pool.submit(int).result()  # with fork, every worker starts at the first task
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                gc.unfreeze()
                raise
            finally:
                if previous is None:
                    os.environ.pop(TOKENIZERS_PARALLELISM, None)
                else:
                    os.environ[TOKENIZERS_PARALLELISM] = previous
            self._pool = pool
        return self._pool


def _result(future: Future) -> tuple[pa.RecordBatch, dict[str, int]]:
    try:
        return future.result()
    except BrokenProcessPool as error:
        raise RuntimeError(
            "a tokenising worker process ended unexpectedly (killed, e.g. for lack of memory); lower `num_proc`, "
            "or set `num_proc: 1` to tokenise in this process"
        ) from error


class SplitWriter:
    """Appends record batches to one Arrow stream file (the layout ``datasets.Dataset.from_file`` memory-maps)."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path, self.rows = path, 0
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, schema)

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self._writer.write_batch(batch)
            self.rows += batch.num_rows

    def close(self) -> None:
        self._writer.close()
        self._sink.close()


@dataclass(frozen=True)
class SourceGroup:
    """One source as the user named it (a file list, a Hub split, records): its readers (one per file, each with
    its own detected format), the format to read them in, the name its counts are logged under, and for each reader
    what counts its rows when that is cheap (the progress bar's total; ``None`` when unknown)."""

    name: str
    format: str
    readers: list[Callable[[], Iterable[Row]]]
    sizes: list[Callable[[], int | None]] = field(default_factory=list)


def total_rows(groups: Sequence[SourceGroup]) -> int | None:
    """The rows of every reader of the groups together, or ``None`` when one cannot count its own.

    >>> rows = [lambda: iter([])]
    >>> total_rows([SourceGroup("a", "auto", rows, [lambda: 3]), SourceGroup("b", "auto", rows, [lambda: 4])])
    7
    >>> total_rows([SourceGroup("a", "auto", rows, [lambda: 3]), SourceGroup("b", "auto", rows)]) is None
    True
    """
    if not groups or any(len(group.sizes) != len(group.readers) for group in groups):
        return None
    total = 0
    for size in (size for group in groups for size in group.sizes):
        count = size()
        if count is None:
            return None
        total += count
    return total


def write_split(
    path: Path, groups: Sequence[SourceGroup], tokenizer: ChunkTokenizer, skip_invalid: bool, description: str
) -> dict[str, Any]:
    """Stream every group's rows through normalise → tokenise into the Arrow file ``path``; the split's counts,
    with one entry per group under ``"sources"`` (in order, so each group's pairs are a contiguous run)."""
    totals: dict[str, Any] = {"skipped_invalid": 0, "formats": [], **TokenizeStats().as_dict(), "sources": []}
    total = total_rows(groups)  # counted before anything is written: a file that cannot be read fails here
    writer = SplitWriter(path, tokenizer.job.schema())
    read = [0]  # rows read so far, valid or not (reading runs ahead of writing by the chunks in flight)

    def counted(rows: Iterable[Row]) -> Iterator[Row]:
        for row in rows:
            read[0] += 1
            yield row

    # shown once it takes a while; with a total and an ETA when the rows were counted
    progress = tqdm(desc=f"Tokenising {description}", total=total, unit=" records", delay=2)
    try:
        for group in groups:
            counts: dict[str, Any] = {"name": group.name, "skipped_invalid": 0, "formats": []}
            counts.update(TokenizeStats().as_dict())
            for rows in group.readers:
                result = NormaliseResult()
                examples = iter_normalised(counted(rows()), group.format, skip_invalid, result)
                for batch, chunk_counts in tokenizer.map(chunked(examples, CHUNK_PAIRS)):
                    writer.write(batch)
                    progress.update(read[0] - progress.n)
                    for key, value in chunk_counts.items():
                        counts[key] += value
                progress.update(read[0] - progress.n)  # rows after the last chunk (e.g. invalid ones skipped)
                counts["skipped_invalid"] += result.skipped
                counts["formats"].append(result.format)
            for key, value in counts.items():
                if key != "name":
                    totals[key] += value
            totals["sources"].append(counts)
    finally:
        writer.close()
        progress.close()
    return totals
