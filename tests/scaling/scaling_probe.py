"""What the scaling tests add to runs, also to CLI runs in subprocesses (``PYTHONPATH`` holds this directory).

:class:`Probe` records, per optimiser step, the logged ``loss`` (synchronised over ranks: the global batch's mean)
and the learning rate; per batch a fingerprint of its token ids; at the end of training the policy's and the
reference's full weights (gathered from their shards under FSDP) and facts about sharding, written by rank 0 to
``<path>/record.pt`` when ``path`` is given. It can also send SIGTERM to its own process or crash at a given step.

:class:`NaNOnceDPO` is DPO whose loss *value* is NaN at one training call on one rank while its gradient stays
finite, so only the guard's all-reduced decision can make the other ranks skip that step too.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lightpref.losses import LogProbs, LossOutput
from lightpref.losses.dpo import DPO
from lightpref.run.sharding import full_state_dict


class NaNOnceDPO(DPO):
    """DPO, except that at training call ``at_call`` (1-based) on rank ``on_rank`` the loss value is NaN."""

    def __init__(self, at_call: int = 2, on_rank: int = 0, beta: float = 0.1) -> None:
        super().__init__(beta=beta)
        self.at_call, self.on_rank, self.calls = at_call, on_rank, 0

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        output = super().forward(policy, reference)
        if not self.training:
            return output
        self.calls += 1
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        if self.calls == self.at_call and rank == self.on_rank:
            poison = torch.full_like(output.losses, float("nan")) * output.losses.detach()  # NaN value, no gradient
            output.losses = output.losses + poison.detach()
        return output


class Probe(Callback):
    def __init__(self, path: str | None = None, sigterm_at_step: int | None = None,
                 crash_at_step: int | None = None) -> None:
        self.path = path
        self.sigterm_at_step = sigterm_at_step
        self.crash_at_step = crash_at_step
        self.losses: dict[int, float] = {}  # global step after the optimiser step -> logged loss
        self.learning_rates: dict[int, float] = {}
        self.batches: list[int] = []  # a fingerprint of each training batch's token ids, in order
        self.record: dict[str, Any] = {}

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        ids = batch["input_ids"]
        weights = torch.arange(1, ids.numel() + 1, dtype=torch.float64).reshape(ids.shape)
        self.batches.append(int((ids.double() * weights).sum().item()))
        step_done = (batch_idx + 1) % trainer.accumulate_grad_batches == 0  # the last micro-batch of a step
        if step_done and "loss" in trainer.callback_metrics:
            self.losses[trainer.global_step] = float(trainer.callback_metrics["loss"])
            self.learning_rates[trainer.global_step] = trainer.optimizers[0].param_groups[0]["lr"]
        if trainer.global_step == self.sigterm_at_step and trainer.is_global_zero:
            self.sigterm_at_step = None
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler would; Lightning's launcher passes it on
        if trainer.global_step == self.crash_at_step:
            raise RuntimeError(f"simulated crash after step {trainer.global_step}")

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from torch.distributed.tensor import DTensor

        reference = pl_module.reference.model
        record = {
            "losses": self.losses,
            "learning_rates": self.learning_rates,
            "batches": self.batches,
            "world_size": trainer.world_size,
            "nonfinite_steps": float(trainer.callback_metrics.get("nonfinite_steps", -1)),
            "reference_dtensor": reference is not None and all(isinstance(p, DTensor) for p in reference.parameters()),
            "policy_dtensor": all(isinstance(p, DTensor) for p in pl_module.policy.parameters()),
            "reference_frozen": reference is not None and not any(p.requires_grad for p in reference.parameters()),
            "reference_in_optimizer": reference is not None and bool(
                {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
                & {id(p) for p in reference.parameters()}
            ),
        }
        root = trainer.strategy.model
        for name, prefix in (("policy", "policy."), ("reference", "reference.model.")):
            gathered = full_state_dict(root, prefix)  # collective under FSDP
            module = pl_module.policy if name == "policy" else pl_module.reference.model
            if gathered is None and module is not None:
                gathered = {key: value.detach().cpu().clone() for key, value in module.state_dict().items()}
            record[name] = gathered
        self.record = record
        if self.path is not None and trainer.is_global_zero:
            Path(self.path).mkdir(parents=True, exist_ok=True)
            torch.save(record, Path(self.path) / "record.pt")


def fit_tiny(checkpoint: Path, pairs: Path, root: Path, *, loss: Any = "sgdpo", steps: int = 6, batch_size: int = 4,
             accumulate: int = 1, ckpt_path: str | None = None, precision: str = "32-true",
             on_nonfinite: str = "skip", probe: Probe | None = None, every_n_train_steps: int | None = None,
             optimizer: Any = None, callbacks: tuple = (), schedule: bool = True,
             peft: Any = None) -> tuple[Any, Trainer, Probe]:
    """An in-process fit of the tiny model: seeded, AdamW with warm-up and cosine decay, no validation, no logger.

    With ``every_n_train_steps`` a ModelCheckpoint writes ``root/checkpoints/step=N.ckpt`` (and ``last.ckpt``);
    ``schedule=False`` keeps the learning rate constant (so runs of different lengths take the same steps).
    """
    from lightning.pytorch import seed_everything
    from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint

    from lightpref.data import PreferenceDataModule
    from lightpref.training.module import PreferenceModule
    from lightpref.training.schedules import WarmupCosineLR

    seed_everything(0, verbose=False)
    module = PreferenceModule(
        str(checkpoint), loss=loss, export_dir=None, on_nonfinite=on_nonfinite,
        optimizer=optimizer or (lambda params: torch.optim.AdamW(params, lr=1e-2)),
        lr_scheduler=(lambda opt: WarmupCosineLR(opt, warmup_steps=2)) if schedule else None,
        peft=peft,
    )
    data = PreferenceDataModule(tokenizer=str(checkpoint), train_files=str(pairs), batch_size=batch_size,
                                max_length=64, max_prompt_length=32)
    probe = probe or Probe()
    checkpoints = []
    if every_n_train_steps:
        checkpoints.append(ModelCheckpoint(dirpath=root / "checkpoints", filename="{step}", save_top_k=-1,
                                           every_n_train_steps=every_n_train_steps, save_last=True))
    trainer = Trainer(
        max_steps=steps, default_root_dir=root, accelerator="cpu", devices=1, precision=precision, logger=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        accumulate_grad_batches=accumulate,
        enable_checkpointing=bool(checkpoints) or any(isinstance(callback, Checkpoint) for callback in callbacks),
        callbacks=[probe, *checkpoints, *callbacks],
    )
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return module, trainer, probe
