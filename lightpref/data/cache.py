"""The tokenisation cache: one directory per fingerprint of the inputs, written atomically.

Layout of ``<cache_dir>/<fingerprint>/``: one Arrow dataset per non-empty split (``train/``, ``val/``, written with
``datasets.Dataset.save_to_disk``) and ``stats.json`` (counts per split), written last. A directory is only ever
created by renaming a complete temporary one into place, so an interrupted write is never read.

>>> fingerprint({"max_length": 512}) == fingerprint({"max_length": 512}) != fingerprint({"max_length": 256})
True
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightpref.data.collate import VIEW_COLUMN

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

CACHE_VERSION = 1  # raise when tokenisation changes, to invalidate every existing cache
STATS_FILE = "stats.json"


def default_cache_dir() -> Path:
    """``$LIGHTPREF_CACHE/data`` if that variable is set, else ``~/.cache/lightpref/data``."""
    root = os.environ.get("LIGHTPREF_CACHE")
    return Path(root).expanduser() / "data" if root else Path.home() / ".cache" / "lightpref" / "data"


def fingerprint(parts: Mapping[str, Any]) -> str:
    """A short hash of JSON-able inputs (anything else is hashed by its ``repr``)."""
    text = json.dumps({"cache_version": CACHE_VERSION, **parts}, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


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


def write_cache(directory: Path, splits: Mapping[str, list[dict[str, list[int]]]], stats: Mapping[str, Any]) -> None:
    """Write each non-empty split's rows and ``stats`` to ``directory`` atomically (temporary directory + rename).

    If another process finished the same directory first, its copy is kept; an incomplete one (not written by
    this code) is replaced.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    if directory.exists() and not is_complete(directory):
        shutil.rmtree(directory)
    temporary = directory.parent / f".{directory.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        temporary.mkdir()
        for name, rows in splits.items():
            if rows:
                rows_to_dataset(rows).save_to_disk(str(temporary / name))
        (temporary / STATS_FILE).write_text(json.dumps(stats, indent=2, sort_keys=True), encoding="utf-8")
        try:
            os.rename(temporary, directory)
        except OSError:
            if not is_complete(directory):
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def read_split(directory: Path, name: str) -> Dataset | None:
    """A cached split (memory-mapped), or ``None`` when it was empty."""
    from datasets import load_from_disk

    path = directory / name
    return load_from_disk(str(path)) if path.is_dir() else None


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
