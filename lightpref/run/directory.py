"""A run owns its directories: two runs started on one root never write into the same ``version_N`` or checkpoint
directory, and ``--ckpt_path last`` never picks a checkpoint that another live run is writing.

- :func:`claim_version` gives a logger whose version is not fixed (Lightning's TensorBoard and CSV loggers with
  ``version: null``) the next ``version_N`` by creating that directory with ``os.mkdir``: it fails when the directory
  exists, so of two runs started together each gets its own, where Lightning's own count of the existing directories
  gives both the same.
- :class:`RunDirectories` holds a lock on each directory the run writes its checkpoints to — its ``version_N``, a
  checkpoint ``dirpath`` given in the config, ``<default_root_dir>/checkpoints`` when there is no logger — from setup
  to the end of the fit, and stops a run whose directory another running process holds, before any model loads. The
  lock is ``flock`` on the directory itself (no file is written); the system releases it when the process ends, even
  with ``kill -9``, so a crashed run never blocks its own resume. On systems without ``fcntl`` (Windows) there are no
  locks, and only the version claim applies.
- :func:`held_by_another_run` tells ``--ckpt_path last`` which directories to pass over.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

_VERSION = re.compile(r"version_(\d+)")


class RunDirectoryInUseError(ValueError):
    """Another running process holds a directory this run would write its checkpoints to."""


def claim_version(logger: Logger) -> Path | None:
    """Create the logger's next ``version_N`` directory atomically and fix its version to it; the directory, or
    ``None`` for a logger whose version is already set or that has no local root directory."""
    root = getattr(logger, "root_dir", None)
    if getattr(logger, "_version", 0) is not None or not root or "://" in str(root):
        return None
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    while True:
        taken = [int(match.group(1)) for path in root.iterdir() if (match := _VERSION.fullmatch(path.name))]
        directory = root / f"version_{max(taken, default=-1) + 1}"
        try:
            directory.mkdir()
        except FileExistsError:  # another run claimed it first: count again
            continue
        logger._version = int(directory.name.removeprefix("version_"))  # what `version=N` would have set
        return directory


def _lock(directory: Path) -> int | None:
    """A descriptor holding an exclusive lock on ``directory``, or ``None`` when another process holds one."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def held_by_another_run(directory: Path) -> bool:
    """Whether a running process (another run, or another start of this one) holds ``directory``."""
    if fcntl is None or not directory.is_dir():
        return False
    descriptor = _lock(directory)
    if descriptor is not None:
        os.close(descriptor)  # closing releases it
    return descriptor is None


def checkpoint_directories(trainer: Trainer) -> list[Path]:
    """The directories this run writes checkpoints to, as Lightning resolves them: each ModelCheckpoint's
    ``dirpath``, else the first logger's ``version_N`` (its ``checkpoints`` folder is inside), else
    ``<default_root_dir>/checkpoints``; and the directory of a SIGTERM checkpoint given its own ``dirpath``."""
    from lightpref.run.checkpointing import SafeCheckpoints

    directories = []
    for callback in trainer.callbacks:
        if isinstance(callback, ModelCheckpoint):
            directories.append(Path(callback.dirpath) if callback.dirpath else _default_directory(trainer))
        elif isinstance(callback, SafeCheckpoints) and callback.dirpath:
            directories.append(Path(callback.dirpath))
    return [directory for directory in dict.fromkeys(path.resolve() for path in directories)
            if "://" not in str(directory)]


def _default_directory(trainer: Trainer) -> Path:
    if not trainer.loggers:
        return Path(trainer.default_root_dir) / "checkpoints"
    logger = trainer.loggers[0]
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name) / version


class RunDirectories(Callback):
    """Holds this run's directories (see the module docstring) from setup to the end of the fit.

    Args:
        held: directories this process already holds (the ``version_N`` it claimed), as ``{path: descriptor}``.
    """

    def __init__(self, held: dict[Path, int] | None = None) -> None:
        self.held = dict(held or {})

    @classmethod
    def claiming(cls, loggers: Iterable[Logger]) -> RunDirectories:
        """Claim the first logger's next ``version_N`` (:func:`claim_version`) and hold it at once."""
        directories = cls()
        for logger in list(loggers)[:1]:
            claimed = claim_version(logger)
            if claimed is not None:
                directories._hold(claimed.resolve())
        return directories

    def _hold(self, directory: Path) -> bool:
        if fcntl is None or directory in self.held:
            return True
        directory.mkdir(parents=True, exist_ok=True)
        descriptor = _lock(directory)
        if descriptor is None:
            return False
        self.held[directory] = descriptor
        return True

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        taken = None
        if trainer.is_global_zero:  # one process of a run holds its directories
            taken = next((directory for directory in checkpoint_directories(trainer)
                          if not any(directory.is_relative_to(held) for held in self.held)
                          and not self._hold(directory)), None)
        if trainer.strategy.reduce_boolean_decision(taken is not None, all=False):
            where = taken or "a directory of this run"
            raise RunDirectoryInUseError(
                f"another lightpref run that is still running writes its checkpoints to {where}; two runs must "
                "not share checkpoint files: give this run its own `trainer.default_root_dir` (or checkpoint "
                "`dirpath`), or wait until the other run ends"
            )

    def release(self) -> None:
        for descriptor in self.held.values():
            os.close(descriptor)
        self.held.clear()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.release()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.release()
