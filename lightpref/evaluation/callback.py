"""``GenerationEvaluation``: does training actually align? Sample, judge with a ground-truth reward, measure KL.

Add it to a config under ``trainer.callbacks``::

    trainer:
      callbacks:
        - class_path: lightpref.evaluation.GenerationEvaluation
          init_args:
            reward: {class_path: lightpref.evaluation.VaderSentiment}
            num_prompts: 32
            max_new_tokens: 48
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from transformers import PreTrainedTokenizerBase

from lightpref.evaluation.generation import Evaluation, SamplingSettings, evaluate_policy
from lightpref.evaluation.prompts import read_prompts, review_prompts
from lightpref.evaluation.rewards import Prompt, RewardFunction


class GenerationEvaluation(Callback):
    """Sample completions of held-out prompts from the policy, score them, and estimate KL(π‖π_ref).

    Logs ``eval/reward`` (mean ground-truth reward), ``eval/kl`` (mean over samples of Σ_t log π − log π_ref over
    the sampled tokens), ``eval/length`` (mean completion tokens) and, with a TensorBoard logger, a table of sample
    texts (``eval/samples``; other loggers get only the numbers). Sampling is seeded and runs inside
    ``torch.random.fork_rng``: the same prompts get the same random numbers at every evaluation, and training's
    random stream is not disturbed. Every rank evaluates all prompts (identical results under DDP).

    Args:
        reward: the ground-truth judge, e.g. :class:`~lightpref.evaluation.VaderSentiment`.
        prompts: the prompts, strings or chat messages; else ``prompts_file``; else lightpref's held-out review
            prompts (:func:`~lightpref.evaluation.review_prompts` with ``split="eval"``).
        prompts_file: a ``.jsonl`` file with a ``prompt`` field per row, or a text file with one prompt per line.
        num_prompts: evaluate only the first this many prompts; ``None`` for all.
        every_n_validations: evaluate at the end of every n-th validation run (sanity checks excluded).
        every_n_steps: evaluate every n optimiser steps instead, independent of validation.
        evaluate_at_start: also evaluate before the first training step (written to the loggers at step 0 and to
            :attr:`history`, not to ``callback_metrics``).
        max_new_tokens, temperature, top_p, batch_size, chat_template, seed: sampling, see
            :class:`~lightpref.evaluation.generation.SamplingSettings`.
        missing_reference: what to do when the module holds no reference model (reference-free losses, precomputed
            reference log-probs): ``"load"`` loads one lazily from the reference's source (the initial policy, or
            ``model.reference``, which is what the KL is meant to be measured against); ``"skip"`` logs no
            ``eval/kl`` and warns once.
        num_logged_samples: rows in the sample table.
    """

    def __init__(
        self,
        reward: RewardFunction,
        prompts: list[Prompt] | None = None,
        prompts_file: str | None = None,
        num_prompts: int | None = 32,
        every_n_validations: int = 1,
        every_n_steps: int | None = None,
        evaluate_at_start: bool = False,
        max_new_tokens: int = 48,
        temperature: float = 1.0,
        top_p: float = 1.0,
        batch_size: int = 8,
        chat_template: bool = False,
        seed: int = 0,
        missing_reference: Literal["load", "skip"] = "load",
        num_logged_samples: int = 8,
    ) -> None:
        super().__init__()
        if not isinstance(reward, RewardFunction):
            raise TypeError(
                f"`reward` must be a lightpref RewardFunction (e.g. class_path: lightpref.evaluation.VaderSentiment), "
                f"got {type(reward).__name__}"
            )
        if prompts is not None and prompts_file is not None:
            raise ValueError("give the evaluation prompts as `prompts` or `prompts_file`, not both")
        for name, value in {"every_n_validations": every_n_validations, "every_n_steps": every_n_steps}.items():
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        if missing_reference not in ("load", "skip"):
            raise ValueError(f"`missing_reference` must be 'load' or 'skip', got {missing_reference!r}")
        if prompts_file is not None:
            prompts = read_prompts(prompts_file)
        elif prompts is None:
            prompts = review_prompts(split="eval")
        if not prompts:
            raise ValueError("`prompts` is empty; give at least one evaluation prompt")
        if num_prompts is not None:
            if num_prompts < 1:
                raise ValueError(f"`num_prompts` must be a positive integer or null, got {num_prompts!r}")
            prompts = prompts[:num_prompts]
        self.reward = reward
        self.prompts: list[Prompt] = list(prompts)
        self.every_n_validations, self.every_n_steps = every_n_validations, every_n_steps
        self.evaluate_at_start = evaluate_at_start
        self.settings = SamplingSettings(max_new_tokens, temperature, top_p, batch_size, chat_template, seed)
        self.missing_reference = missing_reference
        self.num_logged_samples = num_logged_samples
        # one {"step", "reward", "kl" (when measured), "length"} per evaluation; "step" counts the optimiser steps the
        # evaluated policy has taken (loggers get Lightning's own step index, as for `val/` metrics)
        self.history: list[dict[str, float]] = []
        self._validations = 0
        self._last_step = -1
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._loaded_reference: nn.Module | None = None
        if not self.settings.exact_kl:
            rank_zero_warn(
                f"GenerationEvaluation samples with temperature {temperature} and top_p {top_p}: `eval/kl` is then "
                "the log-ratio averaged under that sampler, not exactly KL(π‖π_ref); use temperature 1 and top_p 1 "
                "for an unbiased estimate"
            )

    # --- hooks ---------------------------------------------------------------------------------------------------

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.evaluate_at_start:
            metrics = self.evaluate(trainer, pl_module)
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or self.every_n_steps is not None:
            return
        self._validations += 1
        if self._validations % self.every_n_validations == 0:
            self._log(pl_module, self.evaluate(trainer, pl_module), on_step=False)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if self.every_n_steps is None or step == self._last_step or step % self.every_n_steps:
            return  # several micro-batches share one step under gradient accumulation
        self._last_step = step
        self._log(pl_module, self.evaluate(trainer, pl_module), on_step=True)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(reward=repr(self.reward), prompts=len(self.prompts), seed=self.settings.seed,
                                        every_n_validations=self.every_n_validations, every_n_steps=self.every_n_steps)

    def state_dict(self) -> dict[str, Any]:
        return {"validations": self._validations, "last_step": self._last_step, "history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._validations = state_dict["validations"]
        self._last_step = state_dict["last_step"]
        self.history = list(state_dict["history"])

    # --- work ----------------------------------------------------------------------------------------------------

    def evaluate(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        """Run one evaluation now; returns (and records in :attr:`history`) its ``eval/…`` metrics."""
        policy = getattr(pl_module, "policy", None)
        if not isinstance(policy, nn.Module):
            raise TypeError(
                f"GenerationEvaluation needs a module with a `policy` model (lightpref's PreferenceModule), "
                f"got {type(pl_module).__name__}"
            )
        device = next(policy.parameters()).device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # loading draws numbers too
            tokenizer = self._get_tokenizer(trainer, pl_module)
            scorer = getattr(pl_module, "scorer", None)
            chunk_size = scorer.chunk_size if scorer is not None else 1024
            result = evaluate_policy(policy, self._reference(pl_module, policy), tokenizer, self.prompts,
                                     self.reward, self.settings, chunk_size)
        metrics = {"eval/reward": result.mean_reward, "eval/length": result.mean_length}
        if result.mean_kl is not None:
            metrics["eval/kl"] = result.mean_kl
        self.history.append({"step": trainer.global_step, **{k.removeprefix("eval/"): v for k, v in metrics.items()}})
        if trainer.is_global_zero:
            self._log_samples(trainer, result)
        return metrics

    def _log(self, pl_module: LightningModule, metrics: dict[str, float], on_step: bool) -> None:
        for name, value in metrics.items():
            pl_module.log(name, value, on_step=on_step, on_epoch=not on_step, batch_size=len(self.prompts))

    def _log_samples(self, trainer: Trainer, result: Evaluation) -> None:
        loggers = [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
        if not loggers:
            return
        table = sample_table(result, self.num_logged_samples)
        for logger in loggers:
            logger.experiment.add_text("eval/samples", table, global_step=trainer.global_step)

    def _get_tokenizer(self, trainer: Trainer, pl_module: LightningModule) -> PreTrainedTokenizerBase:
        if self._tokenizer is None:
            datamodule = getattr(trainer, "datamodule", None)
            if datamodule is not None and hasattr(datamodule, "load_tokenizer"):
                self._tokenizer = datamodule.load_tokenizer()
            else:
                self._tokenizer = pl_module.source.load_tokenizer()
        return self._tokenizer

    @contextmanager
    def _reference(self, pl_module: LightningModule, policy: nn.Module) -> Iterator[nn.Module | None]:
        """The reference model while the samples are scored: the module's separate copy; a LoRA policy with its
        adapter switched off; or, when the module holds none (reference-free loss, precomputed reference
        log-probs), the reference loaded from its source (``missing_reference: load``) or nothing (``skip``)."""
        with pl_module.reference.scope() as reference:
            if reference is not None:
                yield reference
                return
        if self.missing_reference == "skip":
            rank_zero_warn("GenerationEvaluation: the module has no reference model, so `eval/kl` is not logged "
                           "(set `missing_reference: load` to load the initial policy as the reference)")
            yield None
        else:
            if self._loaded_reference is None:
                rank_zero_info("GenerationEvaluation: loading the reference from its source for `eval/kl`")
                device = next(policy.parameters()).device
                self._loaded_reference = pl_module.reference.load_model().to(device)
            yield self._loaded_reference


def sample_table(result: Evaluation, rows: int) -> str:
    """A markdown table of the first ``rows`` samples: prompt, completion, reward, and KL term when known."""
    header = "| prompt | completion | reward |" + (" log π − log π_ref |" if result.kl is not None else "")
    lines = [header, "|---|---|---|" + ("---|" if result.kl is not None else "")]
    for index in range(min(rows, len(result.samples.texts))):
        prompt = result.samples.prompts[index]
        if not isinstance(prompt, str):
            prompt = " / ".join(str(message.get("content", "")) for message in prompt)
        cells = [_cell(prompt), _cell(result.samples.texts[index]), f"{result.rewards[index].item():.3f}"]
        if result.kl is not None:
            cells.append(f"{result.kl[index].item():.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip() or " "
