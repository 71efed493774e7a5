"""What the reward-model scaling tests add to runs, also to CLI runs in subprocesses (``PYTHONPATH`` holds this
directory): per optimiser step the logged ``loss`` (the global batch's mean), and at the end the reward model's full
weights (gathered from their shards under FSDP) and whether they were sharded, written by rank 0 to
``<path>/record.pt``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lightpref.run.sharding import full_state_dict


class RewardProbe(Callback):
    def __init__(self, path: str) -> None:
        self.path = path
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if "loss" in trainer.callback_metrics:
            self.losses[trainer.global_step] = float(trainer.callback_metrics["loss"])

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from torch.distributed.tensor import DTensor

        model = pl_module.reward_model
        weights = full_state_dict(trainer.strategy.model, "reward_model.")  # collective under FSDP
        if weights is None:
            weights = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
        record = {"losses": self.losses, "world_size": trainer.world_size, "weights": weights,
                  "dtensor": all(isinstance(parameter, DTensor) for parameter in model.parameters())}
        if trainer.is_global_zero:
            Path(self.path).mkdir(parents=True, exist_ok=True)
            torch.save(record, Path(self.path) / "record.pt")
