"""The tokenisation cache: one directory per fingerprint of the inputs, written atomically.

Layout of ``<cache_dir>/<fingerprint>/``: one Arrow stream file per split (``train.arrow``, ``val.arrow``, appended a
chunk at a time by :mod:`lightpref.data.pipeline` and memory-mapped by ``datasets.Dataset.from_file``) and
``stats.json`` (counts per split and per source), written last. A directory is only ever created by renaming a
complete temporary one into place, so an interrupted write is never read.

>>> fingerprint({"max_length": 512}) == fingerprint({"max_length": 512}) != fingerprint({"max_length": 256})
True
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightpref import io
from lightpref.data.collate import VIEW_COLUMN

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

CACHE_VERSION = 2  # raise when tokenisation changes, to invalidate every existing cache
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
    if directory.exists() and not is_complete(directory):
        shutil.rmtree(directory)
    temporary = directory.parent / f".{directory.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        temporary.mkdir()
        yield temporary
        if not is_complete(temporary):
            raise RuntimeError(f"the cache written to {temporary} has no {STATS_FILE}")
        try:
            os.rename(temporary, directory)
        except OSError:
            if not is_complete(directory):
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


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
