"""Callbacks that change training itself (evaluation callbacks live in :mod:`lightpref.evaluation`)."""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class ReferenceUpdate(Callback):
    """TR-DPO: move the reference towards the policy during training.

    Gorbatovski et al., 2024, *Learn Your Reference Model for Real Good Alignment*,
    https://arxiv.org/abs/2404.09656. Every ``every_n_steps`` optimiser steps::

        θ_ref ← α·θ_policy + (1 − α)·θ_ref        (soft update; α = 1 is the hard update, a plain copy)

    The paper's defaults: α = 0.6 for soft updates, every 512 steps for hard ones. It needs a separate reference
    model: with a LoRA adapter the reference is the base model itself, and with ``precompute_reference`` there is
    no reference left to update, so both are refused with an error.

    Checkpoints normally leave the reference out (it is rebuilt from its source); once this callback has updated
    it, the updated reference is saved in the callback's state so that a resumed run continues with it.

    Args:
        every_n_steps: optimiser steps between updates (τ in the paper).
        alpha: mixing weight α in (0, 1].
    """

    def __init__(self, every_n_steps: int = 512, alpha: float = 0.6) -> None:
        if every_n_steps < 1:
            raise ValueError(f"`every_n_steps` must be a positive integer, got {every_n_steps}")
        if not (0 < alpha <= 1) or math.isnan(alpha):
            raise ValueError(f"`alpha` must be in (0, 1] (1 copies the policy), got {alpha}")
        self.every_n_steps = every_n_steps
        self.alpha = alpha
        self.last_update = 0
        self.module: LightningModule | None = None
        self.restored_reference: dict[str, torch.Tensor] | None = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if getattr(getattr(pl_module, "reference", None), "model", None) is None:
            raise ValueError(
                "ReferenceUpdate (TR-DPO) needs a separate reference model, but this run has none (a LoRA adapter "
                "uses its base as reference; `precompute_reference` frees it; some losses need none)"
            )
        self.module = pl_module
        if self.restored_reference is not None:
            pl_module.reference.model.load_state_dict(self.restored_reference)
            self.restored_reference = None

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step == self.last_update or step % self.every_n_steps:
            return  # not an update step, or already updated at it (gradient accumulation)
        self.last_update = step
        with torch.no_grad():
            for reference, policy in zip(pl_module.reference.model.parameters(), pl_module.policy.parameters(),
                                         strict=True):
                reference.lerp_(policy.to(reference.dtype), self.alpha)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"last_update": self.last_update}
        if self.last_update and self.module is not None:
            state["reference"] = self.module.reference.model.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_update = state_dict["last_update"]
        self.restored_reference = state_dict.get("reference")
