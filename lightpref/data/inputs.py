"""Where a DataModule's pairs come from: the training and validation sources, checked, and read as source groups.

A split's sources are grouped as the user named them (a file list, a Hub split, in-memory records, each entry of a
mixture); every file or split in a group carries a key that identifies its content (a file's SHA-256, a Hub
dataset's fingerprint), which the cache's fingerprint covers.

>>> inputs = DataInputs(records=[{"prompt": "q", "chosen": "a", "rejected": "b"}])
>>> [(group.name, group.format, len(group.readers)) for group, _ in inputs.groups("train")], inputs.groups("val")
([('records', 'auto', 1)], [])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

from lightpref.batch import PAIRS, RANKED, UNPAIRED
from lightpref.data import sources as data_sources
from lightpref.data.formats import FORMATS, UNPAIRED_FORMAT, Format, InvalidRecord, detect_format
from lightpref.data.mixture import DataSource
from lightpref.data.pipeline import SourceGroup
from lightpref.data.ranked import RANKED_FORMATS
from lightpref.io import file_sha256


class Source(NamedTuple):
    """One file, Hub split or list of records of a split."""

    key: Any  # what identifies its content (the cache's fingerprint covers it)
    rows: Callable[[], Iterator[data_sources.Row]]  # its (location, record) rows, read anew on each call
    size: Callable[[], int | None]  # its row count where that is cheap to know (the progress bar's total)


class DataInputs:
    """The sources of the training and validation splits (the DataModule's arguments of the same names).

    Exactly one training source: ``train_files``, ``hub_dataset``, ``records`` or a mixture of ``sources``;
    validation from ``val_files``, the Hub ``val_split`` or a ``val_fraction`` of the training pairs (checked here,
    applied by the DataModule). Files are checked to exist when this is built.
    """

    def __init__(
        self,
        train_files: str | list[str] | None = None,
        val_files: str | list[str] | None = None,
        hub_dataset: str | None = None,
        hub_config: str | None = None,
        train_split: str = "train",
        val_split: str | None = None,
        records: list[dict[str, Any]] | None = None,
        sources: list[DataSource] | list[Mapping[str, Any]] | None = None,
        format: Format = "auto",
        val_fraction: float = 0.0,
    ) -> None:
        if sum(source is not None for source in (train_files, hub_dataset, records, sources)) != 1:
            raise ValueError("give exactly one training source: `train_files`, `hub_dataset`, `records` or `sources`")
        self.sources = [DataSource(**entry) if isinstance(entry, Mapping) else entry for entry in sources or []]
        for number, entry in enumerate(self.sources):
            entry.check(f"sources[{number}]")
        if sources is not None and not self.sources:
            raise ValueError("`sources` is empty; give at least one source")
        if val_split is not None and hub_dataset is None:
            raise ValueError("`val_split` names a split of `hub_dataset`; set `hub_dataset` or use `val_files`")
        if val_files is not None and val_split is not None:
            raise ValueError("give one validation source: `val_files` or `val_split`, not both")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"`val_fraction` must be in [0, 1), got {val_fraction!r}")
        if val_fraction and (val_files is not None or val_split is not None):
            raise ValueError("`val_fraction` splits the training data when there is no validation source; drop one")
        if format not in FORMATS:
            raise ValueError(f"`format` must be one of {list(FORMATS)}, got {format!r}")
        self.train_paths = data_sources.expand_files(train_files, "train_files")
        self.val_paths = data_sources.expand_files(val_files, "val_files")
        self.source_paths = [data_sources.expand_files(entry.files, f"sources[{number}].files")
                             for number, entry in enumerate(self.sources)]
        self.hub_dataset, self.hub_config = hub_dataset, hub_config
        self.train_split, self.val_split = train_split, val_split
        self.records, self.format = records, format
        self._hub: dict[tuple[str, str | None, str], Any] = {}
        self._digests: dict[tuple[Path, int, int], str] = {}

    def hub_split(self, split: str) -> str | None:
        """The Hub split that ``"train"`` or ``"val"`` reads (``None``: not from the Hub)."""
        return self.train_split if split == "train" else self.val_split

    def groups(self, split: str) -> list[tuple[SourceGroup, list[Source]]]:
        """The sources of a split as the user named them, each with its files' or splits' :class:`Source`."""
        if split == "train" and self.sources:
            groups = []
            for entry, paths in zip(self.sources, self.source_paths, strict=True):
                if entry.hub_dataset is not None:
                    found = [self.hub_source(entry.hub_dataset, entry.hub_config, entry.split)]
                else:
                    found = [self.file_source(path) for path in paths]
                groups.append((source_group(entry.label(), entry.format, found), found))
            return groups
        paths = self.train_paths if split == "train" else self.val_paths
        found: list[Source] = [self.file_source(path) for path in paths]
        name = ", ".join(str(path) for path in paths)
        if split == "train" and self.records is not None:
            records = self.records
            found.append(Source(data_sources.records_digest(records), partial(data_sources.read_records, records),
                                partial(len, records)))
            name = "records"
        hub_split = self.hub_split(split)
        if self.hub_dataset is not None and hub_split is not None:
            found.append(self.hub_source(self.hub_dataset, self.hub_config, hub_split))
            name = f"{self.hub_dataset}:{hub_split}"
        return [(source_group(name, self.format, found), found)] if found else []

    def shape(self, streaming: bool = False) -> str:
        """What the training sources hold (:func:`data_shape`); a streamed Hub split is peeked as a stream."""
        if not streaming:
            return data_shape([group for group, _ in self.groups("train")])
        if self.format != "auto":
            return data_shape([SourceGroup("stream", self.format, [])])
        stream = data_sources.load_hub(self.hub_dataset, self.hub_config, self.train_split, streaming=True)
        return data_shape([SourceGroup("stream", "auto", [lambda: ((self.hub_dataset, row) for row in stream)])])

    def file_source(self, path: Path) -> Source:
        """A file as a source; its key is its SHA-256, computed once while its size and mtime hold."""
        status = path.stat()
        key = (path, status.st_size, status.st_mtime_ns)
        if key not in self._digests:
            self._digests[key] = file_sha256(path)
        return Source(self._digests[key], partial(data_sources.read_file, path), partial(data_sources.count_rows, path))

    def hub_source(self, name: str, config: str | None, split: str) -> Source:
        """A Hub split as a source (loaded once); its key is the name, config, split and the dataset's fingerprint."""
        if (name, config, split) not in self._hub:
            self._hub[name, config, split] = data_sources.load_hub(name, config, split)
        dataset = self._hub[name, config, split]
        key = [name, config, split, getattr(dataset, "_fingerprint", None)]
        return Source(key, partial(data_sources.read_hub, dataset, name, split), partial(len, dataset))


def data_shape(groups: list[SourceGroup]) -> str:
    """:data:`~lightpref.batch.RANKED` or :data:`~lightpref.batch.PAIRS`: from the formats the sources name, or for
    ``auto`` from the first record of the source that can be read as one (the pipeline checks every record)."""
    for group in groups:
        if group.format != "auto":
            return _shape_of(group.format)
        for rows in group.readers:
            for _, record in rows():
                try:
                    return _shape_of(detect_format(record))
                except InvalidRecord:
                    continue
    return PAIRS


def source_group(name: str, format: Format, found: list[Source]) -> SourceGroup:
    """The sources of one group as the tokenising pipeline reads them."""
    return SourceGroup(name, format, [source.rows for source in found], [source.size for source in found])


def _shape_of(format: str) -> str:
    """The shape of data a format gives."""
    return RANKED if format in RANKED_FORMATS else UNPAIRED if format == UNPAIRED_FORMAT else PAIRS
