"""What ``--ckpt_path last`` finds, on every process of a run.

- :func:`newest_checkpoint` is what ``--ckpt_path last`` means to ``lightpref``: the newest complete checkpoint of
  the run's root directory, whichever ``version_N`` (one per start, by default) wrote it, whether it is
  ``last.ckpt`` or a periodic one, passing over a live run's and those of another loss or model. If there is none,
  resuming stops with :class:`~lightpref.run.resume.NoCheckpointError` — asking to resume never silently starts
  from step 0.
- :class:`SameCheckpointEverywhere` stops a multi-process run whose processes found different checkpoints.
- :class:`CheckpointPathCLI` gives ``LightningCLI`` these rules for ``--ckpt_path``.

This module sits above :mod:`~lightpref.run.resume` (what a checkpoint records), :mod:`~lightpref.run.checkpointing`
and :mod:`~lightpref.run.directory` (which checkpoints a live run holds), and brings them together.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from lightpref.run.checkpointing import SafeCheckpoints
from lightpref.run.directory import held_by_another_run
from lightpref.run.resume import RECORD_KEY, NoCheckpointError, ResumeMismatchError, check_resume, run_record
from lightpref.run.safe_load import CorruptCheckpointError, UnsafeCheckpointError, validate_checkpoint

SPECIAL_PATHS = ("last", "auto", "best", "hpc", "registry")

# --- which checkpoint ------------------------------------------------------------------------------------------

def checkpoint_directories(trainer: Trainer) -> list[Path]:
    """Where a run rooted at ``trainer.default_root_dir`` keeps checkpoints, for every start of it: each
    ModelCheckpoint's own ``dirpath``, ``<default_root_dir>/checkpoints`` (no logger), and
    ``<logger root>/<version>/checkpoints`` for every version the logger has written."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    directories = [Path(callback.dirpath) for callback in trainer.checkpoint_callbacks
                   if isinstance(callback, ModelCheckpoint) and callback.dirpath]
    directories.append(Path(trainer.default_root_dir) / "checkpoints")
    for logger in trainer.loggers:
        root = getattr(logger, "root_dir", None)
        if root and Path(root).is_dir():
            directories += sorted(path / "checkpoints" for path in Path(root).iterdir() if path.is_dir())
    unique: dict[Path, None] = {}
    for directory in directories:
        unique.setdefault(directory.resolve(), None)
    return list(unique)


def _candidates(directories: Iterable[Path]) -> list[Path]:
    found = []
    for directory in directories:
        if directory.is_dir():
            found += [path for path in directory.glob("*.ckpt") if not path.name.startswith(".")]  # no partials
    return sorted(found, key=lambda path: path.stat().st_mtime_ns, reverse=True)


def newest_checkpoint(trainer: Trainer, record: Mapping[str, Any] | None = None, allowed: Iterable[str] = ()) -> Path:
    """The newest checkpoint of the run that passes :func:`~lightpref.run.safe_load.validate_checkpoint` and records
    the same :func:`run_record` as ``record`` (but for the ``allowed`` parts). Skipped with a message: damaged ones,
    those of a run that is still running (:mod:`lightpref.run.directory`), and those another run trained on the same
    root; when only those are found, the newest one's :class:`ResumeMismatchError`. Raises
    :class:`NoCheckpointError` when there is none."""
    from lightning.pytorch.utilities import rank_zero_info


    directories, other_run = checkpoint_directories(trainer), None
    for path in _candidates(directories):
        folders = [path.parent, *([path.parent.parent] if path.parent.name == "checkpoints" else [])]
        if any(held_by_another_run(folder) for folder in folders):
            rank_zero_info(f"lightpref: not resuming from {path}: it belongs to another run, which is still running")
            continue
        try:
            validate_checkpoint(path)
            if record is not None:
                check_resume(path, saved_record(path), record, allowed)
        except (CorruptCheckpointError, UnsafeCheckpointError, ResumeMismatchError) as error:
            rank_zero_info(f"lightpref: not resuming from {path}: {str(error).split('. ')[0]}")
            other_run = other_run or (error if isinstance(error, ResumeMismatchError) else None)
            continue
        rank_zero_info(f"lightpref: `--ckpt_path last` is {path}, the newest complete checkpoint of this run")
        return path
    if other_run is not None:
        raise other_run
    searched = ", ".join(str(directory) for directory in directories)
    raise NoCheckpointError(
        f"`--ckpt_path last`: no complete checkpoint to resume from in {searched}; give a checkpoint file with "
        "`--ckpt_path PATH`, check `trainer.default_root_dir`, or start a new run without `--ckpt_path`"
    )


def saved_record(path: Path) -> dict[str, Any] | None:
    """The :func:`run_record` a checkpoint file holds (its tensors memory-mapped, not read); ``None`` for a sharded
    directory, whose record is checked when it loads."""
    import torch

    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True).get(RECORD_KEY)


class SameCheckpointEverywhere(Callback):
    """Stops a multi-process run whose processes resolved ``--ckpt_path last``/``auto`` to different checkpoints.

    Every process resolves the option on its own, before the processes can talk; on one filesystem that every
    process sees, with nothing writing to it, they agree. This checks it once they can (the ``setup`` hook runs
    after the process group starts and before any checkpoint is loaded), so a run never continues with some
    processes on one checkpoint and some on another, or some resuming while others start afresh. Every process
    stops together.
    """

    def __init__(self, option: str, path: str | None, missing: str | None = None) -> None:
        self.option, self.path, self.missing = option, path, missing  # missing: why `last` found nothing here

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.world_size <= 1:
            return
        first = trainer.strategy.broadcast(self.path, src=0)
        differs_here = first != self.path
        if trainer.strategy.reduce_boolean_decision(differs_here, all=False):  # on every process: they stop together
            rank = trainer.global_rank
            if differs_here:
                found = f"process 0: {first or 'none'}; process {rank}: {self.path or 'none'}"
            else:
                found = f"process {rank}{'' if rank == 0 else ' and process 0'}: {first or 'none'}; another: another"
            raise ValueError(
                f"`--ckpt_path {self.option}`: the processes found different checkpoints to resume from ({found}); "
                "the run's checkpoint directory must be on a filesystem every process sees, with nothing writing "
                "to it as the run starts; or name the file with `--ckpt_path PATH`"
            )
        if self.missing is not None:  # `last`, and no process found a checkpoint
            raise NoCheckpointError(self.missing)


# --- the command line ------------------------------------------------------------------------------------------

class CheckpointPathCLI:
    """A ``LightningCLI`` mixin for ``--ckpt_path``.

    - A checkpoint named by path is validated before anything is built (a missing, truncated or unsafe file is a
      clear error), and never sets config values: LightningCLI would otherwise read the whole file and apply the
      ``hyper_parameters`` it finds there over the user's own configuration.
    - ``--ckpt_path last`` is the run's newest complete checkpoint (:func:`newest_checkpoint`), or an error;
      ``--ckpt_path auto`` is the same, but starts the run afresh (saying so) when it has no checkpoint yet.
    """

    def _parse_ckpt_path(self) -> None:  # replaces LightningCLI's (see the class docstring)
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path and path not in SPECIAL_PATHS and "://" not in str(path):
            validate_checkpoint(path)

    def _resolve_last(self) -> None:
        from lightning.pytorch.utilities import rank_zero_info


        config = self.config_init[self.subcommand]
        option, missing = config.get("ckpt_path"), None
        allowed = next((c.allow_resume_changes for c in self.trainer.callbacks if isinstance(c, SafeCheckpoints)), [])
        record = run_record(self.model, None)  # the loss and the model: the data is compared when it loads
        if option == "last":
            try:
                config["ckpt_path"] = str(newest_checkpoint(self.trainer, record, allowed))
            except NoCheckpointError as error:
                if self.trainer.world_size <= 1:
                    raise
                config["ckpt_path"], missing = None, str(error)  # every process stops together, once they can talk
        elif option == "auto":  # a job script that both starts and continues a run
            try:
                config["ckpt_path"] = str(newest_checkpoint(self.trainer, record, allowed))
            except NoCheckpointError:
                config["ckpt_path"] = None
                rank_zero_info("lightpref: `--ckpt_path auto`: no checkpoint of this run yet, starting at step 0")
        if option in ("last", "auto"):  # each process resolved it alone: check they agree before anything loads
            self.trainer.callbacks.append(SameCheckpointEverywhere(option, config["ckpt_path"], missing))

    def before_fit(self) -> None:
        self._resolve_last()

    def before_validate(self) -> None:
        self._resolve_last()

    def before_test(self) -> None:
        self._resolve_last()
