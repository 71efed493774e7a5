"""The tokenisation cache: one directory per fingerprint of the inputs, written atomically.

Layout of ``<cache_dir>/<fingerprint>/``: one Arrow stream file per split (``train.arrow``, ``val.arrow``, appended a
chunk at a time by :mod:`lightpref.data.pipeline` and memory-mapped by ``datasets.Dataset.from_file``) and
``stats.json`` (counts per split and per source), written last. A directory is only ever created by renaming a
complete temporary one into place, so an interrupted write is never read. A temporary directory is named after the
process writing it (``.<fingerprint>.tmp-<pid>-<random>``) and holds a lock while it is written; one left by a killed
process is removed by the next write into the same ``cache_dir``, one that a live process is writing is left alone.
SIGTERM while writing stops it (status 143) with one line saying so, and removes the temporary directory.

>>> fingerprint({"max_length": 512}) == fingerprint({"max_length": 512}) != fingerprint({"max_length": 256})
True
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from lightpref import io

try:
    import fcntl
except ImportError:  # Windows: a temporary directory is live while the process named in it runs
    fcntl = None  # type: ignore[assignment]
from lightpref.data.collate import VIEW_COLUMN

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

CACHE_VERSION = 3  # raise when tokenisation changes, to invalidate every existing cache (3: pair margins)
STATS_FILE = "stats.json"


def default_cache_dir() -> Path:
    """``$LIGHTPREF_CACHE/data`` if that variable is set, else ``~/.cache/lightpref/data``."""
    return io.cache_root("data")


def fingerprint(parts: Mapping[str, Any]) -> str:
    """A short hash of JSON-able inputs (anything else is hashed by its ``repr``)."""
    return io.fingerprint({"cache_version": CACHE_VERSION, **parts})


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """What identifies a tokenizer's output: its name, vocabulary, chat template, special tokens and pipeline."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = backend.to_str()
    else:
        definition = json.dumps(sorted(tokenizer.get_vocab().items()))
    return {
        "class": type(tokenizer).__name__,
        "name_or_path": str(getattr(tokenizer, "name_or_path", "")),
        "vocab_size": len(tokenizer),
        "chat_template": getattr(tokenizer, "chat_template", None),
        "special_ids": {
            "bos": tokenizer.bos_token_id,
            "eos": tokenizer.eos_token_id,
            "pad": tokenizer.pad_token_id,
            "unk": tokenizer.unk_token_id,
        },
        "definition": hashlib.sha256(definition.encode("utf-8")).hexdigest(),
        "probe": list(tokenizer("Hello, world!", add_special_tokens=True)["input_ids"]),
    }


def is_complete(directory: Path) -> bool:
    """Whether a cache directory was fully written."""
    return (directory / STATS_FILE).is_file()


@contextmanager
def writing(directory: Path) -> Iterator[Path]:
    """A temporary directory to write a cache into, renamed to ``directory`` when the block succeeds.

    If another process finished the same directory first, its copy is kept; an incomplete one (not written by
    this code) is replaced. On error the temporary directory is removed.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(directory.parent)
    if directory.exists() and not is_complete(directory):
        shutil.rmtree(directory)
    temporary = directory.parent / f".{directory.name}{TEMPORARY_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        temporary.mkdir()
        with _locked(temporary), stopping_on_sigterm():
            yield temporary
        if not is_complete(temporary):
            raise RuntimeError(f"the cache written to {temporary} has no {STATS_FILE}")
        try:
            os.rename(temporary, directory)
        except OSError:
            if not is_complete(directory):
                raise
    except Terminated:
        shutil.rmtree(temporary, ignore_errors=True)
        print(f"lightpref: tokenising was stopped (SIGTERM); nothing was cached in {directory.parent}; rerun the "
              "same command to tokenise again", file=sys.stderr, flush=True)
        raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


TEMPORARY_MARK = ".tmp-"  # .<fingerprint>.tmp-<pid>-<random>: a cache directory being written
LOCK_FILE = ".writing"


class Terminated(SystemExit):
    """SIGTERM arrived while a cache was written (a ``SystemExit`` with status 143, as a process ended by SIGTERM)."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


@contextmanager
def stopping_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (once) so that the block can clean up; the previous
    handler is restored after. Only the main thread can handle signals: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if not raised:  # a second SIGTERM must not interrupt the clean-up of the first
            raised.append(signum)
            raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _locked(temporary: Path) -> Iterator[None]:
    """Hold a lock on ``temporary/.writing`` while the block runs (released by the system if the process dies);
    the lock file is gone afterwards, so it never reaches the cache."""
    if fcntl is None:
        yield
        return
    lock = temporary / LOCK_FILE
    descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(descriptor)


def remove_stale(cache_dir: Path) -> list[Path]:
    """Remove the temporary directories in ``cache_dir`` that no live process is writing (left by a killed
    process); returns them. One is live while a process holds its lock (or, without a lock file, while the
    process named in it runs); this process's own are never touched."""
    removed = []
    for path in cache_dir.glob(f".*{TEMPORARY_MARK}*"):
        pid = _writer_pid(path.name)
        if pid is None or pid == os.getpid() or not path.is_dir() or _is_live(path, pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _writer_pid(name: str) -> int | None:
    """The pid in a temporary directory's name, or ``None`` when the name is not one.

    >>> _writer_pid(".ab12.tmp-4242-0f0f0f0f"), _writer_pid(".ab12.tmp-x-1")
    (4242, None)
    """
    pid = name.rpartition(TEMPORARY_MARK)[2].partition("-")[0]
    return int(pid) if pid.isdigit() else None


def _is_live(path: Path, pid: int) -> bool:
    try:
        descriptor = os.open(path / LOCK_FILE, os.O_RDWR)
    except FileNotFoundError:  # written by an older lightpref, or between lock and rename: ask about the process
        return _process_runs(pid)
    except OSError:
        return True
    try:
        if fcntl is None:
            return _process_runs(pid)
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True  # held: a live process is writing it
    finally:
        os.close(descriptor)
    return False


def _process_runs(pid: int) -> bool:
    if sys.platform == "win32":
        return True  # os.kill(pid, 0) would stop the process there; leave its directory
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # e.g. another user's process
    return True


def write_stats(directory: Path, stats: Mapping[str, Any]) -> None:
    """Write the counts of a cache (last: their presence marks the cache complete)."""
    (directory / STATS_FILE).write_text(json.dumps(stats, indent=2, sort_keys=True), encoding="utf-8")


def split_path(directory: Path, name: str) -> Path:
    """The Arrow file of a split."""
    return directory / f"{name}.arrow"


def read_split(directory: Path, name: str) -> Dataset | None:
    """A cached split, memory-mapped (nothing is loaded whole), or ``None`` when it holds no pairs."""
    from datasets import Dataset

    path = split_path(directory, name)
    if not path.is_file():
        return None
    dataset = Dataset.from_file(str(path))
    return dataset if len(dataset) else None


def read_stats(directory: Path) -> dict[str, Any]:
    """The counts written with a cache."""
    return json.loads((directory / STATS_FILE).read_text(encoding="utf-8"))


def rows_to_dataset(rows: list[dict[str, list[int]]]) -> Dataset:
    """Rows of token ids as an Arrow dataset of int32 lists."""
    from datasets import Dataset, Features, List, Value

    columns = list(rows[0])
    for row in rows:
        if list(row) != columns:
            raise ValueError(f"rows must share their columns, got {columns} and {list(row)}")
    features = Features({column: List(Value("int32")) for column in columns})
    return Dataset.from_dict({column: [row[column] for row in rows] for column in columns}, features=features)


def view_columns(dataset: Dataset) -> list[str]:
    """The view names stored in a cached split."""
    return [column[len(VIEW_COLUMN) :] for column in dataset.column_names if column.startswith(VIEW_COLUMN)]
