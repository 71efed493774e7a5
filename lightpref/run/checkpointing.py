"""Checkpoints that are never half-written, a clear error for a damaged one, and one more checkpoint on SIGTERM.

- :class:`AtomicCheckpointIO` writes a checkpoint file next to its target under a hidden name, flushes it to disk
  and renames it into place, so a crash mid-save leaves the previous checkpoint, never a truncated one that looks
  valid. Sharded (directory) checkpoints get the same treatment from :mod:`lightpref.run.strategies`.
- :func:`validate_checkpoint` checks a file's zip CRCs, or a sharded directory's metadata (read without unpickling
  anything but its own classes, :mod:`lightpref.run.safe_load`) and shard sizes, before anything is loaded, and raises
  :class:`CorruptCheckpointError` naming the path and what to do. Checkpoints are then read with
  ``weights_only=True``: a file holding other objects raises :class:`~lightpref.run.safe_load.UnsafeCheckpointError`.
- :class:`SafeCheckpoints` (added by :class:`~lightpref.training.module.PreferenceModule` unless the trainer has one)
  installs the IO above, saves every rank's random state in each checkpoint, and on SIGTERM — what a cluster
  scheduler sends before it kills a job — lets every rank finish the optimiser step in progress, saves
  ``last.ckpt``, prints the command that resumes and exits with status 0. It also records in each checkpoint what
  the run trains, and refuses to resume a fit with something else (:mod:`lightpref.run.resume`).
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightpref.run.resume import PARTS, RECORD_KEY, check_resume, resume_command, run_record
from lightpref.run.safe_load import SHARDED_METADATA as SHARDED_METADATA  # re-exported: where they were first
from lightpref.run.safe_load import CorruptCheckpointError as CorruptCheckpointError
from lightpref.run.safe_load import refusal, unsafe, validate_checkpoint


def staging_path(path: Path) -> Path:
    """Where a checkpoint is written before it is renamed to ``path``: a hidden name that no resume ever picks."""
    return path.with_name(f".{path.name}.partial")


def remove_path(path: Path) -> None:
    """Delete a file or directory if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def replace_atomically(staging: Path, target: Path) -> None:
    """Move a finished checkpoint (file or directory) from ``staging`` onto ``target`` with ``os.replace``.

    A file replaces its target in one step. A directory cannot be renamed onto a non-empty one, so the old
    checkpoint is first renamed aside: at every moment ``target`` is either the old checkpoint, absent, or the new
    one, and never a partial one.
    """
    if target.exists() and (staging.is_dir() or target.is_dir()):
        retired = target.with_name(f".{target.name}.old")
        remove_path(retired)
        os.replace(target, retired)
        os.replace(staging, target)
        remove_path(retired)
    else:
        os.replace(staging, target)
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not open directories
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _is_local(path: Any) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that writes to a hidden file beside the target, fsyncs it and renames it into place,
    and validates a checkpoint before loading it. Remote (``s3://``…) paths use Lightning's own writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(str(path).removeprefix("file://"))
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = staging_path(target)
        remove_path(staging)
        try:
            with staging.open("wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            replace_atomically(staging, target)
        finally:
            remove_path(staging)

    on_load: Callable[[Any, dict[str, Any]], None] | None = None  # set by SafeCheckpoints: the resume check

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        """Validate, then read with ``weights_only=True`` unless the caller passed ``weights_only=False`` itself."""
        if _is_local(path):
            validate_checkpoint(str(path).removeprefix("file://"))
        weights_only = True if weights_only is None else weights_only
        try:
            if map_location is None:
                checkpoint = super().load_checkpoint(path, weights_only=weights_only)
            else:
                checkpoint = super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except pickle.UnpicklingError as error:
            raise unsafe(path, refusal(error)) from None
        if self.on_load is not None:
            self.on_load(path, checkpoint)
        return checkpoint


def _with_extra_state(module: torch.nn.Module | None) -> list[tuple[str, torch.nn.Module]]:
    if module is None:
        return []
    return [(name, sub) for name, sub in module.named_modules()
            if type(sub).get_extra_state is not torch.nn.Module.get_extra_state]


def _extra_states(module: torch.nn.Module | None) -> dict[str, Any]:
    return {name: sub.get_extra_state() for name, sub in _with_extra_state(module)}


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def sigterm_checkpoint_path(trainer: Trainer, dirpath: str | None = None) -> Path:
    """``last.ckpt`` in ``dirpath``, else in the first ModelCheckpoint's directory, else in
    ``<default_root_dir>/checkpoints``: where ``--ckpt_path last`` finds it."""
    if dirpath is None:
        callback = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)
        dirpath = getattr(callback, "dirpath", None) or os.path.join(trainer.default_root_dir, "checkpoints")
    return Path(dirpath) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"


class SafeCheckpoints(Callback):
    """Atomic checkpoint files, a checkpoint then a clean exit on SIGTERM, and no resume with other settings.

    On SIGTERM the handler only records the signal (and forwards it to the processes Lightning launched). At the
    end of the next optimiser step — never between accumulated micro-batches — the ranks agree (one all-reduce
    per step, so a signal seen by any rank stops all of them at the same step), save ``last.ckpt`` (see
    :func:`sigterm_checkpoint_path`) and exit with status 0; ``lightpref fit … --ckpt_path last`` continues the run
    exactly. This replaces Lightning's own SIGTERM handler during training, which exits without saving.

    Every checkpoint also carries each rank's own random state — the torch RNGs and the loss's extra state (such
    as SGDPO's sampling generator), which differ between ranks — while the model state holds rank 0's only; a run
    resumed on the same number of processes gets each rank's back, so it continues with the same draws.

    Every checkpoint also records what the run trains (:func:`lightpref.run.resume.run_record`: the loss and its
    arguments, the model, the training data). Resuming a fit from it with any of them changed stops with
    :class:`~lightpref.run.resume.ResumeMismatchError` naming what changed, unless that part is listed in
    ``allow_resume_changes``.

    Args:
        dirpath: directory of the SIGTERM checkpoint; ``None`` uses the ModelCheckpoint's directory.
        allow_resume_changes: parts (``loss``, ``model``, ``data``) that may differ from the checkpoint's when a fit
            resumes, e.g. to continue a run on new data on purpose.
    """

    def __init__(self, dirpath: str | None = None, allow_resume_changes: list[str] | None = None) -> None:
        unknown = sorted(set(allow_resume_changes or ()) - set(PARTS))
        if unknown:
            raise ValueError(f"`allow_resume_changes` of SafeCheckpoints takes {list(PARTS)}, got {unknown}")
        self.dirpath = dirpath
        self.allow_resume_changes = list(allow_resume_changes or ())
        self._record: dict[str, Any] | None = None
        self.received_sigterm = False
        self._trainer: Trainer | None = None
        self._module: LightningModule | None = None
        self._restored_rng: dict[str, Any] | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._trainer, self._module, self._record = trainer, pl_module, None
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # leave custom and async IO plugins alone
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO):
            trainer.strategy.checkpoint_io.on_load = self._check_resume if stage == "fit" else None

    def run_record(self) -> dict[str, Any]:
        """What this run trains (computed once per run: the data's fingerprint hashes its files)."""
        if self._record is None:
            self._record = run_record(self._module, getattr(self._trainer, "datamodule", None))
        return self._record

    def _check_resume(self, path: Any, checkpoint: dict[str, Any]) -> None:
        check_resume(path, checkpoint.get(RECORD_KEY), self.run_record(), self.allow_resume_changes)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[RECORD_KEY] = self.run_record()

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """Lightning calls this only when a fit resumes, before it restores the loops: sharded checkpoints are checked
        here (files already were), and one written as an epoch ended continues with the next epoch."""
        from lightpref.run.resume import continue_after_epoch_end

        self._check_resume(trainer.ckpt_path, checkpoint)
        continue_after_epoch_end(checkpoint)

    def state_dict(self) -> dict[str, Any]:
        """Every rank's random state (collective: Lightning builds checkpoints on every rank)."""
        if self._trainer is None or self._module is None:
            return {}
        local = {"rng": _rng_state(), "extra": _extra_states(getattr(self._module, "loss", None))}
        if self._trainer.world_size > 1 and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * self._trainer.world_size
            torch.distributed.all_gather_object(gathered, local)
            return {"ranks": gathered}
        return {"ranks": [local]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        ranks = state_dict.get("ranks", [])
        if self._trainer is None or len(ranks) != self._trainer.world_size:
            return  # resumed on another number of processes: rank 0's state (in the model) serves them all
        local = ranks[self._trainer.global_rank]
        loss = getattr(self._module, "loss", None)
        for name, module in _with_extra_state(loss):
            if name in local["extra"]:
                module.set_extra_state(local["extra"][name])
        self._restored_rng = local["rng"]

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self._restored_rng is not None:  # restored here, after the DataLoader has drawn its own seeds
            _set_rng_state(self._restored_rng)
            self._restored_rng = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._trainer, self.received_sigterm = trainer, False
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)  # Lightning restores the original handler at teardown

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        launcher = self._trainer.strategy.launcher if self._trainer is not None else None
        if not self.received_sigterm and launcher is not None and hasattr(launcher, "kill"):
            launcher.kill(signum)  # the ranks this process launched get the signal too
        self.received_sigterm = True

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        accumulating = (batch_idx + 1) % trainer.accumulate_grad_batches != 0
        if accumulating and batch_idx + 1 < trainer.num_training_batches:
            return  # only between optimiser steps: a half-accumulated step cannot be saved
        if not trainer.strategy.reduce_boolean_decision(self.received_sigterm, all=False):
            return
        path = sigterm_checkpoint_path(trainer, self.dirpath)
        trainer.save_checkpoint(path)
        rank_zero_info(f"SIGTERM: saved {path} after step {trainer.global_step}; continue the run with\n"
                       f"  {resume_command(path)}")
        raise SIGTERMException  # a SystemExit with status 0; Lightning tears the run down cleanly


def run_safety_callbacks(trainer: Trainer | None, on_nonfinite: str) -> list[Callback]:
    """A training module's ``configure_callbacks``: the non-finite guard and atomic/SIGTERM checkpoints, unless the
    trainer was given its own."""
    from lightpref.run.guards import NonFiniteGuard

    present = {type(callback) for callback in trainer.callbacks} if trainer is not None else set()
    return [callback for callback in (NonFiniteGuard(on_nonfinite), SafeCheckpoints()) if type(callback) not in present]
