"""Read raw records, each with its location (file and row), from local files, the Hub or memory.

Every reader yields ``(location, record)`` pairs; the location is what an error message names, e.g.
``"data/train.jsonl, line 3"``. Row numbers in files are 1-based.

>>> list(read_records([{"prompt": "q", "chosen": "a", "rejected": "b"}]))
[('records[0]', {'prompt': 'q', 'chosen': 'a', 'rejected': 'b'})]
"""

from __future__ import annotations

import codecs
import csv
import glob
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

FILE_TYPES = (".jsonl", ".json", ".parquet", ".csv")

Row = tuple[str, Any]


def expand_files(files: str | list[str] | None, parameter: str) -> list[Path]:
    """The paths named by a file parameter (a path, a glob pattern or a list of them), checked to exist.

    >>> expand_files(None, "train_files")
    []
    """
    if files is None:
        return []
    paths: list[Path] = []
    for name in [files] if isinstance(files, str) else files:
        if any(char in name for char in "*?["):
            matches = sorted(glob.glob(str(Path(name).expanduser())))
            if not matches:
                raise FileNotFoundError(f"`{parameter}`: no file matches the pattern {name!r}")
            paths.extend(Path(match) for match in matches)
            continue
        path = Path(name).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"`{parameter}`: the file {str(path)!r} does not exist; check the path")
        paths.append(path)
    for path in paths:
        if path.suffix.lower() not in FILE_TYPES:
            raise ValueError(
                f"`{parameter}`: cannot read {str(path)!r}: unsupported file type {path.suffix!r}; "
                f"use one of {list(FILE_TYPES)}"
            )
    return paths


def read_file(path: Path) -> Iterator[Row]:
    """The records of a ``.jsonl``, ``.json`` (a list of objects, or JSON lines), ``.parquet`` or ``.csv`` file."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _read_json_lines(path)
    elif suffix == ".json" and _first_character(path) == b"[":
        yield from _read_json_array(path)  # the usual .json file: a list, read a record at a time
    elif suffix == ".json":
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(_not_utf8(path, data.count(b"\n", 0, error.start) + 1, error)) from None
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            if "Extra data" not in str(error):
                raise ValueError(f"{path}: not valid JSON ({error}); fix the file") from None
            del text, data
            yield from _read_json_lines(path)
            return
        if not isinstance(records, list):
            raise ValueError(f"{path}: a .json file must hold a list of records, got a {type(records).__name__}")
        for number, record in enumerate(records, 1):
            yield f"{path}, row {number} (1-based)", record
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        number = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):  # a batch at a time: memory stays flat
            for record in batch.to_pylist():
                number += 1
                yield f"{path}, row {number} (1-based)", record
    elif suffix == ".csv":
        reader = csv.DictReader(line for _, line in _text_lines(path))
        for number, record in enumerate(reader, 1):
            yield f"{path}, row {number} (1-based, after the header)", record
    else:
        raise ValueError(f"cannot read {str(path)!r}: unsupported file type {suffix!r}; use one of {list(FILE_TYPES)}")


def count_rows(path: Path) -> int | None:
    """How many records :func:`read_file` will yield, where that is cheap to know without parsing: a JSON-lines
    file's non-blank lines (one pass over its bytes) and a Parquet file's row count (its metadata); ``None`` for
    other files. Progress bars use it as their total.
    """
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open("rb") as stream:
            return sum(1 for line in stream if line.lstrip()[:1] == b"{" or _not_blank(line))  # `{`: not blank
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return None


def _not_blank(line: bytes) -> bool:
    """Whether the JSON-lines reader reads this line (it skips those that are blank as text, Unicode spaces too).

    >>> _not_blank(b'{"a": 1}\\n'), _not_blank(b" \\n"), _not_blank("\\u00a0\\n".encode())
    (True, False, False)
    """
    return bool(line.strip()) and bool(line.decode("utf-8", "replace").strip())


def _first_character(path: Path) -> bytes:
    """The file's first byte that is not ASCII whitespace (``b""`` for a blank file)."""
    with path.open("rb") as stream:
        while block := stream.read(4096):
            stripped = block.lstrip()
            if stripped:
                return stripped[:1]
    return b""


JSON_BLOCK_BYTES = 1 << 20  # bytes read at a time from a .json list: memory stays flat whatever the file's size
JSON_MAX_RECORD_CHARS = 64 << 20  # text after which a value that will not parse is an error, not a cut value


class _JsonText:
    """A file's unparsed text, decoded from UTF-8 a block of bytes at a time, with the line of any position in it."""

    def __init__(self, path: Path, stream: BinaryIO) -> None:
        self.path, self.stream, self.decoder = path, stream, codecs.getincrementaldecoder("utf-8")()
        self.text, self.first_line, self.at_end = "", 1, False

    def more(self, start: int) -> int:
        """Drop the text before ``start``, append the next block; the new index of ``start``'s character."""
        self.first_line += self.text.count("\n", 0, start)
        self.text = self.text[start:]
        block = self.stream.read(JSON_BLOCK_BYTES)
        pending = len(self.decoder.getstate()[0])
        try:
            self.text += self.decoder.decode(block, final=not block)
        except UnicodeDecodeError as error:
            line = self.first_line + self.text.count("\n") + error.object.count(b"\n", 0, error.start)
            raise ValueError(_not_utf8(self.path, line, error)) from None
        self.at_end = not block and not pending
        return 0

    def line(self, index: int) -> int:
        return self.first_line + self.text.count("\n", 0, index)

    def next_character(self, index: int) -> tuple[int, str]:
        """The index and character of the first non-whitespace character from ``index`` on (``""`` at the end)."""
        while True:
            while index < len(self.text) and self.text[index] in " \t\r\n":
                index += 1
            if index < len(self.text) or self.at_end:
                return index, self.text[index : index + 1]
            index = self.more(index)


def _may_go_on(value: Any, rest: str) -> bool:
    """Whether a number decoded at the end of a block may be a cut one: ``1e`` decodes as 1, leaving ``e``.

    >>> _may_go_on(1, "e"), _may_go_on(1.5, "E+"), _may_go_on(1, ", 2"), _may_go_on({"a": 1}, "e")
    (True, True, False, False)
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not rest.lstrip("0123456789.eE+-")


def _read_json_array(path: Path) -> Iterator[Row]:
    """The records of a ``.json`` file that holds one list, decoded one element at a time."""
    decoder = json.JSONDecoder()
    with path.open("rb") as stream:
        source = _JsonText(path, stream)
        index, character = source.next_character(0)
        if character != "[":  # e.g. a form feed before it, which JSON does not allow
            raise ValueError(f"{path}, line {source.line(index)}: not valid JSON (expected '['); fix the file")
        index, number = index + 1, 0
        while True:
            index, character = source.next_character(index)
            if character == "]" and number == 0:
                break
            try:
                record, end = decoder.raw_decode(source.text, index)
                if not source.at_end and (end == len(source.text) or _may_go_on(record, source.text[end:])):
                    raise json.JSONDecodeError("the value may go on", source.text, end)  # e.g. a number cut short
            except json.JSONDecodeError as error:
                if not source.at_end and len(source.text) - index < JSON_MAX_RECORD_CHARS:
                    index = source.more(index)  # a value cut at the end of the block: read on
                    continue
                line = source.line(error.pos)
                raise ValueError(f"{path}, line {line}: not valid JSON ({error.msg}); fix the file") from None
            number += 1
            yield f"{path}, row {number} (1-based)", record
            index, character = source.next_character(end)
            if character != ",":
                break
            index += 1
        if character != "]":
            found = repr(character) if character else "the end of the file"
            raise ValueError(f"{path}, line {source.line(index)}: expected ',' or ']' after row {number}, found "
                             f"{found}; fix the file")
        index, character = source.next_character(index + 1)
        if character:
            raise ValueError(f"{path}, line {source.line(index)}: text after the list of records; fix the file")


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The lines of a UTF-8 text file with their 1-based numbers; bytes that are not UTF-8 name the file and line."""
    with path.open("rb") as stream:
        for number, line in enumerate(stream, 1):
            try:
                yield number, line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(_not_utf8(path, number, error)) from None


def _not_utf8(path: Path, line: int, error: UnicodeDecodeError) -> str:
    bad = error.object[error.start : error.end]
    return (
        f"{path}, line {line}: not UTF-8 text ({error.reason}: byte(s) {bad!r}); re-encode the file as UTF-8 "
        "(e.g. `iconv -f latin1 -t utf-8`) or fix the line"
    )


def _read_json_lines(path: Path) -> Iterator[Row]:
    for number, line in _text_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not valid JSON ({error}); fix or remove the line") from None
        yield f"{path}, line {number}", record


def read_records(records: list[dict[str, Any]]) -> Iterator[Row]:
    """In-memory records, located by their (0-based) list index."""
    for index, record in enumerate(records):
        yield f"records[{index}]", record


def load_hub(name: str, config: str | None, split: str, streaming: bool = False) -> Any:
    """A split of a Hub dataset (``datasets.load_dataset``; downloads on first use, then reads the local cache), or
    with ``streaming`` an ``IterableDataset`` that reads it as it goes."""
    from datasets import load_dataset

    try:
        return load_dataset(name, config, split=split, streaming=streaming)
    except ValueError as error:
        if "split" in str(error).lower():
            message = f"hub dataset {name!r}: no split {split!r} ({error}); set `train_split`/`val_split`"
            raise ValueError(message) from None
        raise


def read_hub(dataset: Any, name: str, split: str) -> Iterator[Row]:
    """The rows of a loaded Hub dataset split."""
    for number, record in enumerate(dataset, 1):
        yield f"hub dataset {name!r} split {split!r}, row {number} (1-based)", record


def records_digest(records: list[dict[str, Any]]) -> str:
    """The SHA-256 of in-memory records' JSON."""
    text = json.dumps(records, sort_keys=True, ensure_ascii=False, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
