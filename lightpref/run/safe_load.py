"""Reading checkpoint files: checked before they are loaded, and without running code from them.

:func:`validate_checkpoint` checks a file's zip CRCs, or a sharded directory's metadata and shard sizes, and raises
:class:`CorruptCheckpointError` naming the path and what to do.

A pickle can name any importable function and call it while it is read, so a file handed to lightpref is never
unpickled freely:

- ``torch.save`` files (checkpoints, a sharded checkpoint's ``meta.pt``) are read with ``torch.load(weights_only=True)``
  (tensors, containers and plain values only); anything else in them raises :class:`UnsafeCheckpointError`.
- A sharded checkpoint's ``.metadata`` (PyTorch distributed checkpointing writes it with plain ``pickle``) is read by
  :class:`MetadataUnpickler`, which builds only the handful of metadata classes that format uses.

>>> import io, os, pickle
>>> class Payload:
...     def __reduce__(self):
...         return (os.system, ("echo never printed",))
>>> MetadataUnpickler(io.BytesIO(pickle.dumps(Payload()))).load()
Traceback (most recent call last):
...
_pickle.UnpicklingError: the file names posix.system, which a checkpoint's metadata never holds
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

_METADATA_CLASSES = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata",
        "BytesStorageMetadata", "ChunkStorageMetadata", "_MEM_FORMAT_ENCODING",
    },
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},  # a layout from its name
    "torch": {"Size"},
    "pathlib": {"PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath"},
    "collections": {"OrderedDict"},
}


SHARDED_METADATA = "meta.pt"  # what Lightning writes beside the shards of a distributed checkpoint


class CorruptCheckpointError(ValueError):
    """A checkpoint that is truncated, damaged or incomplete."""


class UnsafeCheckpointError(ValueError):
    """A checkpoint file that would run code (or build arbitrary objects) if it were read."""


def unsafe(path: Path | str, detail: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"the checkpoint {path} holds Python objects other than tensors and plain values ({detail}); lightpref "
        "reads checkpoints without running code from them, so it does not load this file. Use a checkpoint "
        "written by `lightpref fit`; if you made this file yourself, save only tensors, numbers, strings, lists "
        "and dicts in it"
    )


class MetadataUnpickler(pickle.Unpickler):
    """An unpickler that builds only the classes a distributed checkpoint's ``.metadata`` holds (and torch dtypes).

    Why an unpickler at all: PyTorch writes ``.metadata`` with plain ``pickle`` and has no other reader for it. This one
    refuses every global outside the list below, so a file naming ``os.system`` (or anything else) fails before
    anything is called; lightpref's sharded loads read the file through it too (:class:`SafeFileSystemReader`).
    """

    def find_class(self, module: str, name: str) -> Any:
        if name in _METADATA_CLASSES.get(module, ()):
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"the file names {module}.{name}, which a checkpoint's metadata never holds")


def read_metadata(path: Path | str) -> Metadata:
    """The ``.metadata`` of the distributed checkpoint in directory ``path``, read by :class:`MetadataUnpickler`.

    Raises :class:`UnsafeCheckpointError` when the file names anything else, and lets other read errors (a missing
    or truncated file) through for the caller to report.
    """
    file = Path(path) / ".metadata"
    with file.open("rb") as handle:
        try:
            metadata = MetadataUnpickler(handle).load()
        except pickle.UnpicklingError as error:
            if "which a checkpoint's metadata never holds" in str(error):
                raise unsafe(file, str(error).removeprefix("the file ")) from None
            raise
    if not isinstance(metadata, Metadata):
        raise unsafe(file, f"a {type(metadata).__name__} instead of distributed-checkpoint metadata")
    return metadata


class SafeFileSystemReader(FileSystemReader):
    """``FileSystemReader`` whose metadata is read with :func:`read_metadata` (the shards are tensors already)."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        metadata = read_metadata(self.path)
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def torch_load(path: Path | str, map_location: Any = "cpu", **kwargs: Any) -> Any:
    """``torch.load(path, weights_only=True)``, with :class:`UnsafeCheckpointError` naming the file instead of
    torch's long message when the file holds other objects."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True, **kwargs)
    except pickle.UnpicklingError as error:
        raise unsafe(path, refusal(error)) from None


def refusal(error: pickle.UnpicklingError) -> str:
    """The part of torch's weights-only refusal that says what the file holds, e.g. ``GLOBAL posix.system``."""
    text = str(error)
    found = re.search(r"GLOBAL [\w.]+[\w]", text) or re.search(r"Unsupported operand[^.\n]*", text)
    if found:
        return f"it names {found.group(0)}" if found.group(0).startswith("GLOBAL") else found.group(0)
    paragraphs = [part.strip() for part in text.split("\n\n") if part.strip()]
    return paragraphs[1] if len(paragraphs) > 1 else text.strip()


def _corrupt(path: Path, problem: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f"the checkpoint {path} is unusable: {problem}. It was probably cut short by a crash or a full disk, or "
        "damaged in a copy; resume from an earlier checkpoint instead (`--ckpt_path` with another file in its "
        "directory), or start the run again without `--ckpt_path`"
    )


def validate_checkpoint(path: str | Path) -> None:
    """Raise :class:`CorruptCheckpointError` unless ``path`` is a complete checkpoint file or sharded directory.

    A file must be a zip archive (as ``torch.save`` writes) whose every member passes its CRC check; a directory
    must hold Lightning's ``meta.pt`` and the distributed-checkpoint metadata, with every shard file at least as
    long as the metadata says.
    """
    path = Path(path)
    if path.is_dir():
        _validate_sharded(path)
        return
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; check `--ckpt_path`")
    if not zipfile.is_zipfile(path):
        raise _corrupt(path, "it is not a complete PyTorch archive (its zip directory is missing)")
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise _corrupt(path, f"reading it failed ({error})") from error
    if damaged is not None:
        raise _corrupt(path, f"its member {damaged!r} fails its CRC check")


def _validate_sharded(path: Path) -> None:
    if not (path / SHARDED_METADATA).is_file():
        raise _corrupt(path, f"the directory has no {SHARDED_METADATA} (Lightning writes it last)")
    validate_checkpoint(path / SHARDED_METADATA)
    try:
        metadata = read_metadata(path)  # never plain pickle: the file could name any function to call
    except UnsafeCheckpointError:
        raise
    except Exception as error:  # a missing or truncated .metadata fails inside pickle in many ways
        raise _corrupt(path, f"its distributed-checkpoint metadata cannot be read ({error})") from error
    needed: dict[str, int] = {}
    for info in metadata.storage_data.values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    for name, size in sorted(needed.items()):
        shard = path / name
        if not shard.is_file() or shard.stat().st_size < size:
            actual = shard.stat().st_size if shard.is_file() else "missing"
            raise _corrupt(path, f"the shard {name} should hold {size} bytes but has {actual}")
