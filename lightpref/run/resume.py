"""Resuming: what a checkpoint records about its run, and the command that resumes.

- :func:`run_record` describes what a run trains — the loss with its arguments, the model, the training data — and
  every checkpoint carries it; :func:`check_resume` refuses to continue a checkpoint with something else, naming
  what changed, unless the user allows that change.
- :func:`continue_after_epoch_end` resumes a checkpoint written as an epoch ended exactly where the run was.
- :func:`resume_command` is the command line that continues a run from a given checkpoint.

What ``--ckpt_path last`` finds is :mod:`lightpref.run.last`'s, which builds on these.
"""

from __future__ import annotations

import inspect
import shlex
import shutil
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning.pytorch import LightningDataModule, LightningModule
    from torch import nn

RECORD_KEY = "lightpref_run"
PARTS = ("loss", "model", "data")


class NoCheckpointError(FileNotFoundError):
    """``--ckpt_path last`` found no complete checkpoint to resume from."""


class ResumeMismatchError(ValueError):
    """A checkpoint was trained with another loss, model or data than the run that would continue it."""


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


def _zero_current(progress: object) -> None:
    """Set every ``current`` counter in a Lightning progress state to zero (the ``total`` ones stay)."""
    if not isinstance(progress, dict):
        return
    for key, value in progress.items():
        if key == "current" and isinstance(value, dict):
            value.update(dict.fromkeys(value, 0))
        else:
            _zero_current(value)


# --- what a checkpoint was trained with ------------------------------------------------------------------------

def describe_loss(loss: nn.Module) -> str:
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


def describe_model(module: LightningModule) -> str:
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


def describe_data(datamodule: LightningDataModule | None) -> str | None:
    """The training pairs, by content: the data cache's fingerprint of the tokenised split (``None`` when the run
    has no lightpref DataModule)."""
    if datamodule is None or not hasattr(datamodule, "split_fingerprint"):
        return None
    files = [str(path) for path in getattr(datamodule, "train_paths", [])]
    return f"{datamodule.split_fingerprint('train')} ({', '.join(files) or 'no files'})"


def run_record(module: LightningModule, datamodule: LightningDataModule | None) -> dict[str, str | None]:
    """What every checkpoint of a run records about it (plain strings: readable with ``weights_only=True``)."""
    loss = getattr(module, "loss", None)
    return {"loss": describe_loss(loss) if loss is not None else None, "model": describe_model(module) or None,
            "data": describe_data(datamodule)}


def check_resume(path: str | Path, saved: Mapping[str, Any] | None, current: Mapping[str, Any],
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
