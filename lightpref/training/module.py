"""The LightningModule: a trainable policy, a frozen reference, and a pluggable preference loss."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from peft import PeftConfig
from torch import Tensor, nn

from lightpref.batch import RANKED, UNPAIRED, GroupBatch, PairBatch
from lightpref.io import eval_mode
from lightpref.losses import LogProbs, PreferenceLoss, build
from lightpref.losses.base import check_output
from lightpref.losses.shapes import RankedLogProbs, check_data_shape
from lightpref.models.export import CHECKPOINT_KEY, frozen_entries
from lightpref.models.pretrained import ModelSource
from lightpref.run.checkpointing import run_safety_callbacks
from lightpref.run.guards import ACTIONS, check_optimizer
from lightpref.run.sharding import is_sharded, shard_models
from lightpref.training.checkpoint_state import ignore_missing_frozen, trim_state
from lightpref.training.export_at_end import ExportAtEnd
from lightpref.training.forward import TokenLogProbs
from lightpref.training.free_gradients import FreeGradientsAfterStep
from lightpref.training.group_pairs import AllPairs, GroupPairs
from lightpref.training.metrics import batch_metrics, log_metrics
from lightpref.training.packing import Scorer
from lightpref.training.records import batch_groups, best_and_worst_rows, pair_record, pair_rows, ranked_record
from lightpref.training.reference import PrecomputeContext, build_reference
from lightpref.training.schedules import optimisation
from lightpref.training.unpaired_step import unpaired_step
from lightpref.views import PromptView

if TYPE_CHECKING:
    from lightning.pytorch.utilities.types import OptimizerLRScheduler

DEFAULT_LR = 5e-7


class PreferenceModule(ExportAtEnd, FreeGradientsAfterStep, LightningModule):
    """Preference optimisation of a causal LM against a frozen reference copy of it.

    The models are built in :meth:`configure_model`, so strategies that shard (FSDP) can build them shard by shard.
    The reference (a :class:`~lightpref.training.reference.Reference`, chosen once from the settings below) is frozen,
    kept in eval mode, excluded from the optimiser and not written into checkpoints (except FSDP ones, which load every
    key; see docs/scaling.md); a loss that needs no reference never loads one. Nor are a LoRA policy's frozen base
    weights: its checkpoints hold the adapter, and the base is loaded from ``pretrained`` again on resume or export.

    Args:
        pretrained: Hub name or local directory of the policy (and, by default, the reference).
        loss: a registered loss name (``lightpref losses`` lists them) or a loss object
            (``class_path``/``init_args`` in a config).
        gguf_file: read ``pretrained`` from this GGUF file in that directory or installed package.
        reference: Hub name or directory of a different reference model; ``None`` copies the policy's weights.
        dtype: weight dtype (``float32``, ``bfloat16``, ``float16``); log-probs and losses are float32 regardless.
        attn_implementation: transformers attention implementation (``sdpa``, ``eager``, ``flash_attention_2``…).
        trust_remote_code: run model code shipped with the checkpoint (off unless you trust it).
        optimizer: optimiser factory; ``None`` is AdamW with lr 5e-7 and no weight decay (fused where torch can).
        lr_scheduler: schedule stepped every optimiser step, e.g. :class:`lightpref.training.schedules.WarmupCosineLR`.
        logits_chunk_size: completion positions projected to the vocabulary at a time (bounds logits memory);
            ``None`` uses the model's own full forward.
        export_dir: where the trained policy and tokenizer are saved in Hugging Face format at the end of ``fit``,
            relative to the run's log directory unless absolute; ``None`` skips the export. A LoRA policy is saved
            merged into its base weights. A directory that is not empty is refused before training starts.
        export_overwrite: let ``fit`` write its export into a non-empty ``export_dir``, replacing the files there.
        peft: train an adapter (e.g. ``peft.LoraConfig``) instead of all weights; the reference is then the same
            base model with the adapter switched off, so the weights are in memory once.
        sft_adapter: continue from this trained adapter: it is loaded twice, as the trainable policy adapter and,
            frozen, as the reference (base + SFT adapter).
        precompute_reference: run the reference once over the train and validation data before training, cache
            its log-probs on disk (reused by later runs with the same reference, data and settings), and free it.
        reference_batch_size: pairs per batch when precomputing reference log-probs (no gradients: can be larger).
        reference_cache_dir: where precomputed reference log-probs are kept (``<cache root>/reference`` by default,
            the cache root being ``$LIGHTPREF_CACHE`` or ``~/.cache/lightpref``).
        gradient_checkpointing: recompute decoder activations in the backward pass (less memory, ~30% more time).
        compile: ``torch.compile`` the policy's decoder where it works (CUDA, or CPU with a C++ compiler).
        on_nonfinite: what to do with an optimiser step whose loss or gradient is NaN/inf: ``skip`` it (counted
            in the ``nonfinite_steps`` metric) or ``stop`` with an error naming the step and batch.
        quantization_bits: load the base weights in 4 or 8 bits with bitsandbytes (QLoRA; needs a CUDA GPU and
            ``model.peft``).
        shared_prompt: run each pair as one sequence ``prompt ∥ chosen ∥ rejected`` (the prompt computed once) with
            a mask that hides chosen from rejected; exact, see :mod:`lightpref.training.packing`.
        packing: pack the batch's sequences into rows without padding (attention does not cross sequences);
            exact. Either falls back to the plain forward, with a warning, where the attention implementation
            cannot do it.
        group_pairs: with ranked data and a pairwise loss, the pairs trained on inside each group
            (:mod:`lightpref.training.group_pairs`): ``AllPairs`` (every pair with different scores, or a gap of at
            least ``min_gap``; the default), ``BestVsRest`` or ``BestVsWorst``. A group's pairs share its one forward.
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
        export_overwrite: bool = False,
        peft: PeftConfig | None = None,
        sft_adapter: str | None = None,
        precompute_reference: bool = False,
        reference_batch_size: int = 16,
        reference_cache_dir: str | None = None,
        gradient_checkpointing: bool = False,
        compile: bool = False,
        on_nonfinite: Literal["skip", "stop"] = "skip",
        quantization_bits: int | None = None,
        shared_prompt: bool = True,
        packing: bool = True,
        group_pairs: GroupPairs | None = None,
    ) -> None:
        super().__init__()
        if logits_chunk_size is not None and logits_chunk_size < 1:
            raise ValueError(f"`model.logits_chunk_size` must be a positive integer or null, got {logits_chunk_size}")
        self.loss = build(loss) if isinstance(loss, str) else loss
        if not isinstance(self.loss, PreferenceLoss):
            raise TypeError(f"`model.loss` must be a loss name or a PreferenceLoss, got {type(self.loss).__name__}")
        if quantization_bits is not None and peft is None and sft_adapter is None:
            raise ValueError("quantised weights cannot be trained directly: `model.quantization_bits` needs an "
                             "adapter (`model.peft`, e.g. a LoraConfig, or `model.sft_adapter`)")
        if reference_batch_size < 1:
            raise ValueError(f"`model.reference_batch_size` must be a positive integer, got {reference_batch_size}")
        if on_nonfinite not in ACTIONS:
            raise ValueError(f"`model.on_nonfinite` must be one of {list(ACTIONS)}, got {on_nonfinite!r}")
        load = {"dtype": dtype, "attn_implementation": attn_implementation, "quantization_bits": quantization_bits,
                "trust_remote_code": trust_remote_code}
        self.source = ModelSource(pretrained, gguf_file, adapter=sft_adapter, peft=peft, **load)
        reference_source = ModelSource(reference, key="model.reference", **load) if reference is not None else None
        self.group_pairs = AllPairs() if group_pairs is None else group_pairs
        self.scorer = Scorer(logits_chunk_size, pack=packing, shared_prompt=shared_prompt)
        self.reference = build_reference(self.loss.requires_reference, self.source, reference_source, self.scorer,
                                         self.loss.views, precompute_reference, reference_batch_size,
                                         reference_cache_dir)
        self.optimizer_factory, self.scheduler_factory = optimizer, lr_scheduler
        check_optimizer(optimizer)  # a bad value (a negative lr…) fails now, naming its key
        self.export_dir, self.export_overwrite = export_dir, export_overwrite
        self.gradient_checkpointing, self.compile_decoder = gradient_checkpointing, compile
        self.on_nonfinite = on_nonfinite
        self.policy: nn.Module | None = None
        self.metrics = nn.ModuleDict({f"{stage}_metrics": nn.ModuleDict() for stage in ("train", "val", "test")})
        self.register_load_state_dict_post_hook(ignore_missing_frozen)

    @property
    def prompt_views(self) -> Mapping[str, PromptView]:
        """The extra prompt views the loss needs; the DataModule tokenises them."""
        return dict(self.loss.views)

    def configure_model(self) -> None:
        if self.policy is not None:  # idempotent: Lightning may call it more than once
            return
        self.policy = self.source.load_model()  # with its adapter, if it has one
        self.reference.setup(lambda: self.policy)  # a copy is taken now, while the policy is untouched
        self.policy.train()  # from_pretrained returns eval mode, and Lightning keeps each submodule's mode
        if self.gradient_checkpointing:  # transformers ≥ 5 names it activation checkpointing (the old name warns)
            enable = getattr(self.policy, "activation_checkpointing_enable", None)
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.compile_decoder:
            self.policy.get_decoder().compile()
        shard_models(self, [self.policy, self.reference.model], self.device_mesh)  # FSDP2 only: both models alike

    # --- forward -------------------------------------------------------------------------------------------------

    def _policy_views(self, batch: PairBatch) -> dict[str, TokenLogProbs]:
        """The policy's log-probs under each prompt view the loss declared: no gradient, eval mode (no dropout)."""
        if not self.loss.views:
            return {}
        with torch.no_grad(), eval_mode(self.policy):
            return {name: self.scorer(self.policy, batch.view(name)) for name in self.loss.views}

    def forward(self, batch: PairBatch | GroupBatch | Mapping[str, Any]) -> tuple[dict[str, Tensor], Tensor]:
        """Metrics and loss of one batch (a :class:`~lightpref.batch.PairBatch` or a mapping with its keys, or a
        :class:`~lightpref.batch.GroupBatch` of ranked groups)."""
        batch = batch if isinstance(batch, GroupBatch) else PairBatch.of(batch)
        missing = [name for name in self.loss.views if name not in batch.views]
        if missing:
            raise KeyError(
                f"the loss {type(self.loss).__name__} needs the prompt view {missing[0]!r}, but the batch has none; "
                "build the DataModule with `prompt_views=module.prompt_views` or attach both to one Trainer"
            )
        if self.loss.consumes == UNPAIRED:  # labelled completions (and their mismatched ones): lightpref.unpaired_step
            return unpaired_step(self.loss, lambda rows: self.scorer(self.policy, rows),
                                 self.reference.token_logprobs if self.loss.requires_reference else None, batch,
                                 self.policy.get_output_embeddings().out_features if self.scorer.chunk_size else None)
        policy_tokens = self.scorer(self.policy, batch, self.loss.needs_collision_logps)
        reference_tokens = self.reference.token_logprobs(batch) if self.loss.requires_reference else None
        if self.loss.consumes == RANKED:  # every completion of a group at once (a pair is a group of two)
            groups, scores, mean = *batch_groups(batch), self.loss.length_normalized
            policy: LogProbs | RankedLogProbs = ranked_record(policy_tokens, groups, scores, mean)
            reference: LogProbs | RankedLogProbs | None = None
            if reference_tokens is not None:
                reference = ranked_record(reference_tokens, groups, scores, mean)
            better, worse = best_and_worst_rows(groups, policy)  # the pair metrics: best against worst
        elif isinstance(batch, GroupBatch):  # pairs formed inside each group, all from the group's one forward
            better, worse = self.group_pairs(batch.group_ids, batch.scores)
            if not better.numel():  # no pair met the rule: nothing to learn from this batch
                return {}, policy_tokens.logps.sum() * 0.0
            policy = pair_record(pair_rows(policy_tokens, better, worse), self.loss)
            reference = reference_tokens and pair_record(pair_rows(reference_tokens, better, worse), self.loss)
        else:
            better = worse = None
            policy = pair_record(policy_tokens, self.loss, self._policy_views(batch))
            reference = None
            if reference_tokens is not None:
                views = {name: self.reference.token_logprobs(batch, name) for name in self.loss.views}
                reference = pair_record(reference_tokens, self.loss, views)
        metric_tokens = policy_tokens if better is None else pair_rows(policy_tokens, better, worse)
        records = metric_tokens.mask.shape[0] // 2 if better is None else len(better)
        with torch.autocast(policy_tokens.logps.device.type, enabled=False):  # loss math in float32 (mixed precision)
            output = check_output(self.loss, self.loss(policy, reference), records)
        vocab = self.policy.get_output_embeddings().out_features if self.scorer.chunk_size else None
        return batch_metrics(output, metric_tokens, vocab), output.losses.mean()

    def check_label_balance(self, desirable: int, undesirable: int) -> None:
        """Warn when the loss's weights do not suit the training data's label counts (unpaired losses that say so)."""
        warning = getattr(self.loss, "balance_warning", None)
        message = warning(desirable, undesirable) if callable(warning) else None
        if message:
            rank_zero_warn(message)

    def check_data_shape(self, shape: str) -> None:
        """Stop, before any model loads, when the loss cannot use data of ``shape`` (``"pairs"``/``"ranked"``)."""
        check_data_shape(self.loss, shape)

    # --- steps and metrics ---------------------------------------------------------------------------------------

    def _step(self, batch: PairBatch | Mapping[str, Any], stage: str) -> Tensor:
        batch = batch if isinstance(batch, GroupBatch) else PairBatch.of(batch)
        metrics, loss = self(batch)
        if metrics:
            store = f"{stage}_metrics"
            log_metrics(self, self.metrics[store], f"metrics.{store}", stage, metrics, metrics["loss"].numel())
        return loss

    def training_step(self, batch: PairBatch, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: PairBatch, batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: PairBatch, batch_idx: int) -> Tensor:
        return self._step(batch, "test")

    # --- the reference's preparation (a precomputed one computes or loads its cache) ------------------------------

    def on_fit_start(self) -> None:
        self.reference.prepare(self._precompute_context())

    def on_validation_start(self) -> None:
        self.reference.prepare(self._precompute_context())

    def on_test_start(self) -> None:
        self.reference.prepare(self._precompute_context())

    def _precompute_context(self) -> PrecomputeContext:
        return PrecomputeContext(
            datamodule=getattr(self.trainer, "datamodule", None), device=self.device,
            to_device=lambda batch: self.transfer_batch_to_device(batch, self.device, 0), rank=self.global_rank,
            world_size=self.trainer.world_size, barrier=self.trainer.strategy.barrier,
        )

    # --- optimisation --------------------------------------------------------------------------------------------

    def configure_optimizers(self) -> OptimizerLRScheduler:
        return optimisation(self.policy.parameters(), self.optimizer_factory, self.scheduler_factory, DEFAULT_LR,
                            lambda: self.trainer.estimated_stepping_batches)

    # --- checkpoints and export ----------------------------------------------------------------------------------

    def configure_callbacks(self) -> list[Callback]:
        """The non-finite guard and atomic/SIGTERM checkpoints, unless the trainer was given its own."""
        return run_safety_callbacks(self._trainer, self.on_nonfinite)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict", {})
        if is_sharded(self):  # FSDP loads every key the model has (strictly): its checkpoints keep the reference
            state = {}
        trim_state(state, self.frozen_policy_keys())  # rebuilt from the model source on load: only what is trained
        checkpoint[CHECKPOINT_KEY] = self.source.to_dict()  # plain data: lets `lightpref export` rebuild the policy

    def frozen_policy_keys(self) -> frozenset[str]:
        """State-dict keys of the policy's frozen parameters (a LoRA policy's base weights): checkpoints leave them
        out, since :attr:`source` supplies them whenever the policy is built (and the run record pins its content)."""
        return frozen_entries(self.policy, "policy.") if self.policy is not None else frozenset()
