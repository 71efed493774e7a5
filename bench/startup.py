"""Start-up time of lightpref's commands against ``python -c "import torch"``, side by side in one run.

    python bench/startup.py [--repeats 7] [--markdown]

Each command runs in a fresh process; the commands take turns (round-robin), so a change in machine load during
the run affects them alike. Reported: median and minimum wall time, and the median's ratio to ``import torch``
(target for ``losses``, ``--help`` and ``export --help``: ≤ 1.5×). The load average before and after is printed
with the figures: on a shared machine it moves them more than anything else.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

COMMANDS = {
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
    "lightpref --help": [sys.executable, "-m", "lightpref", "--help"],
    "lightpref losses": [sys.executable, "-m", "lightpref", "losses"],
    "lightpref export --help": [sys.executable, "-m", "lightpref", "export", "--help"],
    'python -c "import lightning.pytorch"': [sys.executable, "-c", "import lightning.pytorch"],
    "lightpref fit --help": [sys.executable, "-m", "lightpref", "fit", "--help"],
}
TARGETS = ("lightpref --help", "lightpref losses", "lightpref export --help")


def run_once(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs of each command (default 7)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    env_note = f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    load_before = os.getloadavg()
    for command in COMMANDS.values():  # one warm-up run each: the first run reads files from disk
        run_once(command)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            times[name].append(run_once(command))
    load_after = os.getloadavg()
    torch_median = statistics.median(times['python -c "import torch"'])
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {env_note}")
    print(f"load average (1, 5, 15 min) before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; "
          f"after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; {args.repeats} runs each")
    if args.markdown:
        print("\n| command | median (s) | min (s) | median / import torch |\n| --- | --- | --- | --- |")
    for name, values in times.items():
        median, ratio = statistics.median(values), statistics.median(values) / torch_median
        flag = " (target ≤ 1.5×)" if name in TARGETS else ""
        if args.markdown:
            print(f"| `{name}` | {median:.2f} | {min(values):.2f} | {ratio:.2f}×{flag} |")
        else:
            print(f"{name:<40} median {median:6.2f} s  min {min(values):6.2f} s  {ratio:5.2f}× import torch{flag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
