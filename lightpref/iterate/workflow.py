"""``lightpref iterate --config FILE.yaml``: on-policy preference rounds through the normal Lightning ``Trainer``.

Each round r = 1..R: sample K completions per prompt from the round's starting policy (the initial model, then the
previous round's trained policy), score them with the reward, pair them with the pairing rule, and train one round
of ``model.loss`` on those pairs with :class:`~lightpref.training.module.PreferenceModule` and
:class:`~lightpref.data.PreferenceDataModule`, built from the config's ``model`` and ``data`` sections. After each
round (and once for the initial model) the policy is sampled on held-out prompts: the mean reward and KL(π‖π_init)
(and, with ``update_reference``, KL to the round's reference) go to TensorBoard under ``<out_dir>/rounds``.

Layout of ``out_dir`` (everything a user may inspect)::

    config.json                      the parsed config of the run (checked on resume; written once the start
                                     checks pass, see :mod:`lightpref.iterate.start`)
    round_0/eval.json                held-out reward of the initial model
    round_<r>/samples/               every chunk's samples and rewards (JSON)
    round_<r>/pairs.jsonl            the round's preference pairs (a dataset ``lightpref fit`` reads)
    round_<r>/pair_stats.json        sample reward, pair count, reward gap, degenerate pairs dropped
    round_<r>/checkpoints/last.ckpt  the round's training checkpoint (deleted once the round's policy is saved,
                                     unless ``iterate.keep_checkpoints``)
    round_<r>/train/                 the round's training TensorBoard logs
    round_<r>/policy/                the trained policy and tokenizer (Hugging Face format)
    round_<r>/eval.json, eval_samples.jsonl
    rounds/                          TensorBoard: per-round held-out reward, KL, pair statistics

``--ckpt_path last`` continues a stopped run: finished stages are read back, a round's sampling continues at the
first chunk without samples, and training continues from the round's ``last.ckpt``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.pytorch import seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from lightpref.commands import trainer_cli
from lightpref.commands.lightning_parser import PreferenceArgumentParser
from lightpref.data import PreferenceDataModule
from lightpref.evaluation.generation import SamplingSettings, evaluate_policy, sequence_logprobs
from lightpref.io import atomic_write_text
from lightpref.iterate.settings import Iteration
from lightpref.iterate.stages import (
    FaultHook,
    barrier,
    chunks_of,
    collect_pairs,
    fault_point,
    rank_and_world,
    sample_and_score,
    write_jsonl,
)
from lightpref.models.pretrained import converted_gguf, load_model, load_tokenizer
from lightpref.run.checkpointing import remove_path, replace_atomically, staging_path
from lightpref.training.module import PreferenceModule


def add_section(parser: PreferenceArgumentParser, name: str) -> None:
    """The ``iterate`` (:class:`Iteration`) or ``model`` (:class:`PreferenceModule`) section of the config."""
    if name == "iterate":
        parser.add_class_arguments(Iteration, "iterate", sub_configs=True)
    else:
        parser.add_class_arguments(PreferenceModule, "model", skip={"export_dir"}, sub_configs=True)


def instantiate(name: str, section: Namespace) -> Any:
    """The object of one config section, built afresh (each round gets its own module, loss and optimiser)."""
    parser = PreferenceArgumentParser(env_prefix="")
    add_section(parser, name)
    return getattr(parser.instantiate(Namespace(**{name: section})), name)


class IterativeRun:
    """One ``lightpref iterate`` run: the parsed config and the state on disk under ``iterate.out_dir``."""

    def __init__(self, config: Namespace, iteration: Iteration) -> None:
        self.config, self.iteration = config, iteration
        self.out = Path(iteration.out_dir)
        model = config.model
        self.initial = (model.pretrained, model.gguf_file)
        self.tokenizer = load_tokenizer(model.pretrained, model.gguf_file, model.trust_remote_code)
        chat = iteration.chat_template
        self.chat = bool(getattr(self.tokenizer, "chat_template", None)) if chat is None else chat
        self.sampling = SamplingSettings(**{**vars(iteration.sampling), "chat_template": self.chat})
        if (model.peft is not None or model.sft_adapter is not None) and not iteration.update_reference \
                and iteration.rounds > 1:
            raise ValueError("with `model.peft`/`model.sft_adapter` the reference is the adapter-free base, which from "
                             "round 2 on is the previous round's policy: set `iterate.update_reference: true`")
        self.rank = rank_and_world()[0]
        accelerator = str(getattr(config.trainer, "accelerator", "auto"))
        on_gpu = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
        # sampling and held-out evaluation run on this process's GPU, outside the Trainer
        self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if on_gpu else torch.device("cpu")
        self._initial_model: nn.Module | None = None

    # --- models ---------------------------------------------------------------------------------------------------

    def policy_source(self, round_: int) -> tuple[str, str | None]:
        """(pretrained, gguf_file) of the policy that starts round ``round_``."""
        return self.initial if round_ == 1 else (str(self.round_dir(round_ - 1) / "policy"), None)

    def load(self, source: tuple[str, str | None]) -> nn.Module:
        model = self.config.model
        return load_model(source[0], gguf_file=source[1], dtype=model.dtype, trust_remote_code=model.trust_remote_code,
                          attn_implementation=model.attn_implementation).to(self.device)

    def initial_model(self) -> nn.Module:
        if self._initial_model is None:
            self._initial_model = self.load(self.initial).requires_grad_(False)
        return self._initial_model

    def round_dir(self, round_: int) -> Path:
        return self.out / f"round_{round_}"

    # --- the run ----------------------------------------------------------------------------------------------------

    def run(self) -> list[dict[str, float]]:
        """All rounds (finished ones are skipped); returns each round's logged metrics, round 0 first."""
        logger = TensorBoardLogger(self.out, name="", version="rounds", default_hp_metric=False)
        history = [self.evaluate(0, logger)]
        for round_ in range(1, self.iteration.rounds + 1):
            directory = self.round_dir(round_)
            if not (directory / "pairs.jsonl").is_file():
                self.make_pairs(round_)
            if not (directory / "policy").is_dir():
                self.train(round_)
            history.append(self.evaluate(round_, logger))
        return history

    def make_pairs(self, round_: int) -> None:
        directory = self.round_dir(round_)
        chunks = chunks_of(self.iteration.round_prompts(round_), self.iteration.prompts_per_chunk)
        settings = SamplingSettings(**{**vars(self.sampling), "seed": self.iteration.seed * 1009 + round_})
        sample_and_score(lambda: self.load(self.policy_source(round_)), self.tokenizer, chunks, self.iteration.reward,
                         settings, self.iteration.samples_per_prompt, directory / "samples", f"round{round_}")
        fault_point(f"round{round_}:scored")
        barrier()
        if self.rank == 0:
            records, stats = collect_pairs(directory / "samples", len(chunks), self.iteration.samples_per_prompt,
                                           self.iteration.pairing, self.chat)
            if not records:
                raise ValueError(f"round {round_} produced no pairs (every prompt's samples tied within "
                                 f"`iterate.pairing` min_gap, or the pairs were degenerate: "
                                 f"{stats['pairs/dropped_degenerate']:.0f} with an empty or identical completion); "
                                 "sample more per prompt, lower the gap or raise `iterate.max_new_tokens`")
            atomic_write_text(directory / "pair_stats.json", json.dumps(stats, indent=1))
            write_jsonl(directory / "pairs.jsonl", records)
        barrier()
        fault_point(f"round{round_}:paired")

    def module(self, round_: int) -> PreferenceModule:
        """The round's module: the policy starts where the round starts, the reference per ``update_reference``."""
        model = Namespace(**vars(self.config.model))
        model.pretrained, model.gguf_file = self.policy_source(round_)
        if round_ > 1 and not self.iteration.update_reference and model.reference is None:
            pretrained, gguf_file = self.initial
            model.reference = str(converted_gguf(pretrained, gguf_file)) if gguf_file else pretrained
        elif self.iteration.update_reference:
            model.reference = None  # a frozen copy of the round's starting policy
        module = instantiate("model", model)
        module.export_dir = None  # :meth:`train` sets the round's own (aside, then renamed into place)
        return module

    def data(self, round_: int, **source: Any) -> PreferenceDataModule:
        """The round's DataModule: its pairs (or ``source``), shuffled with ``data.seed + round``."""
        data_settings = {key: value for key, value in vars(self.config.data).items() if key != "__path__"}
        data_settings["seed"] = data_settings.get("seed", 0) + round_
        source = source or {"train_files": str(self.round_dir(round_) / "pairs.jsonl")}
        return PreferenceDataModule(tokenizer=self.tokenizer, **source, **data_settings)

    def check_sections(self) -> None:
        """Build the ``model`` and ``data`` sections once (no weights are loaded), so that a setting either rejects
        fails before the run writes anything."""
        self.module(1)
        self.data(1, records=[])

    def train(self, round_: int) -> None:
        """Train the round with fit's Trainer setup (:func:`~lightpref.commands.trainer_cli.round_trainer`) and save
        its policy with fit's export (gathered from its shards under FSDP), aside and then renamed into place."""
        directory = self.round_dir(round_)
        seed_everything(self.config.seed_everything + round_, verbose=False)
        module, data = self.module(round_), self.data(round_)
        checkpoints, staging = directory / "checkpoints", staging_path(directory / "policy")
        own = [ModelCheckpoint(dirpath=checkpoints, every_n_train_steps=self.iteration.checkpoint_every_n_steps,
                               save_top_k=0, save_last=True), FaultHook(f"round{round_}")]
        trainer = trainer_cli.round_trainer(vars(self.config.trainer), own, default_root_dir=str(directory),
                                            logger=TensorBoardLogger(directory, name="", version="train"))
        if self.rank == 0:
            remove_path(staging)
        module.export_dir, module.export_overwrite = str(staging.absolute()), True
        last = checkpoints / "last.ckpt"  # a file, or a directory of shards under FSDP
        trainer.fit(module, data, ckpt_path=str(last) if last.exists() else None)
        fault_point(f"round{round_}:trained")
        if trainer.is_global_zero:
            replace_atomically(staging, directory / "policy")
            if not self.iteration.keep_checkpoints:
                shutil.rmtree(checkpoints, ignore_errors=True)  # the saved policy supersedes them
        barrier()
        fault_point(f"round{round_}:saved")

    def evaluate(self, round_: int, logger: TensorBoardLogger) -> dict[str, float]:
        """Held-out reward and KL of the policy after ``round_`` rounds (read back if already measured)."""
        path = self.round_dir(round_) / "eval.json"
        if not path.is_file() and self.rank == 0:
            metrics = self._measure(round_)
            stats_path = self.round_dir(round_) / "pair_stats.json"
            if stats_path.is_file():
                metrics.update(json.loads(stats_path.read_text()))
            atomic_write_text(path, json.dumps(metrics, indent=1))
            logger.log_metrics(metrics, step=round_)
            logger.save()
        barrier()
        return json.loads(path.read_text())

    def _measure(self, round_: int) -> dict[str, float]:
        settings = SamplingSettings(**{**vars(self.sampling), "seed": self.iteration.seed})
        initial = self.initial_model()
        policy = initial if round_ == 0 else self.load((str(self.round_dir(round_) / "policy"), None))
        reference = None if round_ == 0 else initial
        evaluation = evaluate_policy(policy, reference, self.tokenizer, self.iteration.eval_prompts,
                                     self.iteration.reward, settings)
        kl = evaluation.kl.tolist() if evaluation.kl is not None else [0.0] * len(evaluation.rewards)
        metrics = {"heldout/reward": evaluation.mean_reward, "heldout/kl": sum(kl) / len(kl),
                   "heldout/length": evaluation.mean_length}
        if self.iteration.update_reference and round_ > 1:
            start = self.load(self.policy_source(round_))
            pad = self.tokenizer.pad_token_id
            metrics["heldout/kl_round_reference"] = (
                sequence_logprobs(policy, evaluation.samples, pad, settings.batch_size)
                - sequence_logprobs(start, evaluation.samples, pad, settings.batch_size)
            ).mean().item()
        rows = [{"prompt": prompt, "completion": text, "reward": reward, "kl": value}
                for prompt, text, reward, value in zip(evaluation.samples.prompts, evaluation.samples.texts,
                                                       evaluation.rewards.tolist(), kl, strict=True)]
        write_jsonl(self.round_dir(round_) / "eval_samples.jsonl", rows)
        return metrics
