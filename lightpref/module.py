"""The LightningModule: a trainable policy, a frozen reference, and a pluggable preference loss."""

from __future__ import annotations

import copy
import gc
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from peft import PeftConfig
from torch import Tensor, nn

from lightpref.adapters import as_reference, attach_adapter
from lightpref.checkpointing import SafeCheckpoints
from lightpref.export import CHECKPOINT_KEY, policy_source, rebuild_policy, save_policy
from lightpref.forward import TokenLogProbs
from lightpref.guards import ACTIONS, NonFiniteGuard, check_optimizer
from lightpref.losses import LogProbs, PreferenceLoss, build
from lightpref.metrics import batch_metrics, log_metrics
from lightpref.packing import packed_completion_logprobs
from lightpref.pretrained import load_model, load_tokenizer
from lightpref.reference_cache import MAIN, ReferenceCache, prepare_reference_cache
from lightpref.schedules import _WarmupDecay
from lightpref.sharding import is_sharded, shard_models, unsharded_copy
from lightpref.views import PromptView

DEFAULT_LR = 5e-7


class PreferenceModule(LightningModule):
    """Preference optimisation of a causal LM against a frozen reference copy of it.

    The models are built in :meth:`configure_model`, so strategies that shard (FSDP) can build them shard by shard.
    The reference is frozen, kept in eval mode, excluded from the optimiser and not written into checkpoints (except
    FSDP ones, which load every key; see docs/scaling.md); a loss that needs no reference never loads one.

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
            relative to the run's log directory unless absolute; ``None`` skips the export. A LoRA policy is saved
            merged into its base weights.
        peft: train an adapter (e.g. ``peft.LoraConfig``) instead of all weights; the reference is then the same
            base model with the adapter switched off, so the weights are in memory once.
        sft_adapter: continue from this trained adapter: it is loaded twice, as the trainable policy adapter and,
            frozen, as the reference (base + SFT adapter).
        precompute_reference: run the reference once over the train and validation data before training, cache
            its log-probs on disk (reused by later runs with the same reference, data and settings), and free it.
        reference_batch_size: pairs per batch when precomputing reference log-probs (no gradients: can be larger).
        gradient_checkpointing: recompute decoder activations in the backward pass (less memory, ~30% more time).
        compile: ``torch.compile`` the policy's decoder where it works (CUDA, or CPU with a C++ compiler).
        on_nonfinite: what to do with an optimiser step whose loss or gradient is NaN/inf: ``skip`` it (counted
            in the ``nonfinite_steps`` metric) or ``stop`` with an error naming the step and batch.
        quantization_bits: load the base weights in 4 or 8 bits with bitsandbytes (QLoRA; needs a CUDA GPU and
            ``model.peft``).
        shared_prompt: run each pair as one sequence ``prompt ∥ chosen ∥ rejected`` (the prompt computed once) with
            a mask that hides chosen from rejected; exact, see :mod:`lightpref.packing`.
        packing: pack the batch's sequences into rows without padding (attention does not cross sequences);
            exact. Either falls back to the plain forward, with a warning, where the attention implementation
            cannot do it.
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
        peft: PeftConfig | None = None,
        sft_adapter: str | None = None,
        precompute_reference: bool = False,
        reference_batch_size: int = 16,
        gradient_checkpointing: bool = False,
        compile: bool = False,
        on_nonfinite: Literal["skip", "stop"] = "skip",
        quantization_bits: int | None = None,
        shared_prompt: bool = True,
        packing: bool = True,
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
        if quantization_bits is not None and peft is None and sft_adapter is None:
            raise ValueError("quantised weights cannot be trained directly: `model.quantization_bits` needs an "
                             "adapter (`model.peft`, e.g. a LoraConfig, or `model.sft_adapter`)")
        self.load_kwargs = {"dtype": dtype, "attn_implementation": attn_implementation,
                            "trust_remote_code": trust_remote_code, "quantization_bits": quantization_bits}
        self.optimizer_factory = optimizer
        check_optimizer(optimizer)  # a bad value (a negative lr…) fails now, naming its key
        self.scheduler_factory = lr_scheduler
        self.logits_chunk_size = logits_chunk_size
        self.shared_prompt, self.packing = shared_prompt, packing
        self.export_dir = export_dir
        self.peft_config = peft
        self.sft_adapter = sft_adapter
        if (peft is not None or sft_adapter is not None) and reference is not None:
            raise ValueError("`model.reference` cannot be combined with `model.peft`/`model.sft_adapter`: with an "
                             "adapter the reference is the base model itself; remove one of them")
        if reference_batch_size < 1:
            raise ValueError(f"`model.reference_batch_size` must be a positive integer, got {reference_batch_size}")
        self.precompute_reference = precompute_reference
        self.reference_batch_size = reference_batch_size
        self.gradient_checkpointing = gradient_checkpointing
        self.compile_decoder = compile
        if on_nonfinite not in ACTIONS:
            raise ValueError(f"`model.on_nonfinite` must be one of {list(ACTIONS)}, got {on_nonfinite!r}")
        self.on_nonfinite = on_nonfinite
        self.reference_cache: ReferenceCache | None = None
        self.policy: nn.Module | None = None
        self.reference: nn.Module | None = None
        self.metrics = nn.ModuleDict({f"{stage}_metrics": nn.ModuleDict() for stage in ("train", "val", "test")})
        self.register_load_state_dict_post_hook(_ignore_missing_reference)

    @property
    def prompt_views(self) -> Mapping[str, PromptView]:
        """The extra prompt views the loss needs; the DataModule tokenises them."""
        return dict(self.loss.views)

    @property
    def adapter_reference(self) -> bool:
        """Whether the reference is the policy's own base (its adapter switched off) rather than a separate copy."""
        return self.peft_config is not None or self.sft_adapter is not None

    def configure_model(self) -> None:
        if self.policy is not None:  # idempotent: Lightning may call it more than once
            return
        self.policy = load_model(self.pretrained, gguf_file=self.gguf_file, **self.load_kwargs)
        needs_copy = self.loss.requires_reference and not self.adapter_reference and not self.precompute_reference
        if needs_copy:
            self.reference = self._build_reference()
        if self.adapter_reference:
            self.policy = attach_adapter(self.policy, self.peft_config, self.sft_adapter)
        self.policy.train()  # from_pretrained returns eval mode, and Lightning keeps each submodule's mode
        if self.gradient_checkpointing:
            self.policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.compile_decoder:
            self.policy.get_decoder().compile()
        shard_models(self, [self.policy, self.reference], self.device_mesh)  # FSDP2 only: both models alike

    def _build_reference(self, from_source: bool = False) -> nn.Module:
        """A frozen reference: a copy of the still untouched policy, or loaded from its source (the ``reference``
        model, else ``pretrained``), as it must be once the policy has trained or been sharded."""
        if self.reference_source is not None:
            reference = load_model(self.reference_source, **self.load_kwargs)
        elif from_source:
            reference = load_model(self.pretrained, gguf_file=self.gguf_file, **self.load_kwargs)
        else:
            reference = copy.deepcopy(self.policy)
        return reference.requires_grad_(False).eval()

    def load_reference(self) -> nn.Module:
        """A fresh frozen reference loaded from its source, for runs that hold none (e.g. to score samples)."""
        return self._build_reference(from_source=True)

    def load_tokenizer(self) -> Any:
        """The tokenizer of ``pretrained``."""
        return load_tokenizer(self.pretrained, self.gguf_file, self.load_kwargs["trust_remote_code"])

    @contextmanager
    def reference_scope(self) -> Iterator[nn.Module | None]:
        """The reference as a model: the separate frozen copy, or the policy with its adapter switched off (in eval
        mode), or ``None`` when the run holds no reference model (a reference-free loss, or precomputed log-probs).
        """
        if self.reference is not None:
            yield self.reference
        elif self.adapter_reference:
            with as_reference(self.policy) as base:
                yield base
        else:
            yield None

    def train(self, mode: bool = True) -> PreferenceModule:
        super().train(mode)
        if self.reference is not None:
            self.reference.eval()  # the reference never trains, not even its dropout
        return self

    # --- forward -------------------------------------------------------------------------------------------------

    def _token_logprobs(self, model: nn.Module, sequences: Mapping[str, Tensor], collision: bool = False
                        ) -> TokenLogProbs:
        return packed_completion_logprobs(
            model,
            sequences["input_ids"],
            sequences["attention_mask"],
            sequences["completion_mask"],
            chunk_size=self.logits_chunk_size,
            with_collision=collision,
            pack=self.packing,
            shared_prompt=self.shared_prompt,
        )

    def _reference_tokens(self, sequences: Mapping[str, Tensor], split: str, index: Tensor | None,
                          view: str = MAIN) -> TokenLogProbs:
        """The reference's per-token log-probs: from the cache, the separate copy, or the adapter-free base."""
        if self.reference_cache is not None:
            if index is None:
                raise KeyError("precomputed reference log-probs need batches with an 'index'; use PreferenceDataModule")
            return self.reference_cache.tokens(split, sequences, index, view)
        with torch.no_grad(), self.reference_scope() as reference:
            return self._token_logprobs(reference, sequences)

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
    def _view_records(self, batch: Mapping[str, Any], compute: Callable[[Mapping[str, Tensor], str], TokenLogProbs]
                      ) -> dict[str, LogProbs]:
        """Log-probs under each prompt view the loss declared, without gradient."""
        records = {}
        for name in self.loss.views:
            if name not in batch.get("views", {}):
                raise KeyError(
                    f"the loss {type(self.loss).__name__} needs the prompt view {name!r}, but the batch has none; "
                    "build the DataModule with `prompt_views=module.prompt_views` or attach both to one Trainer"
                )
            records[name] = replace(self._record(compute(batch["views"][name], name)), views={})
        return records

    @contextmanager
    def _evaluating(self) -> Iterator[None]:
        """The policy in eval mode (no dropout noise) for its no-gradient view passes."""
        was_training = self.policy.training
        self.policy.eval()
        try:
            yield
        finally:
            self.policy.train(was_training)

    def forward(self, batch: Mapping[str, Any], split: str = "train") -> tuple[dict[str, Tensor], Tensor]:
        """Loss and metrics of one batch of ``split`` (which names its precomputed reference values)."""
        policy_tokens = self._token_logprobs(self.policy, batch, self.loss.needs_collision_logps)
        policy_views = {}
        if self.loss.views:
            with self._evaluating():
                policy_views = self._view_records(batch, lambda sequences, _: self._token_logprobs(self.policy,
                                                                                                  sequences))
        policy = self._record(policy_tokens, policy_views)
        reference = None
        if self.loss.requires_reference:
            index = batch.get("index")

            def reference_tokens(sequences: Mapping[str, Tensor], view: str = MAIN) -> TokenLogProbs:
                return self._reference_tokens(sequences, split, index, view)

            reference = self._record(reference_tokens(batch), self._view_records(batch, reference_tokens))
        with torch.autocast(policy.chosen.device.type, enabled=False):  # loss math in float32 under mixed precision
            output = self.loss(policy, reference)
        vocab = self.policy.get_output_embeddings().out_features if self.logits_chunk_size else None
        return batch_metrics(output, policy_tokens, vocab), output.losses.mean()

    # --- steps and metrics ---------------------------------------------------------------------------------------

    def _step(self, batch: Mapping[str, Any], stage: str) -> Tensor:
        metrics, loss = self(batch, "train" if stage == "train" else "val")
        store = f"{stage}_metrics"
        log_metrics(self, self.metrics[store], f"metrics.{store}", stage, metrics, batch["input_ids"].shape[0] // 2)
        return loss

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "test")

    # --- precomputed reference ------------------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        self._prepare_reference_cache()

    def on_validation_start(self) -> None:
        self._prepare_reference_cache()

    def on_test_start(self) -> None:
        self._prepare_reference_cache()

    def _prepare_reference_cache(self) -> None:
        """Load or compute the reference's log-probs of every pair, then free the separate reference model."""
        if self.precompute_reference and self.loss.requires_reference and self.reference_cache is None:
            self.reference_cache = prepare_reference_cache(self)
            self.reference = None  # the reference model, if any, is freed entirely
            gc.collect()

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

    def configure_callbacks(self) -> list[Callback]:
        """The non-finite guard and atomic/SIGTERM checkpoints, unless the trainer was given its own."""
        present = {type(callback) for callback in self.trainer.callbacks} if self._trainer is not None else set()
        defaults = [NonFiniteGuard(self.on_nonfinite), SafeCheckpoints()]
        return [callback for callback in defaults if type(callback) not in present]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict", {})
        if is_sharded(self):  # FSDP loads every key the model has (strictly): its checkpoints keep the reference
            state = {}
        for key in [key for key in state if key.startswith("reference.")]:
            del state[key]  # the reference is rebuilt from its source; a checkpoint must not double in size
        checkpoint[CHECKPOINT_KEY] = policy_source(self)  # lets `lightpref export` rebuild the policy

    def on_train_end(self) -> None:
        if self.export_dir is None:
            return
        directory = Path(self.export_dir)
        if not directory.is_absolute():  # `trainer.log_dir` is collective under DDP/FSDP: read it on every rank
            directory = Path(self.trainer.log_dir or self.trainer.default_root_dir) / directory
        policy = self.policy
        if is_sharded(self):  # FSDP: every rank sends its shards; rank 0 gets an unsharded copy to save
            policy = unsharded_copy(self.trainer.strategy.model, "policy.", lambda: rebuild_policy(policy_source(self)))
        if not self.trainer.is_global_zero:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        tokenizer = getattr(datamodule, "tokenizer", None)
        if tokenizer is None:
            tokenizer = self.load_tokenizer()
        save_policy(policy, directory, tokenizer)
        rank_zero_info(f"Saved the trained policy and tokenizer in Hugging Face format to {directory}")


def _ignore_missing_reference(module: nn.Module, incompatible_keys: Any) -> None:
    """Checkpoints hold no reference weights by design: loading one must not report them missing."""
    missing = incompatible_keys.missing_keys
    missing[:] = [key for key in missing if not key.startswith("reference.")]
