"""The LightningModule of reward-model training: a scalar-score model and a pluggable reward loss.

It trains on the same :class:`~lightpref.batch.PairBatch` as preference training, through the same run machinery
(the LightningCLI of :mod:`lightpref.commands.trainer_cli`, its run callbacks, the non-finite guard, atomic and
resumable checkpoints, FSDP2 sharding, the Hugging Face export at the end).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from peft import PeftConfig
from torch import Tensor, nn

from lightpref.batch import GroupBatch, PairBatch, split_pairs
from lightpref.models.export import CHECKPOINT_KEY
from lightpref.models.pretrained import ModelSource
from lightpref.reward.export import PREFIX, REWARD_MARKER, save_reward_model
from lightpref.reward.losses import GroupScores, PairScores, RewardLoss, build, check_reward_output
from lightpref.reward.losses.plackett_luce import ordered_pairs
from lightpref.reward.model import load_reward_model
from lightpref.reward.scoring import RewardScorer
from lightpref.run.checkpointing import run_safety_callbacks
from lightpref.run.guards import ACTIONS, check_optimizer
from lightpref.run.sharding import is_sharded, shard_models, unsharded_copy
from lightpref.training.free_gradients import FreeGradientsAfterStep
from lightpref.training.metrics import log_metrics
from lightpref.training.schedules import optimisation
from lightpref.views import PromptView

DEFAULT_LR = 1e-5


def pair_metrics(scores: PairScores, losses: Tensor, extra: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Per-pair values to average, under the names TRL's ``RewardTrainer`` logs (``accuracy``, ``margin``,
    ``mean_reward``) and the chosen and rejected scores as ``rewards/chosen`` and ``rewards/rejected``.

    >>> scores = PairScores(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0]))
    >>> {name: value.tolist() for name, value in pair_metrics(scores, torch.zeros(2), {}).items() if name != "loss"}
    {'accuracy': [1.0, 0.0], 'margin': [1.0, -1.0], 'mean_reward': [1.5, 0.5], 'rewards/chosen': [2.0, 0.0], \
'rewards/rejected': [1.0, 1.0]}
    """
    chosen, rejected = scores.chosen.detach(), scores.rejected.detach()
    return {"loss": losses.detach(), "accuracy": (chosen > rejected).float(), "margin": chosen - rejected,
            "mean_reward": (chosen + rejected) / 2, "rewards/chosen": chosen, "rewards/rejected": rejected,
            **{name: value.detach() for name, value in extra.items()}}


class RewardModule(FreeGradientsAfterStep, LightningModule):
    """Trains a reward model r(x, y): one score per completion, read at its last token.

    Args:
        pretrained: Hub name or local directory of a one-label sequence-classification model, or of a causal LM
            (its decoder gets a new score head).
        loss: a registered reward-loss name (``lightpref reward losses``) or a reward-loss object.
        gguf_file: read ``pretrained`` from this GGUF file in that directory or installed package.
        dtype: weight dtype (``float32``, ``bfloat16``, ``float16``); scores and losses are float32 regardless.
        attn_implementation: transformers attention implementation (``sdpa``, ``eager``, ``flex_attention``…).
        trust_remote_code: run model code shipped with the checkpoint (off unless you trust it).
        optimizer: optimiser factory; ``None`` is AdamW with lr 1e-5 and no weight decay (fused where torch can).
        lr_scheduler: schedule stepped every optimiser step, e.g. :class:`lightpref.training.schedules.WarmupCosineLR`.
        export_dir: where the trained reward model and tokenizer are saved in Hugging Face format at the end of
            ``fit`` (relative to the run's log directory unless absolute); ``None`` skips it. A LoRA model is saved
            merged.
        peft: train an adapter (e.g. ``peft.LoraConfig``) and the score head in full, instead of all weights.
        gradient_checkpointing: recompute decoder activations in the backward pass.
        compile: ``torch.compile`` the decoder where it works.
        on_nonfinite: ``skip`` (and count) or ``stop`` at an optimiser step whose loss or gradient is NaN/inf.
        shared_prompt: score each pair as one sequence ``prompt ∥ chosen ∥ rejected``, the prompt computed once.
        packing: pack the batch's sequences into rows without padding. Both are exact (see
            :mod:`lightpref.reward.scoring`).
    """

    def __init__(
        self,
        pretrained: str,
        loss: RewardLoss | str = "bradley_terry",
        gguf_file: str | None = None,
        dtype: str = "float32",
        attn_implementation: str | None = "sdpa",
        trust_remote_code: bool = False,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        export_dir: str | None = "huggingface",
        peft: PeftConfig | None = None,
        gradient_checkpointing: bool = False,
        compile: bool = False,
        on_nonfinite: Literal["skip", "stop"] = "skip",
        shared_prompt: bool = True,
        packing: bool = True,
    ) -> None:
        super().__init__()
        self.loss = build(loss) if isinstance(loss, str) else loss
        if not isinstance(self.loss, RewardLoss):
            raise TypeError(f"`model.loss` must be a reward-loss name or a RewardLoss, got {type(self.loss).__name__}")
        if self.loss.takes not in ("pairs", "groups"):
            raise ValueError(f"the reward loss {type(self.loss).__name__} takes {self.loss.takes!r} records; "
                             "RewardModule gives 'pairs' (preference pairs) or 'groups' (ranked groups)")
        if on_nonfinite not in ACTIONS:
            raise ValueError(f"`model.on_nonfinite` must be one of {list(ACTIONS)}, got {on_nonfinite!r}")
        self.source = ModelSource(pretrained, gguf_file, peft=peft, dtype=dtype,
                                  attn_implementation=attn_implementation, trust_remote_code=trust_remote_code)
        self.scorer = RewardScorer(pack=packing, shared_prompt=shared_prompt)
        self.optimizer_factory, self.scheduler_factory = optimizer, lr_scheduler
        check_optimizer(optimizer)
        self.export_dir, self.on_nonfinite = export_dir, on_nonfinite
        self.gradient_checkpointing, self.compile_decoder = gradient_checkpointing, compile
        self.reward_model: nn.Module | None = None
        self.metrics = nn.ModuleDict({f"{stage}_metrics": nn.ModuleDict() for stage in ("train", "val", "test")})

    @property
    def prompt_views(self) -> Mapping[str, PromptView]:
        """No extra prompt views: the DataModule tokenises the plain prompt only."""
        return {}

    def configure_model(self) -> None:
        if self.reward_model is not None:  # idempotent: Lightning may call it more than once
            return
        self.reward_model = load_reward_model(self.source)
        self.reward_model.train()  # from_pretrained returns eval mode
        if self.gradient_checkpointing:
            self.reward_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.compile_decoder:
            self.reward_model.get_decoder().compile()
        shard_models(self, [self.reward_model], self.device_mesh)  # FSDP2 only

    # --- forward, steps and metrics -------------------------------------------------------------------------------

    def forward(self, batch: PairBatch | GroupBatch | Mapping[str, Any]) -> tuple[dict[str, Tensor], Tensor]:
        """Metrics and loss of one batch of pairs (its ``margin`` (B,) is the data's per-pair margin, if any) or of
        ranked groups (for a loss that takes groups)."""
        if isinstance(batch, GroupBatch) or self.loss.takes == "groups":
            return self._groups_forward(batch)
        batch = PairBatch.of(batch)
        chosen, rejected = split_pairs(self.scorer(self.reward_model, batch))  # (B,), (B,)
        scores = PairScores(chosen, rejected, None if batch.margin is None else batch.margin.float())
        with torch.autocast(chosen.device.type, enabled=False):  # loss math in float32 under mixed precision
            output = check_reward_output(self.loss, self.loss(scores), batch.num_pairs)
        return pair_metrics(scores, output.losses, output.metrics), output.losses.mean()

    def _groups_forward(self, batch: Any) -> tuple[dict[str, Tensor], Tensor]:
        name = type(self.loss).__name__
        if not isinstance(batch, GroupBatch):
            raise ValueError(f"the reward loss {name} takes ranked groups, but the data are pairs; give ranked data "
                             "(prompt/completions/scores records, see docs/data.md) or a pair loss (bradley_terry)")
        if self.loss.takes != "groups":
            raise ValueError(f"the data are ranked groups, but the reward loss {name} takes pairs; use a group loss "
                             "(`model.loss: plackett_luce`) or give pair data")
        scores = GroupScores(self.scorer(self.reward_model, batch), batch.group_ids, batch.scores.float())  # (N,)
        with torch.autocast(scores.scores.device.type, enabled=False):
            output = check_reward_output(self.loss, self.loss(scores), batch.num_groups)
        better, worse = ordered_pairs(scores)  # the pairs the ratings order, inside each group
        ordered = PairScores(scores.scores[better], scores.scores[worse])
        metrics = pair_metrics(ordered, output.losses, output.metrics)
        metrics["mean_reward"] = scores.scores.detach()
        return metrics, output.losses.mean()

    def _step(self, batch: PairBatch | GroupBatch | Mapping[str, Any], stage: str) -> Tensor:
        metrics, loss = self(batch)
        store = f"{stage}_metrics"
        count = batch.num_groups if isinstance(batch, GroupBatch) else PairBatch.of(batch).num_pairs
        log_metrics(self, self.metrics[store], f"metrics.{store}", stage, metrics, count)
        return loss

    def training_step(self, batch: PairBatch | GroupBatch, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: PairBatch | GroupBatch, batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: PairBatch | GroupBatch, batch_idx: int) -> Tensor:
        return self._step(batch, "test")

    # --- optimisation, checkpoints, export -------------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        return optimisation(self.reward_model.parameters(), self.optimizer_factory, self.scheduler_factory, DEFAULT_LR,
                            lambda: self.trainer.estimated_stepping_batches)

    def configure_callbacks(self) -> list[Callback]:
        """The non-finite guard and atomic/SIGTERM checkpoints, unless the trainer was given its own."""
        return run_safety_callbacks(self._trainer, self.on_nonfinite)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.source.to_dict()  # plain data: `lightpref reward export` rebuilds from it
        checkpoint[REWARD_MARKER] = True

    def on_train_end(self) -> None:
        if self.export_dir is None:
            return
        directory = Path(self.export_dir)
        if not directory.is_absolute():  # `trainer.log_dir` is collective under DDP/FSDP: read it on every rank
            directory = Path(self.trainer.log_dir or self.trainer.default_root_dir) / directory
        model = self.reward_model
        if is_sharded(self):  # FSDP: every rank sends its shards; rank 0 gets an unsharded copy to save
            model = unsharded_copy(self.trainer.strategy.model, PREFIX, lambda: load_reward_model(self.source))
        if not self.trainer.is_global_zero:
            return
        tokenizer = getattr(getattr(self.trainer, "datamodule", None), "tokenizer", None)
        if tokenizer is None:
            tokenizer = self.source.load_tokenizer()
        save_reward_model(model, directory, tokenizer, self.source)
        rank_zero_info(f"Saved the trained reward model and tokenizer in Hugging Face format to {directory}")

