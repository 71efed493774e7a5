"""Resuming: what ``--ckpt_path last`` finds, what a checkpoint records about its run, and the command that resumes.

- :func:`newest_checkpoint` is what ``--ckpt_path last`` means to ``lightpref``: the newest complete checkpoint of
  the run's root directory, whichever ``version_N`` (one per start, by default) wrote it, whether it is
  ``last.ckpt`` or a periodic one, passing over a live run's and those of another loss or model. If there is none,
  resuming stops with :class:`NoCheckpointError` — asking to resume never silently starts from step 0.
- :func:`run_record` describes what a run trains — the loss with its arguments, the model, the training data — and
  every checkpoint carries it; :func:`check_resume` refuses to continue a checkpoint with something else, naming
  what changed, unless the user allows that change.
- :func:`continue_after_epoch_end` resumes a checkpoint written as an epoch ended exactly where the run was.
- :func:`resume_command` is the command line that continues a run from a given checkpoint.
- :class:`CheckpointPathCLI` gives ``LightningCLI`` these rules for ``--ckpt_path``.
"""

from __future__ import annotations

import inspect
import shlex
import shutil
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

RECORD_KEY = "lightpref_run"
PARTS = ("loss", "model", "data")
SPECIAL_PATHS = ("last", "auto", "best", "hpc", "registry")


class NoCheckpointError(FileNotFoundError):
    """``--ckpt_path last`` found no complete checkpoint to resume from."""


class ResumeMismatchError(ValueError):
    """A checkpoint was trained with another loss, model or data than the run that would continue it."""


# --- which checkpoint ------------------------------------------------------------------------------------------

def checkpoint_directories(trainer: Any) -> list[Path]:
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


def newest_checkpoint(trainer: Any, record: Mapping[str, Any] | None = None, allowed: Iterable[str] = ()) -> Path:
    """The newest checkpoint of the run that passes :func:`~lightpref.run.safe_load.validate_checkpoint` and records
    the same :func:`run_record` as ``record`` (but for the ``allowed`` parts). Skipped with a message: damaged ones,
    those of a run that is still running (:mod:`lightpref.run.directory`), and those another run trained on the same
    root; when only those are found, the newest one's :class:`ResumeMismatchError`. Raises
    :class:`NoCheckpointError` when there is none."""
    from lightning.pytorch.utilities import rank_zero_info

    from lightpref.run.directory import held_by_another_run
    from lightpref.run.safe_load import CorruptCheckpointError, UnsafeCheckpointError, validate_checkpoint

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


def resume_command(path: str | Path, argv: list[str] | None = None) -> str:
    """The command that continues this run from ``path``: the running ``lightpref`` command line with its
    ``--ckpt_path`` replaced, or just the option when the run was not started from the command line."""
    argv = list(sys.argv if argv is None else argv)
    program = Path(argv[0]) if argv else Path()
    if program.name == "lightpref":
        prefix = ["lightpref"]
    elif program.name == "__main__.py" and program.parent.name == "lightpref":
        python = shutil.which("python")
        same = python is not None and Path(python).resolve() == Path(sys.executable).resolve()
        prefix = ["python" if same else sys.executable, "-m", "lightpref"]
    else:
        return f"--ckpt_path {shlex.quote(str(path))}"
    arguments, skip = [], False
    for argument in argv[1:]:
        if skip:
            skip = False
        elif argument == "--ckpt_path":
            skip = True
        elif not argument.startswith("--ckpt_path="):
            arguments.append(argument)
    return shlex.join([*prefix, *arguments, "--ckpt_path", str(path)])


# --- where in the epoch a checkpoint was written ------------------------------------------------------------

def continue_after_epoch_end(checkpoint: dict[str, Any]) -> None:
    """Make a checkpoint written as an epoch ended resume as the uninterrupted run goes on.

    Lightning writes its default checkpoint in ``on_train_epoch_end`` (the epoch counted processed, not completed),
    also when ``max_steps`` ends a run part-way through an epoch. Its fit loop restarts every step-bounded run as if
    stopped inside that epoch: the sampler gets the next epoch's seed, but the batch counters say the epoch is over,
    so one batch is trained and the epoch after begins. This rewrites the loop counters in place, before Lightning
    reads them: an epoch whose last batch was trained is counted completed, its batch counters back at zero (the
    state between two epochs); an epoch cut short by ``max_steps`` is counted unfinished, so its remaining batches
    follow. Any other checkpoint is left as it is.
    """
    fit_loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    epochs = fit_loop.get("epoch_progress") or {}
    total = epochs.get("total") or {}
    if not total or not total["ready"] == total["started"] == total["processed"] == total["completed"] + 1:
        return  # not written in on_train_epoch_end
    batches = fit_loop.get("epoch_loop.batch_progress") or {}
    if not batches.get("is_last_batch"):
        for counts in epochs.values():
            counts["processed"] -= 1
        return
    for counts in epochs.values():
        counts["completed"] = counts["processed"]
    for key, progress in fit_loop.items():
        if key.startswith("epoch_loop."):
            _zero_current(progress)
    batches["is_last_batch"] = False
    for counts in (fit_loop.get("epoch_loop.val_loop.batch_progress") or {}).values():
        if isinstance(counts, dict):  # validation counts restart with each epoch
            counts.update(dict.fromkeys(counts, 0))


def _zero_current(progress: Any) -> None:
    """Set every ``current`` counter in a Lightning progress state to zero (the ``total`` ones stay)."""
    if not isinstance(progress, dict):
        return
    for key, value in progress.items():
        if key == "current" and isinstance(value, dict):
            value.update(dict.fromkeys(value, 0))
        else:
            _zero_current(value)


# --- what a checkpoint was trained with ------------------------------------------------------------------------

def describe_loss(loss: Any) -> str:
    """A loss as ``class(arguments)``: the ``__init__`` arguments it keeps under their own names, and the losses
    it holds (a mixture's parts).

    >>> from lightpref.losses import build
    >>> describe_loss(build("dpo", beta=0.2))
    'lightpref.losses.dpo.DPO(beta=0.2, label_smoothing=0.0, length_normalized=False)'
    """
    from torch import nn

    cls = type(loss)
    parameters = [name for name, parameter in inspect.signature(cls.__init__).parameters.items()
                  if name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)]
    arguments = [f"{name}={getattr(loss, name)!r}" for name in parameters
                 if hasattr(loss, name) and not isinstance(getattr(loss, name), nn.Module)]
    if isinstance(loss, nn.Module):
        arguments += [f"{name}={describe_loss(child)}" for name, child in loss.named_children()]
    return f"{cls.__module__}.{cls.__qualname__}({', '.join(arguments)})"


def describe_model(module: Any) -> str:
    """The policy's source and load settings and the reference's source (the trained weights themselves are in the
    checkpoint; this names what training started from). How the reference is served — a copy, precomputed
    log-probs — is left out: it does not change the values."""
    source = getattr(module, "source", None)
    reference = getattr(getattr(module, "reference", None), "source", None)
    parts = {
        "policy": source.to_dict() if hasattr(source, "to_dict") else source,
        "reference": reference.display_name() if hasattr(reference, "display_name") else reference,
    }
    return ", ".join(f"{key}={value!r}" for key, value in parts.items() if value is not None)


def describe_data(datamodule: Any) -> str | None:
    """The training pairs, by content: the data cache's fingerprint of the tokenised split (``None`` when the run
    has no lightpref DataModule)."""
    if datamodule is None or not hasattr(datamodule, "split_fingerprint"):
        return None
    files = [str(path) for path in getattr(datamodule, "train_paths", [])]
    return f"{datamodule.split_fingerprint('train')} ({', '.join(files) or 'no files'})"


def run_record(module: Any, datamodule: Any) -> dict[str, str | None]:
    """What every checkpoint of a run records about it (plain strings: readable with ``weights_only=True``)."""
    loss = getattr(module, "loss", None)
    return {"loss": describe_loss(loss) if loss is not None else None, "model": describe_model(module) or None,
            "data": describe_data(datamodule)}


def check_resume(path: Any, saved: Mapping[str, Any] | None, current: Mapping[str, Any],
                 allowed: Iterable[str]) -> None:
    """Raise :class:`ResumeMismatchError` naming each part (loss, model, data) that differs between the record
    ``saved`` in a checkpoint and the ``current`` run, unless the part is ``allowed``. A checkpoint without a record
    (written elsewhere) is not checked."""
    if not saved:
        return
    allowed = set(allowed)
    changes = [
        f"{part}: {saved[part]} -> {current[part]}" for part in PARTS
        if part not in allowed and saved.get(part) is not None and current.get(part) is not None
        and saved[part] != current[part]
    ]
    if changes:
        names = ", ".join(change.split(":")[0] for change in changes)
        raise ResumeMismatchError(
            f"the checkpoint {path} was trained with another {names} than this run ({'; '.join(changes)}). "
            "Resuming would continue it silently with something else: resume with the configuration it was "
            "trained with, start a new run without `--ckpt_path`, or allow the change explicitly with "
            "`--trainer.callbacks+=lightpref.run.checkpointing.SafeCheckpoints "
            f"--trainer.callbacks.allow_resume_changes=[{names}]`"
        )


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
        from lightpref.run.safe_load import validate_checkpoint

        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path and path not in SPECIAL_PATHS and "://" not in str(path):
            validate_checkpoint(path)

    def _resolve_last(self) -> None:
        from lightning.pytorch.utilities import rank_zero_info

        from lightpref.run.checkpointing import SafeCheckpoints

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
            from lightpref.run.checkpointing import SameCheckpointEverywhere

            self.trainer.callbacks.append(SameCheckpointEverywhere(option, config["ckpt_path"], missing))

    def before_fit(self) -> None:
        self._resolve_last()

    def before_validate(self) -> None:
        self._resolve_last()

    def before_test(self) -> None:
        self._resolve_last()
