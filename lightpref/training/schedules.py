"""Learning-rate schedules: linear warm-up, then cosine or linear decay, stepped once per optimiser step.

``total_steps`` may be left out: :class:`~lightpref.training.module.PreferenceModule` fills it from the trainer's
estimate of the run's optimiser steps before the first step (:meth:`WarmupDecay.set_total_steps`), and the first step's
learning rate is computed again then, so a fractional warm-up starts at 0 like any other.

transformers' ``get_cosine_schedule_with_warmup`` and torch's ``SequentialLR(LinearLR, CosineAnnealingLR)`` compute
the same curves but need the step count when they are built, which a config cannot give before the trainer exists;
these classes are a ``LambdaLR`` whose step count can come later.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

if TYPE_CHECKING:
    from lightning.pytorch.utilities.types import LRScheduler, OptimizerLRScheduler


class WarmupDecay(LambdaLR):
    """Linear warm-up from 0, then :meth:`_decay` of the progress to ``min_lr_ratio`` (subclasses pick the curve)."""

    def __init__(self, optimizer: Optimizer, warmup_steps: int | float = 0.1, total_steps: int | None = None,
                 min_lr_ratio: float = 0.0) -> None:
        if warmup_steps < 0 or (isinstance(warmup_steps, float) and warmup_steps >= 1):
            raise ValueError(
                f"`warmup_steps` must be a step count ≥ 0 or a fraction of the run in [0, 1), got {warmup_steps!r}"
            )
        if not 0 <= min_lr_ratio <= 1:
            raise ValueError(f"`min_lr_ratio` must be in [0, 1], got {min_lr_ratio!r}")
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer, self._factor)

    def set_total_steps(self, total_steps: int) -> None:
        """Fill in the run's length and recompute the current learning rate with it (at step 0 before training)."""
        self.total_steps = total_steps
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base_lr * self._factor(self.last_epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _warmup(self) -> float:
        if isinstance(self.warmup_steps, float):
            return self.warmup_steps * (self.total_steps or 0)
        return float(self.warmup_steps)

    def _factor(self, step: int) -> float:
        if step == 0 and self.warmup_steps > 0:
            return 0.0  # any warm-up starts at 0, even a fractional one whose length is not known yet
        warmup = self._warmup()
        if step < warmup:
            return step / warmup
        if not self.total_steps:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1.0, self.total_steps - warmup))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * self._decay(progress)

    def _decay(self, progress: float) -> float:
        raise NotImplementedError


class WarmupCosineLR(WarmupDecay):
    """Linear warm-up from 0, then cosine decay to ``min_lr_ratio`` × the base learning rate.

    Args:
        warmup_steps: optimiser steps of warm-up, or a float in [0, 1) for a fraction of ``total_steps``.
        total_steps: steps of the whole run; ``None`` lets the module fill it in.
        min_lr_ratio: the final learning rate as a fraction of the base one.
    """

    def _decay(self, progress: float) -> float:
        return 0.5 * (1 + math.cos(math.pi * progress))


class WarmupLinearLR(WarmupDecay):
    """Linear warm-up from 0, then linear decay to ``min_lr_ratio`` × the base learning rate (same Args)."""

    def _decay(self, progress: float) -> float:
        return 1 - progress


FUSED_DEVICES = ("cpu", "cuda")  # where torch's fused AdamW kernel runs


def default_adamw(parameters: list[nn.Parameter], lr: float) -> Optimizer:
    """AdamW at ``lr`` without weight decay, fused (one kernel over all tensors, no temporaries per tensor) where
    torch's fused kernel takes every parameter: plain floating-point tensors on the CPU or a CUDA device. Otherwise
    (sharded DTensor parameters, other devices) the per-tensor loop. Both compute the AdamW update; they differ
    only in float rounding (about 1e-7 relative).

    >>> default_adamw([nn.Parameter(torch.zeros(2))], 1e-3).param_groups[0]["fused"]
    True
    """
    fused = bool(parameters) and all(
        type(parameter.data) is torch.Tensor and parameter.device.type in FUSED_DEVICES
        and parameter.dtype in (torch.float32, torch.bfloat16, torch.float16)
        for parameter in parameters
    )
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0, fused=fused or None)


def optimisation(parameters: Iterable[nn.Parameter], optimizer_factory: Callable[..., Optimizer] | None,
                 scheduler_factory: Callable[[Optimizer], LRScheduler] | None, default_lr: float,
                 total_steps: Callable[[], int]) -> OptimizerLRScheduler:
    """What ``configure_optimizers`` returns for the trainable ``parameters``: the configured optimiser (AdamW at
    ``default_lr`` without one) and, when configured, its schedule stepped every optimiser step, told the run's
    ``total_steps()`` when it was built without them."""
    parameters = [parameter for parameter in parameters if parameter.requires_grad]
    if optimizer_factory is None:
        optimizer = default_adamw(parameters, default_lr)
    else:
        optimizer = optimizer_factory(parameters)
    if scheduler_factory is None:
        return optimizer
    scheduler = scheduler_factory(optimizer)
    if getattr(scheduler, "total_steps", 0) is None and hasattr(scheduler, "set_total_steps"):
        scheduler.set_total_steps(int(total_steps()))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
