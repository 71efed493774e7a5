"""Does on-policy iteration help? Offline DPO on the initial pairs against iterative rounds, on the same budget.

    python bench/iterate_vs_offline.py --out runs/iterate_vs_offline --threads 1

For each loss and seed, on SmolLM2-135M-Instruct with VADER sentiment as the reward (configs/iterative_dpo.yaml):

- **offline**: one round that samples ``rounds × prompts`` train prompts from the initial policy (K samples each,
  best vs worst by VADER) and trains ``rounds × steps`` steps on those pairs;
- **iterative**: ``rounds`` rounds of ``prompts`` prompts and ``steps`` steps each, every round sampling from the
  policy the previous round trained (reference fixed at the initial model, so KL is measured to the same anchor).

Both sample the same number of completions and take the same number of optimiser steps of the same batch size. After
training, both are evaluated on the same held-out prompts (subjects never seen in training): mean VADER reward and
KL(π‖π_init). Results go to ``<out>/results.jsonl`` (one line per finished run; rerunning skips finished runs) and a
summary table is printed.

The initial policy's samples are the same for the offline run and the first iterative round (same chunk seeds), and
for every loss of one seed; they are copied instead of being sampled again (the chunk files are what the stage
would write itself).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import shutil
import time
from pathlib import Path

import torch

from lightpref.iterate.command import run_iterate

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "iterative_dpo.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--out", default="runs/iterate_vs_offline")
    add("--losses", default="dpo,minor_dpo", help="comma-separated registered loss names")
    add("--seeds", default="0,1,2")
    add("--methods", default="iterative,offline", help="which of the two to run (both by default)")
    add("--rounds", type=int, default=2)
    add("--prompts", type=int, default=16, help="train prompts per iterative round")
    add("--steps", type=int, default=8, help="optimiser steps per iterative round")
    add("--eval-prompts", type=int, default=32)
    add("--max-new-tokens", type=int, default=24)
    add("--lr", type=float, default=5e-5)
    add("--threads", type=int, default=None)
    add("--summary-only", action="store_true", help="only print the table of <out>/results.jsonl")
    return parser.parse_args(argv)


def overrides(args: argparse.Namespace, out: Path, loss: str, seed: int, offline: bool) -> list[str]:
    scale = args.rounds if offline else 1
    return [
        "--config", str(CONFIG), "--seed_everything", str(seed), "--iterate.out_dir", str(out),
        "--iterate.seed", str(seed), "--iterate.rounds", "1" if offline else str(args.rounds),
        "--iterate.prompts_per_round", str(args.prompts * scale), "--trainer.max_steps", str(args.steps * scale),
        "--iterate.num_eval_prompts", str(args.eval_prompts), "--iterate.max_new_tokens", str(args.max_new_tokens),
        "--model.loss", loss, "--model.optimizer.init_args.lr", str(args.lr), "--trainer.enable_progress_bar", "false",
        "--iterate.checkpoint_every_n_steps", "1000", "--ckpt_path", "last",
    ]


def seed_from(source: Path, target: Path) -> None:
    """Copy finished sample chunks and the initial evaluation (identical computations) from another run."""
    for sub in ("round_1/samples", "round_0"):
        if (source / sub).is_dir():
            for path in (source / sub).iterdir():
                destination = target / sub / path.name
                if not destination.exists():
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, destination)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    if args.summary_only:
        summarise(results)
        return 0
    done = {(r["loss"], r["seed"], r["method"]) for r in map(json.loads, results.read_text().splitlines())} \
        if results.is_file() else set()
    for seed in map(int, args.seeds.split(",")):
        for loss in args.losses.split(","):
            for method in args.methods.split(","):
                if (loss, seed, method) in done:
                    continue
                directory = out / f"{loss}_seed{seed}_{method}"
                for other in out.glob(f"*_seed{seed}_*"):
                    if other != directory:
                        seed_from(other, directory)
                start = time.perf_counter(), time.process_time()
                history = run_iterate(overrides(args, directory, loss, seed, method == "offline"))
                final = history[-1]
                samples = [json.loads(line) for line in (directory / f"round_{len(history) - 1}" /
                                                         "eval_samples.jsonl").read_text().splitlines()]
                rewards = [row["reward"] for row in samples]
                mean = sum(rewards) / len(rewards)
                stderr = math.sqrt(sum((r - mean) ** 2 for r in rewards) / (len(rewards) - 1) / len(rewards))
                record = {"loss": loss, "seed": seed, "method": method, "reward": final["heldout/reward"],
                          "reward_stderr": stderr, "kl": final["heldout/kl"], "history": history,
                          "wall_s": round(time.perf_counter() - start[0], 1),
                          "cpu_s": round(time.process_time() - start[1], 1), "settings": vars(args)}
                with results.open("a") as file:
                    file.write(json.dumps(record) + "\n")
                gc.collect()  # the finished run's models (cycles through Lightning objects) before the next one
                print(f"{loss} seed {seed} {method}: reward {mean:.3f} ± {stderr:.3f}, KL {final['heldout/kl']:.2f} "
                      f"({record['wall_s']} s wall, {record['cpu_s']} s CPU)", flush=True)
    summarise(results)
    return 0


def mean_and_stderr(values: list[float]) -> str:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return f"{mean:.3f}"
    return f"{mean:.3f} ± {math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values)):.3f}"


def summarise(results: Path) -> None:
    """Per loss and method, over the seeds where both methods finished: mean ± standard error over seeds of the
    final held-out reward and KL, and of the per-seed difference iterative − offline."""
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    runs = {(row["loss"], row["seed"], row["method"]): row for row in rows}
    print("| loss | method | seeds | reward | KL(π‖π_init) | reward after round 1 (KL) |")
    print("|---|---|---|---|---|---|")
    for loss in dict.fromkeys(row["loss"] for row in rows):
        seeds = sorted(seed for (name, seed, method) in runs if name == loss and method == "offline"
                       and (loss, seed, "iterative") in runs)
        if not seeds:
            continue
        for method in ("offline", "iterative"):
            group = [runs[(loss, seed, method)] for seed in seeds]
            middle = ""
            if method == "iterative":
                middle = (f"{mean_and_stderr([g['history'][1]['heldout/reward'] for g in group])} "
                          f"({mean_and_stderr([g['history'][1]['heldout/kl'] for g in group])})")
            print(f"| {loss} | {method} | {','.join(map(str, seeds))} | "
                  f"{mean_and_stderr([g['reward'] for g in group])} | {mean_and_stderr([g['kl'] for g in group])} | "
                  f"{middle} |")
        differences = [runs[(loss, seed, "iterative")]["reward"] - runs[(loss, seed, "offline")]["reward"]
                       for seed in seeds]
        kl_differences = [runs[(loss, seed, "iterative")]["kl"] - runs[(loss, seed, "offline")]["kl"]
                          for seed in seeds]
        print(f"| {loss} | iterative − offline (paired by seed) | {','.join(map(str, seeds))} | "
              f"{mean_and_stderr(differences)} | {mean_and_stderr(kl_differences)} | |")
    print()
    print("| loss | seed | method | reward ± s.e. over 32 prompts | KL | pairs per round | wall s | CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        pairs = ", ".join(f"{h['pairs/count']:.0f}" for h in row["history"][1:])
        print(f"| {row['loss']} | {row['seed']} | {row['method']} | {row['reward']:.3f} ± {row['reward_stderr']:.3f} | "
              f"{row['kl']:.2f} | {pairs} | {row['wall_s']:.0f} | {row['cpu_s']:.0f} |")


if __name__ == "__main__":
    raise SystemExit(main())
