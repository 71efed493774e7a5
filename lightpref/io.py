"""Small file and model helpers every part of lightpref shares: cache roots, fingerprints, atomic writes, eval mode.

>>> fingerprint({"max_length": 512}) == fingerprint({"max_length": 512}) != fingerprint({"max_length": 256})
True
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

CACHE_ENV = "LIGHTPREF_CACHE"


def cache_root(*parts: str) -> Path:
    """``$LIGHTPREF_CACHE`` (``~`` expanded), else ``~/.cache/lightpref``, joined with ``parts``."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "lightpref"
    return base.joinpath(*parts)


def fingerprint(parts: Mapping[str, Any], length: int = 20) -> str:
    """A short SHA-256 of JSON-able ``parts`` (anything else is hashed by its ``repr``), independent of key order."""
    text = json.dumps(dict(parts), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def file_sha256(path: str | Path, block_size: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes, read in blocks (weights files are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(block_size):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_path(target: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``target`` to write to; renamed onto ``target`` only if the block succeeds.

    Readers see the old file or the complete new one, never a partial one; on error the temporary file is removed.
    The new file gets the usual permissions (``0o666`` less the umask), not ``mkstemp``'s ``0o600``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_text(target: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    with atomic_path(target) as temporary:
        temporary.write_text(text, encoding="utf-8")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block, then back to the mode it had."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
