"""Saving the trained policy in Hugging Face format when ``fit`` ends (``model.export_dir``).

:class:`ExportAtEnd` is the part of :class:`~lightpref.training.module.PreferenceModule` that does it: it refuses
an export directory that would overwrite files before any model is loaded, and after training writes the policy
(merged, for a LoRA policy; gathered from its shards under FSDP) and the tokenizer there.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lightpref.models.export import refuse_to_overwrite, save_policy
from lightpref.models.pretrained import ModelSource
from lightpref.run.sharding import is_sharded, unsharded_copy


class ExportAtEnd(LightningModule):
    """A LightningModule whose trained ``policy``, built from ``source``, is saved to ``export_dir`` after ``fit``."""

    export_dir: str | None
    export_overwrite: bool
    policy: nn.Module | None
    source: ModelSource

    def export_directory(self) -> Path | None:
        """Where ``fit`` saves the trained policy (``export_dir`` under the run's log directory), or ``None``."""
        if self.export_dir is None:
            return None
        directory = Path(self.export_dir)
        if not directory.is_absolute():  # `trainer.log_dir` is collective under DDP/FSDP: read it on every rank
            directory = Path(self.trainer.log_dir or self.trainer.default_root_dir) / directory
        return directory

    def setup(self, stage: str) -> None:
        """Before a fit loads any model: refuse an export directory that would overwrite files (unless allowed)."""
        directory = self.export_directory() if stage == "fit" else None
        if directory is not None:
            refuse_to_overwrite(directory, self.export_overwrite, "`model.export_dir`:",
                                "set `model.export_overwrite: true`")

    def on_train_end(self) -> None:
        directory = self.export_directory()
        if directory is None:
            return
        policy = self.policy
        if is_sharded(self):  # FSDP: every rank sends its shards; rank 0 gets an unsharded copy to save
            policy = unsharded_copy(self.trainer.strategy.model, "policy.", self.source.load_model)
        if not self.trainer.is_global_zero:
            return
        tokenizer = getattr(getattr(self.trainer, "datamodule", None), "tokenizer", None)
        if tokenizer is None:
            tokenizer = self.source.load_tokenizer()
        save_policy(policy, directory, tokenizer, source=self.source)
        rank_zero_info(f"Saved the trained policy and tokenizer in Hugging Face format to {directory}")
