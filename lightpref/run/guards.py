"""``NonFiniteGuard``: an optimiser step whose loss or gradient is NaN/inf is skipped and counted, or stops the run;
a run in which too many steps were skipped stops with an error instead of passing for a trained one.

:class:`~lightpref.training.module.PreferenceModule` adds one with its ``on_nonfinite`` argument (``skip`` by default).
To change the share of skipped steps a run tolerates, give the trainer a guard of your own, which replaces the default::

    lightpref fit ... --trainer.callbacks+=lightpref.run.guards.NonFiniteGuard \\
        --trainer.callbacks.max_skipped_share=0.5
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from torch.optim import Optimizer

ACTIONS = ("skip", "stop")


_INVALID_VALUE_WORDS = {"learning rate": "lr", "epsilon": "eps", "beta parameter": "betas"}


def check_optimizer(factory: Callable[[list[Tensor]], Optimizer] | None, key: str = "model.optimizer") -> None:
    """Build the optimiser once on a dummy parameter, so that a value the optimiser refuses (a negative learning
    rate…) fails at start-up with an error naming its config key, not after the models and data are loaded.

    Only the optimiser's "Invalid …" value checks are reported here; any other failure is left to the real build.
    """
    if factory is None:
        return
    try:
        factory([torch.nn.Parameter(torch.zeros(1))])
        return
    except Exception as error:  # only the optimiser's own value checks are reported here
        message = str(error)
        if not isinstance(error, ValueError) or not message.startswith("Invalid"):
            return  # e.g. an optimiser that needs CUDA parameters: the real build will say what is wrong
        arguments = getattr(factory, "keywords", None) or {}
        names = [name for words, name in _INVALID_VALUE_WORDS.items() if words in message]
        names += [name for name in arguments if name in message.split()]
        where = f"`{key}.init_args.{names[0]}`" if names else f"`{key}`"
        raise ValueError(f"{where}: {message}; fix the value in the config or on the command line") from None


class NonFiniteRunError(FloatingPointError):
    """Too many optimiser steps of a run were skipped as non-finite for its weights to count as trained."""


def _local(tensor: Tensor) -> Tensor:
    """The local shard of an FSDP2 DTensor (each rank checks its own), else the tensor itself."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def any_nonfinite(tensors: list[Tensor], device: torch.device) -> Tensor:
    """A 0-d bool tensor: whether any element of ``tensors`` is NaN or ±inf (no host sync)."""
    flags = [~torch.isfinite(_local(tensor)).all() for tensor in tensors]
    if not flags:
        return torch.zeros((), dtype=torch.bool, device=device)
    return torch.stack([flag.to(device) for flag in flags]).any()


class NonFiniteGuard(Callback):
    """Detect a non-finite loss or gradient before the optimiser step; skip that step (default) or stop.

    Skipping clears the gradients, so the optimiser leaves the weights and its own state unchanged; the step still
    counts (``global_step`` and the learning-rate schedule advance). The number of skipped steps is logged as
    ``nonfinite_steps`` and saved in checkpoints. The decision is all-reduced, so under DDP/FSDP every rank skips
    (or stops) together. With fp16 loss scaling (``16-mixed``) the grad scaler already skips steps whose
    gradients overflow and lowers its scale, so only the loss is checked then.

    Skipping is for the odd bad batch. Once more than ``max_skipped_share`` of the steps so far were skipped (after
    at least ``min_steps`` steps, and at the end of training whatever the count), the run stops with
    :class:`NonFiniteRunError`: it exits non-zero and exports nothing, since its weights are not a trained policy.

    Args:
        action: ``skip`` the step and count it, or ``stop`` with an error naming the step and the batch.
        max_skipped_share: the largest share of skipped optimiser steps a run may have (``1.0`` never stops).
        min_steps: optimiser steps before the share is checked during training (the end of training always is).
    """

    def __init__(self, action: Literal["skip", "stop"] = "skip", max_skipped_share: float = 0.25,
                 min_steps: int = 8) -> None:
        if action not in ACTIONS:
            raise ValueError(f"`model.on_nonfinite` must be one of {list(ACTIONS)}, got {action!r}")
        if not 0.0 <= max_skipped_share <= 1.0:
            raise ValueError(f"`max_skipped_share` of NonFiniteGuard must be between 0 and 1, got {max_skipped_share}")
        if min_steps < 1:
            raise ValueError(f"`min_steps` of NonFiniteGuard must be a positive integer, got {min_steps}")
        self.action = action
        self.max_skipped_share, self.min_steps = max_skipped_share, min_steps
        self.skipped_steps = 0
        self.steps = 0  # optimiser steps checked, skipped or not (restored on resume)
        self._bad_losses: list[tuple[int, Tensor]] = []  # (batch_idx, flag) of the micro-batches of this step
        self._batch_idx = 0

    @property
    def state_key(self) -> str:
        return "NonFiniteGuard"

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Tensor) -> None:
        self._bad_losses.append((self._batch_idx, ~torch.isfinite(loss.detach()).all()))

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        device = pl_module.device
        losses, self._bad_losses = self._bad_losses, []
        loss_flags = torch.stack([flag.to(device) for _, flag in losses]) if losses else torch.zeros(0, device=device)
        parameters = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        grad_flag = any_nonfinite([p.grad for p in parameters], device) if scaler is None else torch.tensor(False)
        flags = torch.stack([loss_flags.any(), grad_flag.to(device)]).float()  # (2,): loss, gradient
        flags = trainer.strategy.reduce(flags, reduce_op="max")  # every rank takes the same decision
        bad_loss, bad_grad = (bool(value) for value in flags.tolist())
        self.steps += 1
        if not (bad_loss or bad_grad):
            return
        if self.action == "stop":
            what = "loss" if bad_loss else "gradient"
            local = [index for index, flag in losses if bool(flag)]
            where = f"batch {local[0]}" if local else f"a batch on another rank (this rank's last: {self._batch_idx})"
            raise FloatingPointError(
                f"non-finite {what} at global step {trainer.global_step} ({where} of epoch "
                f"{trainer.current_epoch}); lower the learning rate, check that batch's data, or set "
                "`model.on_nonfinite: skip` to skip such steps"
            )
        for parameter in parameters:
            parameter.grad = None  # the optimiser skips parameters without a gradient
        self.skipped_steps += 1
        if self.steps >= self.min_steps:
            self._check_share()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Runs before the module's own ``on_train_end`` (its export), so a failed run exports nothing."""
        self._check_share()

    def _check_share(self) -> None:
        if not self.steps or self.skipped_steps / self.steps <= self.max_skipped_share:
            return
        raise NonFiniteRunError(
            f"{self.skipped_steps} of the {self.steps} optimiser steps so far "
            f"({self.skipped_steps / self.steps:.0%}) had a non-finite loss or gradient and were skipped, more than "
            f"the {self.max_skipped_share:.0%} a run may skip; its weights are not a trained policy, so the run stops "
            "and exports nothing. Lower the learning rate, check the data (or `model.dtype`), or allow more with "
            "`--trainer.callbacks+=lightpref.run.guards.NonFiniteGuard --trainer.callbacks.max_skipped_share=0.5`"
        )

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        pl_module.log("nonfinite_steps", float(self.skipped_steps), on_step=True, on_epoch=False, batch_size=1)

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": self.skipped_steps, "steps": self.steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped_steps = int(state_dict.get("skipped_steps", 0))
        self.steps = int(state_dict.get("steps", self.skipped_steps))
