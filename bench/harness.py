"""One training run of each side of a lightpref-versus-TRL DPO comparison, on the same token ids and batches.

Shared by ``throughput.py`` (CPU, SmolLM2-135M) and ``gpu.py`` (one GPU, bf16). A run records, per optimiser step,
its wall time (begin → end, the device synchronised at both ends), its process CPU time, the non-padding tokens of
the standard (2B, T) batch (the prompt counted in both rows, so both sides count the same tokens), the loss and the
mean ``logps/chosen``.

TRL's ``DPOTrainer`` (1.16) re-tokenises any dataset it is given; :func:`run_trl` keeps the token ids lightpref made
(overriding ``_prepare_dataset``) and their order (a sequential sampler), so both sides train on identical batches.
"""

from __future__ import annotations

import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RECORD_KEYS = ("step_seconds", "step_cpu_seconds", "tokens", "losses", "logps_chosen", "setup_seconds")


def new_record() -> dict[str, list]:
    """The per-step lists a run fills."""
    return {key: [] for key in RECORD_KEYS}


def pretokenized(trainer_class: type, record: dict[str, list]) -> type:
    """A subclass of a TRL trainer that trains on a dataset lightpref already tokenised (TRL 1.16 re-tokenises every
    dataset in ``_prepare_dataset``), in order, and appends each training step's loss to ``record["losses"]``."""
    import torch

    class Pretokenized(trainer_class):  # type: ignore[misc, valid-type]
        def _prepare_dataset(self, dataset: Any, *rest: Any, **options: Any) -> Any:
            return dataset

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            return torch.utils.data.SequentialSampler(self.train_dataset if train_dataset is None else train_dataset)

        def compute_loss(self, model: Any, inputs: Any, *rest: Any, **options: Any) -> Any:
            loss = super().compute_loss(model, inputs, *rest, **options)
            if model.training:
                record["losses"].append(float(loss.detach()))
            return loss

    return Pretokenized


def trl_step_timer(record: dict[str, list], cpu_key: str = "step_cpu_seconds") -> Any:
    """A transformers callback appending each step's wall seconds to ``record["step_seconds"]`` and its process CPU
    seconds to ``record[cpu_key]``."""
    from transformers import TrainerCallback

    class Steps(TrainerCallback):
        def on_step_begin(self, *_: Any, **__: Any) -> None:
            synchronize()
            self.start, self.cpu_start = time.perf_counter(), time.process_time()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            synchronize()
            record["step_seconds"].append(time.perf_counter() - self.start)
            record[cpu_key].append(time.process_time() - self.cpu_start)

    return Steps()


def synchronize() -> None:
    """Wait for the GPU's queued work, so that a host clock read after it measures that work."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_flops(device: str, dtype: str = "float32", size: int = 2048, repeats: int = 8) -> float:
    """The best rate of ``repeats`` ``size``×``size`` matmuls of random ``dtype`` data after one warm-up: the
    device's practical peak (random, not zero, data: zeros run faster than real data on some GPUs)."""
    import torch

    a = torch.randn(size, size, device=device, dtype=getattr(torch, dtype))
    b = torch.randn(size, size, device=device, dtype=getattr(torch, dtype))
    best = float("inf")
    for _ in range(repeats + 1):
        synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.is_file() else []
    return names[0] if names else f"{platform.processor() or platform.machine()} CPU"


def parameter_count(model: Any) -> int:
    """Parameters of ``model``, each shared tensor (tied embeddings) counted once."""
    return sum(parameter.numel() for parameter in {id(p): p for p in model.parameters()}.values())


def run_lightpref(module: Any, datamodule: Any, steps: int, record: dict[str, list],
                  trainer_options: dict[str, Any] | None = None) -> Any:
    """Train ``module`` (a PreferenceModule) on ``datamodule`` for ``steps`` optimiser steps through Lightning,
    filling ``record``; returns the trained policy."""
    from lightning.pytorch import Callback, Trainer

    class Steps(Callback):
        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
            synchronize()
            if not record["setup_seconds"]:  # fit start → first step: set-up, and a precomputed reference
                record["setup_seconds"].append(time.perf_counter() - fit_start)
            record["tokens"].append(int(batch["attention_mask"].sum()))
            self.start, self.cpu_start = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            synchronize()
            record["step_seconds"].append(time.perf_counter() - self.start)
            record["step_cpu_seconds"].append(time.process_time() - self.cpu_start)
            record["losses"].append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))

    forward = module.forward

    def recording_forward(batch: Any, *rest: Any) -> Any:
        metrics, loss = forward(batch, *rest)
        if module.training:
            record["logps_chosen"].append(float(metrics["logps/chosen"].float().mean()))
        return metrics, loss

    module.forward = recording_forward
    trainer = Trainer(
        max_steps=steps, accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        callbacks=[Steps()], **(trainer_options or {}),
    )
    fit_start = time.perf_counter()
    trainer.fit(module, datamodule)
    return module.policy


def run_trl(model: Any, ref_model: Any, tokenizer: Any, pairs: Sequence[dict[str, list[int]]], record: dict[str, list],
            steps: int, batch_size: int, max_length: int, lr: float, bf16: bool = False,
            **options: Any) -> Any:
    """Train ``model`` with TRL's DPOTrainer on the pre-tokenised ``pairs`` (in order) for ``steps`` optimiser
    steps: AdamW, constant lr, no weight decay, no gradient clipping, DPO β 0.1, reference on the fly, no dropout.
    ``options`` go to ``DPOConfig`` (e.g. ``use_liger_kernel``). Returns the trained model."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    class PretokenizedDPOTrainer(DPOTrainer):
        """TRL 1.16 re-tokenises every dataset (`_prepare_dataset`); ours is already tokenised, in order."""

        def _prepare_dataset(self, dataset: Any, *rest: Any, **options: Any) -> Any:
            return dataset

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            return torch.utils.data.SequentialSampler(self.train_dataset if train_dataset is None else train_dataset)

        def compute_loss(self, model: Any, inputs: Any, *rest: Any, **options: Any) -> Any:
            if model.training:
                record["tokens"].append(int(inputs["attention_mask"].sum()))
            loss = super().compute_loss(model, inputs, *rest, **options)
            if model.training:
                record["losses"].append(float(loss.detach()))
                record["logps_chosen"].append(self._metrics["train"]["logps/chosen"][-1])
            return loss

    class Steps(TrainerCallback):
        def on_step_begin(self, *_: Any, **__: Any) -> None:
            synchronize()
            if not record["setup_seconds"]:
                record["setup_seconds"].append(time.perf_counter() - train_start)
            self.start, self.cpu_start = time.perf_counter(), time.process_time()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            synchronize()
            record["step_seconds"].append(time.perf_counter() - self.start)
            record["step_cpu_seconds"].append(time.process_time() - self.cpu_start)

    config = DPOConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch_size, max_length=max_length,
        learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=0.0,
        optim="adamw_torch", beta=0.1, loss_type=["sigmoid"], max_steps=steps,
        logging_strategy="no", save_strategy="no", report_to=[], gradient_checkpointing=False,
        precompute_ref_log_probs=False, dataloader_num_workers=0, seed=0, bf16=bf16, fp16=False,
        disable_dropout=True, use_cpu=not torch.cuda.is_available(), **options,
    )
    trainer = PretokenizedDPOTrainer(
        model=model, ref_model=ref_model, args=config, train_dataset=Dataset.from_list(list(pairs)),
        processing_class=tokenizer, callbacks=[Steps()],
    )
    train_start = time.perf_counter()
    trainer.train()
    return trainer.model
