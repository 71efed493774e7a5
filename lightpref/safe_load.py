"""Reading checkpoint files without running code from them.

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
    """An unpickler that builds only the classes a distributed checkpoint's ``.metadata`` holds (and torch dtypes)."""

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
