"""Callbacks that make every ``lightpref fit`` leave a result, however short the run.

``lightpref fit`` (and each round of ``lightpref iterate``) adds each of these unless the config's
``trainer.callbacks`` brings one of the same kind (see :func:`with_run_callbacks`):

- :class:`FinalCheckpoint` — one checkpoint file per run, ``checkpoints/last.ckpt``: written when Lightning's
  default checkpoint would be (after a validation or an epoch), at the end of training and on Ctrl-C, so a 3-step
  run leaves one and disk use stays one checkpoint per run;
- :class:`LogFirstAndLastStep` — the training metrics of the first and the last step are logged whatever
  ``trainer.log_every_n_steps`` is;
- Lightning's ``LearningRateMonitor`` — the learning rate, every logged step;
- :class:`ValidateAtStart` — one validation pass before the first step (logged at step 0) when there is validation
  data, so the change training makes is visible;
- :class:`PolicyTrainMode` — an error-free check that every policy module trains (the frozen reference is in eval
  mode on purpose; Lightning's own warning about eval-mode modules is silenced for it);
- a progress bar without Lightning's ``v_num`` and "Epoch 0/-2" for step-bounded runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import (
    Checkpoint,
    LearningRateMonitor,
    ModelCheckpoint,
    ProgressBar,
    RichProgressBar,
    TQDMProgressBar,
)
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE


class FinalCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` keeping exactly one file, ``last.ckpt``, that always holds the newest state.

    It is overwritten whenever Lightning's default checkpoint would be written (after a validation, or an epoch), at
    the end of training when the last step was not saved yet, and when a one-process run is interrupted with Ctrl-C
    (the state reached so far; SIGTERM is handled by :class:`lightpref.run.checkpointing.SafeCheckpoints`, which writes
    the same file). Resume with ``--ckpt_path last``. It holds the trained weights and the optimiser state (for
    AdamW about 3× the weights in float32), and never the frozen reference.

    Args:
        dirpath: the checkpoint directory; by default ``<log dir>/checkpoints``.
    """

    def __init__(self, dirpath: str | None = None) -> None:
        super().__init__(dirpath=dirpath, filename="last", save_top_k=1, enable_version_counter=False)

    def _save_final(self, trainer: Trainer) -> None:
        if trainer.global_step > 0 and not self._should_skip_saving_checkpoint(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._save_final(trainer)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        # Ctrl-C only: other errors may leave a half-updated state, and a collective save needs every process
        if isinstance(exception, KeyboardInterrupt) and trainer.world_size == 1:
            self._save_final(trainer)


class LogFirstAndLastStep(Callback):
    """Log the training metrics of the first and the last optimiser step, whatever ``log_every_n_steps`` is.

    Lightning logs a step when its number is a multiple of ``trainer.log_every_n_steps``; for those two steps this
    callback sets it to 1 and restores it afterwards. ``log_every_n_steps: 0`` (no step logging) is respected.
    """

    def __init__(self) -> None:
        self.every_n_steps: int | None = None
        self.last_step: int | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.every_n_steps = trainer.log_every_n_steps
        total = trainer.estimated_stepping_batches
        self.last_step = int(total) if math.isfinite(total) else None

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if not self.every_n_steps:
            return
        step = trainer.global_step + 1  # the step this batch contributes to
        trainer.log_every_n_steps = 1 if step in (1, self.last_step) else self.every_n_steps

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.every_n_steps is not None:
            trainer.log_every_n_steps = self.every_n_steps

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.on_train_end(trainer, pl_module)


class ValidateAtStart(Callback):
    """One validation pass before the first training step of a new run, logged at step 0.

    It runs only when there is validation data (``trainer.limit_val_batches: 0`` turns it off) and not when a run
    resumes from a checkpoint.
    """

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.global_step > 0 or trainer.sanity_checking:
            return
        loop = trainer.fit_loop.epoch_loop.val_loop
        first_loop_iter = trainer._logger_connector._first_loop_iter
        trainer.validating = True  # as Lightning's training loop does before it validates
        try:
            loop.run()
        finally:
            trainer.training = True
            trainer._logger_connector._first_loop_iter = first_loop_iter


class PolicyTrainMode(Callback):
    """Warn when a module of the policy is in eval mode as training starts (its dropout would be off).

    The frozen reference is in eval mode by design; this check replaces Lightning's warning, which counts it too.
    """

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        policy = getattr(pl_module, "policy", None)
        if policy is None:
            return
        frozen = [name for name, module in policy.named_modules() if not module.training]
        if frozen:
            rank_zero_warn(f"{len(frozen)} module(s) of the policy are in eval mode as training starts (e.g. "
                           f"{frozen[:3]}); call `.train()` on them in `configure_model`")


def _train_description(trainer: Trainer) -> str:
    epochs = f"/{trainer.max_epochs - 1}" if trainer.max_epochs is not None and trainer.max_epochs > 0 else ""
    return f"Epoch {trainer.current_epoch}{epochs}"


def _without_version(metrics: dict[str, Any]) -> dict[str, Any]:
    metrics.pop("v_num", None)  # the log directory already says the version
    return metrics


def dated_validation(metrics: dict[str, Any], step: int, validated_at: int | None) -> dict[str, Any]:
    """Validation metrics measured at an earlier step than ``step`` named with that step, so a bar never passes
    them off as current.

    >>> dated_validation({"loss": 0.5, "val/loss": 0.69}, step=3, validated_at=0)
    {'loss': 0.5, 'val/loss (step 0)': 0.69}
    """
    if validated_at is None or validated_at == step:
        return metrics
    return {f"{key} (step {validated_at})" if key.startswith("val/") else key: value for key, value in metrics.items()}


class _DatedValidation(ProgressBar):
    """A progress bar that remembers the step of the latest validation (see :func:`dated_validation`)."""

    validated_at: int | None = None

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not trainer.sanity_checking:
            self.validated_at = trainer.global_step

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        metrics = _without_version(super().get_metrics(trainer, pl_module))
        return dated_validation(metrics, trainer.global_step, self.validated_at)


class RunProgressBar(_DatedValidation, RichProgressBar):
    """Lightning's rich progress bar without ``v_num``; "Epoch 0", not "Epoch 0/-2", when steps bound the run;
    validation metrics from an earlier step named with it (``val/loss (step 0)``)."""

    def _get_train_description(self, current_epoch: int) -> str:
        description = _train_description(self.trainer)
        return f"{description:{len(self.validation_description)}}"


class RunTextProgressBar(_DatedValidation, TQDMProgressBar):
    """Lightning's tqdm progress bar without ``v_num``, validation metrics dated as in :class:`RunProgressBar` (used
    when ``rich`` is not installed)."""


def with_run_callbacks(
    given: Sequence[Callback], checkpointing: bool = True, progress_bar: bool = True, logging: bool = True
) -> list[Callback]:
    """``given`` plus each run callback of a kind ``given`` lacks, in the order they must run."""

    def has(kind: type) -> bool:
        return any(isinstance(callback, kind) for callback in given)

    first: list[Callback] = []
    if logging and not has(LogFirstAndLastStep):
        first.append(LogFirstAndLastStep())  # before any LearningRateMonitor: it decides which steps log
    last: list[Callback] = []
    if logging and not has(LearningRateMonitor):
        last.append(LearningRateMonitor(logging_interval="step"))
    if not has(PolicyTrainMode):
        last.append(PolicyTrainMode())
    if not has(ValidateAtStart):
        last.append(ValidateAtStart())
    if checkpointing and not has(Checkpoint):
        last.append(FinalCheckpoint())
    if progress_bar and not has(ProgressBar):
        last.append(RunProgressBar() if _RICH_AVAILABLE else RunTextProgressBar())
    return [*first, *given, *last]
