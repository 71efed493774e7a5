"""Tokenise a split's sources into one Arrow file, a chunk at a time, on several processes, in bounded memory.

Rows are read and normalised one at a time (:func:`~lightpref.data.formats.iter_normalised`), grouped into chunks of
``CHUNK_PAIRS`` examples, tokenised a chunk per tokenizer call (:func:`~lightpref.data.tokenize.tokenize_pairs`) and
each chunk's kept pairs appended to the file as one Arrow record batch. At most ``2 * num_proc`` chunks are in flight,
so memory does not grow with the data. Chunks are cut from the input alone and written in input order, so the file
is byte-identical whatever the number of processes. An error names the row's location, as on one process.

The pieces: :mod:`lightpref.data.chunks` tokenises one chunk into one record batch, :mod:`lightpref.data.chunk_pool`
runs chunks on worker processes, and this module streams sources through them into the file.

>>> list(chunked(range(5), 2))
[[0, 1], [2, 3], [4]]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa
from tqdm.auto import tqdm

from lightpref.data.chunk_pool import ChunkTokenizer, default_num_proc
from lightpref.data.chunks import IDS, Chunk, TokenizeJob, ids_array, tokenize_chunk
from lightpref.data.formats import NormaliseResult, iter_normalised
from lightpref.data.sources import Row
from lightpref.data.tokenize import TokenizeStats

__all__ = [  # the chunk and the worker pool live in chunks/chunk_pool; these names keep working here
    "CHUNK_PAIRS", "IDS", "Chunk", "ChunkTokenizer", "SourceGroup", "SplitWriter", "TokenizeJob", "chunked",
    "default_num_proc", "ids_array", "tokenize_chunk", "total_rows", "write_split",
]

CHUNK_PAIRS = 1000  # examples per tokenizer call and per Arrow record batch; part of the cache's byte layout


def chunked(rows: Iterable[Any], size: int = CHUNK_PAIRS) -> Iterator[list[Any]]:
    """Consecutive lists of ``size`` items (the last may be shorter).

    >>> list(chunked(range(5), 2))
    [[0, 1], [2, 3], [4]]
    """
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk



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
