"""Tokenise chunks in order, in this process or on a pool of worker processes that never outlive it.

:class:`ChunkTokenizer` is what :func:`lightpref.data.pipeline.write_split` feeds chunks through; each chunk is
tokenised by :func:`lightpref.data.chunks.tokenize_chunk`, so the output is the same whatever the number of processes.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import chain

import pyarrow as pa

from lightpref.data.chunks import Chunk, TokenizeJob, tokenize_chunk
from lightpref.data.workers import die_with_parent


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
