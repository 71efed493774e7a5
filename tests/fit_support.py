"""The one `fit` helper of the tests that train a tiny model with the Lightning API (not a conftest.py: that name
would shadow tests/conftest.py for the `from conftest import …` of other test modules).

Test modules that need other defaults bind them with ``functools.partial`` instead of writing a variant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lightpref.data import PreferenceDataModule
from lightpref.training.module import PreferenceModule


class RecordLosses(Callback):
    """The per-step training loss, to compare runs step by step."""

    def __init__(self, losses: list[float]) -> None:
        self.losses = losses

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.losses.append(outputs["loss"].item() if isinstance(outputs, dict) else outputs.item())


def fit(
    checkpoint: Path,
    pairs_file: Path,
    root: Path,
    *,
    steps: int = 4,
    lr: float = 1e-2,
    callbacks: tuple[Callback, ...] | list[Callback] = (),
    ckpt_path: str | None = None,
    module: PreferenceModule | None = None,
    logger: bool = True,
    checkpoints: bool = True,
    sanity_steps: int = 2,
    validate_every: int | None = 2,
    val_batches: int | float = 1.0,
    shuffle: bool = True,
    accumulate: int = 1,
    **module_args: Any,
) -> tuple[PreferenceModule, Trainer, list[float]]:
    """A few steps of a tiny model with a high learning rate on a quarter-validation split of ``pairs_file``,
    validating every ``validate_every`` steps (``None``: at the last step), ``accumulate`` batches a step. Returns
    the module, the trainer and the training loss of every step. ``module_args`` go to :class:`PreferenceModule`
    unless ``module`` is given."""
    module = module or PreferenceModule(
        str(checkpoint), optimizer=lambda params: torch.optim.AdamW(params, lr=lr), **module_args
    )
    data = PreferenceDataModule(
        tokenizer=str(checkpoint), train_files=str(pairs_file), val_fraction=0.25, batch_size=4, max_length=64,
        max_prompt_length=32, shuffle=shuffle,
    )
    losses: list[float] = []
    trainer = Trainer(
        max_steps=steps, default_root_dir=root, accelerator="cpu", enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=1, num_sanity_val_steps=sanity_steps,
        limit_val_batches=val_batches, val_check_interval=validate_every or steps, check_val_every_n_epoch=None,
        enable_checkpointing=checkpoints, logger=logger, callbacks=[RecordLosses(losses), *callbacks],
        accumulate_grad_batches=accumulate,
    )
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return module, trainer, losses
