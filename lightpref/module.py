"""The LightningModule: a trainable policy, a frozen reference, and a pluggable preference loss."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lightpref.forward import TokenLogProbs, completion_logprobs
from lightpref.losses import LogProbs, PreferenceLoss, build
from lightpref.pretrained import load_model, load_tokenizer
from lightpref.schedules import _WarmupDecay
from lightpref.views import PromptView

DEFAULT_LR = 5e-7


class PreferenceModule(LightningModule):
    """Preference optimisation of a causal LM against a frozen reference copy of it.

    The models are built in :meth:`configure_model`, so strategies that shard (FSDP) can build them shard by shard.
    The reference is frozen, kept in eval mode, excluded from the optimiser and not written into checkpoints; a loss
    that needs no reference never loads one.

    Args:
        pretrained: Hub name or local directory of the policy (and, by default, the reference).
        loss: a registered loss name (``lightpref losses`` lists them) or a loss object
            (``class_path``/``init_args`` in a config).
        gguf_file: read ``pretrained`` from this GGUF file in that directory or installed package.
        reference: Hub name or directory of a different reference model; ``None`` copies the policy's weights.
        dtype: weight dtype (``float32``, ``bfloat16``, ``float16``); log-probs and losses are float32 regardless.
        attn_implementation: transformers attention implementation (``sdpa``, ``eager``, ``flash_attention_2``…).
        trust_remote_code: run model code shipped with the checkpoint (off unless you trust it).
        optimizer: optimiser factory; ``None`` is AdamW with lr 5e-7 and no weight decay.
        lr_scheduler: schedule stepped every optimiser step, e.g. :class:`lightpref.schedules.WarmupCosineLR`.
        logits_chunk_size: completion positions projected to the vocabulary at a time (bounds logits memory);
            ``None`` uses the model's own full forward.
        export_dir: where the trained policy and tokenizer are saved in Hugging Face format at the end of ``fit``,
            relative to the run's log directory unless absolute; ``None`` skips the export.
    """

    def __init__(
        self,
        pretrained: str,
        loss: PreferenceLoss | str = "dpo",
        gguf_file: str | None = None,
        reference: str | None = None,
        dtype: str = "float32",
        attn_implementation: str | None = "sdpa",
        trust_remote_code: bool = False,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        logits_chunk_size: int | None = 1024,
        export_dir: str | None = "huggingface",
    ) -> None:
        super().__init__()
        if logits_chunk_size is not None and logits_chunk_size < 1:
            raise ValueError(f"`model.logits_chunk_size` must be a positive integer or null, got {logits_chunk_size}")
        self.pretrained = pretrained
        self.loss = build(loss) if isinstance(loss, str) else loss
        if not isinstance(self.loss, PreferenceLoss):
            raise TypeError(f"`model.loss` must be a loss name or a PreferenceLoss, got {type(self.loss).__name__}")
        self.gguf_file = gguf_file
        self.reference_source = reference
        self.load_kwargs = {"dtype": dtype, "attn_implementation": attn_implementation,
                            "trust_remote_code": trust_remote_code}
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.logits_chunk_size = logits_chunk_size
        self.export_dir = export_dir
        self.policy: nn.Module | None = None
        self.reference: nn.Module | None = None
        self.metrics = nn.ModuleDict({f"{stage}_metrics": nn.ModuleDict() for stage in ("train", "val", "test")})
        self.register_load_state_dict_post_hook(_ignore_missing_reference)

    @property
    def prompt_views(self) -> Mapping[str, PromptView]:
        """The extra prompt views the loss needs; the DataModule tokenises them."""
        return dict(self.loss.views)

    def configure_model(self) -> None:
        if self.policy is not None:  # idempotent: Lightning may call it more than once
            return
        self.policy = load_model(self.pretrained, gguf_file=self.gguf_file, **self.load_kwargs)
        self.policy.train()  # from_pretrained returns eval mode, and Lightning keeps each submodule's mode
        if self.loss.requires_reference:
            if self.reference_source is None:
                self.reference = copy.deepcopy(self.policy)
            else:
                self.reference = load_model(self.reference_source, **self.load_kwargs)
            self.reference.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> PreferenceModule:
        super().train(mode)
        if self.reference is not None:
            self.reference.eval()  # the reference never trains, not even its dropout
        return self

    # --- forward -------------------------------------------------------------------------------------------------

    def _token_logprobs(self, model: nn.Module, sequences: Mapping[str, Tensor]) -> TokenLogProbs:
        return completion_logprobs(
            model,
            sequences["input_ids"],
            sequences["attention_mask"],
            sequences["completion_mask"],
            chunk_size=self.logits_chunk_size,
            with_collision=self.loss.needs_collision_logps,
        )

    def _record(self, tokens: TokenLogProbs, views: Mapping[str, LogProbs] | None = None) -> LogProbs:
        """Split a (2B, T) result into the loss's per-pair record, holding exactly what the loss declared."""
        pairs = tokens.logps.shape[0] // 2
        record = LogProbs.from_tokens(
            tokens.logps[:pairs], tokens.logps[pairs:], tokens.mask[:pairs], tokens.mask[pairs:],
            length_normalized=self.loss.length_normalized,
        )
        if not self.loss.needs_token_logps:
            record = replace(record, chosen_tokens=None, rejected_tokens=None, chosen_mask=None, rejected_mask=None)
        if tokens.log_collision is not None:
            record = replace(record, chosen_log_collision=tokens.log_collision[:pairs],
                             rejected_log_collision=tokens.log_collision[pairs:])
        return replace(record, views=dict(views or {}))

    @torch.no_grad()
    def _view_records(self, model: nn.Module, batch: Mapping[str, Any]) -> dict[str, LogProbs]:
        """Log-probs under each prompt view the loss declared: no gradient, and in eval mode (no dropout noise)."""
        if not self.loss.views:
            return {}
        records = {}
        was_training = model.training
        model.eval()
        try:
            for name in self.loss.views:
                if name not in batch.get("views", {}):
                    raise KeyError(
                        f"the loss {type(self.loss).__name__} needs the prompt view {name!r}, but the batch has "
                        "none; build the DataModule with `prompt_views=module.prompt_views` or attach both to one "
                        "Trainer"
                    )
                records[name] = replace(self._record(self._token_logprobs(model, batch["views"][name])), views={})
        finally:
            model.train(was_training)
        return records

    def forward(self, batch: Mapping[str, Any]) -> tuple[dict[str, Tensor], Tensor]:
        """Loss and metrics of one batch; returns (metrics, mean loss)."""
        policy_tokens = self._token_logprobs(self.policy, batch)
        policy = self._record(policy_tokens, self._view_records(self.policy, batch))
        reference = None
        if self.reference is not None:
            with torch.no_grad():
                reference = self._record(self._token_logprobs(self.reference, batch),
                                         self._view_records(self.reference, batch))
        output = self.loss(policy, reference)
        loss = output.losses.mean()
        pairs = policy.chosen.shape[0]
        vocab = self.policy.get_output_embeddings().out_features if self.logits_chunk_size else None
        sums = LogProbs.from_tokens(policy_tokens.logps[:pairs], policy_tokens.logps[pairs:],
                                    policy_tokens.mask[:pairs], policy_tokens.mask[pairs:])
        metrics = {
            "loss": output.losses.detach(),
            "rewards/chosen": output.chosen_rewards,
            "rewards/rejected": output.rejected_rewards,
            "rewards/accuracies": (output.chosen_rewards > output.rejected_rewards).float(),
            "rewards/margins": output.chosen_rewards - output.rejected_rewards,
            "logps/chosen": sums.chosen.detach(),
            "logps/rejected": sums.rejected.detach(),
            **{name: value.detach() for name, value in output.metrics.items()},
        }
        if vocab:
            chosen_tokens, rejected_tokens = sums.chosen_lengths.sum(), sums.rejected_lengths.sum()
            metrics["logits/chosen"] = policy_tokens.logits_sum[:pairs].sum() / (chosen_tokens * vocab).clamp(min=1)
            metrics["logits/rejected"] = policy_tokens.logits_sum[pairs:].sum() / (rejected_tokens * vocab).clamp(min=1)
        return metrics, loss

    # --- steps and metrics ---------------------------------------------------------------------------------------

    def _log_metrics(self, stage: str, metrics: Mapping[str, Tensor], pairs: int) -> None:
        store = self.metrics[f"{stage}_metrics"]
        for name, value in metrics.items():
            key = name.replace(".", "_")
            if key not in store:
                store[key] = MeanMetric(dist_sync_on_step=stage == "train").to(self.device)
            metric = store[key]
            metric(value.float().reshape(-1))
            logged = name if stage == "train" else f"{stage}/{name}"
            self.log(logged, metric, on_step=stage == "train", on_epoch=stage != "train", batch_size=pairs,
                     prog_bar=name in ("loss", "rewards/accuracies"), metric_attribute=f"metrics.{stage}_metrics.{key}")

    def _step(self, batch: Mapping[str, Any], stage: str) -> Tensor:
        metrics, loss = self(batch)
        self._log_metrics(stage, metrics, batch["input_ids"].shape[0] // 2)
        return loss

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "test")

    # --- optimisation --------------------------------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        parameters = [p for p in self.policy.parameters() if p.requires_grad]
        if self.optimizer_factory is None:
            optimizer = torch.optim.AdamW(parameters, lr=DEFAULT_LR, weight_decay=0.0)
        else:
            optimizer = self.optimizer_factory(parameters)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        if isinstance(scheduler, _WarmupDecay) and scheduler.total_steps is None:
            scheduler.total_steps = int(self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- checkpoints and export ----------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict", {})
        for key in [key for key in state if key.startswith("reference.")]:
            del state[key]  # the reference is rebuilt from its source; a checkpoint must not double in size

    def on_train_end(self) -> None:
        if self.export_dir is None or not self.trainer.is_global_zero:
            return
        directory = Path(self.export_dir)
        if not directory.is_absolute():
            directory = Path(self.trainer.log_dir or self.trainer.default_root_dir) / directory
        self.policy.save_pretrained(directory)
        datamodule = getattr(self.trainer, "datamodule", None)
        tokenizer = getattr(datamodule, "tokenizer", None)
        if tokenizer is None:
            tokenizer = load_tokenizer(self.pretrained, self.gguf_file, self.load_kwargs["trust_remote_code"])
        tokenizer.save_pretrained(directory)
        rank_zero_info(f"Saved the trained policy and tokenizer in Hugging Face format to {directory}")


def _ignore_missing_reference(module: nn.Module, incompatible_keys: Any) -> None:
    """Checkpoints hold no reference weights by design: loading one must not report them missing."""
    missing = incompatible_keys.missing_keys
    missing[:] = [key for key in missing if not key.startswith("reference.")]
