"""The three methods' claims, each decided by a statistic fixed before the runs: ``python bench/claims.py RESULTS``.

Reads ``bench/frontier.py``'s ``results.jsonl`` (several seeds per method and β) and writes, claim by claim, the
statistic, its mean ± standard error over seeds and the verdict. The statistics and the verdict rule are documented
in docs/evaluation.md ("The claims and how they are decided"); every comparison is paired by seed (same data order,
same held-out draws), and "resolved" means a mean at least two standard errors away from zero.

- **MinorDPO**, "the chosen log-probability does not collapse": per seed, the change of the held-out pairs' summed
  log π(y⁺|x) from the initial model to the last validation. Held when DPO's change is below zero by more than two
  standard errors while MinorDPO's is not, and MinorDPO − DPO is above zero by more than two; not held when
  MinorDPO's falls by more than two standard errors as well, or the paired difference is not above zero by more
  than two while DPO's falls; not resolved otherwise.
- **SGDPO**, "steadier training than DPO": per seed, the mean absolute change of the held-out reward between
  consecutive evaluations (the initial model's first); SGDPO − DPO at equal β. Held below zero by more than two
  standard errors, not held above zero by more than two, not resolved otherwise.
- **Sr-DPO / Sr-IPO**, "better reward at matched KL": first, whether the refinement term Δ moves at all (its per-step
  values over training); then per seed the Sr-method's held-out reward interpolated at the KL its base method (DPO
  / IPO) reached at its last evaluation, minus the base method's reward there. Held above zero by more than two
  standard errors, not held below zero by more than two, not resolved otherwise (or when Δ never leaves 0).

When the records keep each training pair's terms (``frontier.py --record-pairs``, always on for the arithmetic
tasks), a second table gives the distribution of Sr's Δ over all pairs of all seeds: the fraction with |Δ| > 0.01,
its quantiles, and its Pearson correlation with the pair's β·h.
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Record = dict[str, Any]
RESOLVED = 2.0  # standard errors


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """The mean and its standard error (sample standard deviation / √n; NaN for one value).

    >>> [round(value, 4) for value in mean_se([1.0, 2.0, 3.0])]
    [2.0, 0.5774]
    """
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((value - mean) ** 2 for value in values) / (len(values) - 1) / len(values))


def sign(values: Sequence[float]) -> int:
    """+1 (−1) when the mean is above (below) zero by more than two standard errors, 0 otherwise."""
    if len(values) < 2:
        return 0
    mean, se = mean_se(values)
    if se == 0:
        return int(math.copysign(1, mean)) if mean else 0
    return 1 if mean > RESOLVED * se else -1 if mean < -RESOLVED * se else 0


def runs_by(records: list[Record]) -> dict[tuple[str, float], dict[int, Record]]:
    found: dict[tuple[str, float], dict[int, Record]] = defaultdict(dict)
    for record in records:
        found[(record["method"], record["beta"])][record["seed"]] = record
    return found


def chosen_change(run: Record, initial: Record) -> float:
    """Held-out summed log π(y⁺|x) at the last validation minus the initial model's."""
    return run["val"][-1]["logps/chosen"] - initial["val"][-1]["logps/chosen"]


def reward_swing(run: Record, initial: Record) -> float:
    """Mean |reward change| between consecutive evaluations, the initial model's first."""
    rewards = [initial["evals"][-1]["reward"], *(entry["reward"] for entry in run["evals"])]
    return sum(abs(b - a) for a, b in zip(rewards, rewards[1:], strict=False)) / (len(rewards) - 1)


def reward_at_kl(run: Record, initial: Record, kl: float) -> float:
    """The run's held-out reward linearly interpolated at ``kl`` along its evaluations (KL 0: the initial model),
    taken in order of KL; beyond the last point, that point's reward."""
    points = sorted([(0.0, initial["evals"][-1]["reward"]), *((e["kl"], e["reward"]) for e in run["evals"])])
    for (kl_a, reward_a), (kl_b, reward_b) in zip(points, points[1:], strict=False):
        if kl_a <= kl <= kl_b:
            return reward_a if kl_b == kl_a else reward_a + (reward_b - reward_a) * (kl - kl_a) / (kl_b - kl_a)
    return points[-1][1]


def paired(runs: dict, method: str, base: str | None, beta: float, initial: dict[int, Record],
           statistic: Callable[..., float]) -> tuple[list[float], list[float], list[int]]:
    """Per seed present for both: the statistic of ``method`` and of ``base`` (or [] without a base)."""
    mine, theirs = runs.get((method, beta), {}), runs.get((base, beta), {}) if base else {}
    seeds = sorted(seed for seed in mine if seed in initial and (base is None or seed in theirs))
    return ([statistic(mine[s], initial[s]) for s in seeds],
            [statistic(theirs[s], initial[s]) for s in seeds] if base else [], seeds)


def _cell(values: Sequence[float], digits: int = 3) -> str:
    mean, se = mean_se(values)
    return f"{mean:+.{digits}f} ± {se:.{digits}f}"


def minor_dpo(runs: dict, initial: dict[int, Record], beta: float) -> str | None:
    minor, dpo, seeds = paired(runs, "minor_dpo", "dpo", beta, initial, chosen_change)
    if len(seeds) < 2:
        return None
    difference = [a - b for a, b in zip(minor, dpo, strict=True)]
    if sign(dpo) < 0 and sign(minor) >= 0 and sign(difference) > 0:
        verdict = "held"
    elif sign(minor) < 0 or (sign(dpo) < 0 and sign(difference) <= 0 and len(seeds) >= 3):
        verdict = "not held"
    else:
        verdict = "not resolved"
    return (f"| MinorDPO: chosen log-prob does not fall, DPO's does | {beta:g} | {len(seeds)} | Δ log π(y⁺): MinorDPO "
            f"{_cell(minor, 1)}, DPO {_cell(dpo, 1)}, difference {_cell(difference, 1)} | {verdict} |")


def sgdpo(runs: dict, initial: dict[int, Record], beta: float) -> str | None:
    mine, dpo, seeds = paired(runs, "sgdpo", "dpo", beta, initial, reward_swing)
    if len(seeds) < 2:
        return None
    difference = [a - b for a, b in zip(mine, dpo, strict=True)]
    verdict = {-1: "held", 1: "not held", 0: "not resolved"}[sign(difference)]
    return (f"| SGDPO: steadier than DPO | {beta:g} | {len(seeds)} | mean \\|reward change\\| per evaluation: SGDPO "
            f"{_cell(mine)}, DPO {_cell(dpo)}, difference {_cell(difference)} | {verdict} |")


def self_refine(runs: dict, initial: dict[int, Record], beta: float, method: str, base: str) -> str | None:
    mine, theirs = runs.get((method, beta), {}), runs.get((base, beta), {})
    seeds = sorted(seed for seed in mine if seed in theirs and seed in initial)
    if len(seeds) < 2:
        return None
    deltas = [entry["self_refine/delta"] for s in seeds for entry in mine[s]["train"] if "self_refine/delta" in entry]
    moved = bool(deltas) and max(abs(value) for value in deltas) > 1e-6
    difference = [reward_at_kl(mine[s], initial[s], theirs[s]["evals"][-1]["kl"]) - theirs[s]["evals"][-1]["reward"]
                  for s in seeds]
    verdict = {1: "held", -1: "not held", 0: "not resolved"}[sign(difference)] if moved else "not resolved (Δ = 0)"
    spread = (f"Δ per step: median {sorted(deltas)[len(deltas) // 2]:+.4f}, range [{min(deltas):+.4f}, "
              f"{max(deltas):+.4f}] over {len(deltas)} steps" if deltas else "Δ not recorded")
    return (f"| {method}: more reward than {base} at matched KL | {beta:g} | {len(seeds)} | {spread}; reward at "
            f"{base}'s final KL minus {base}'s: {_cell(difference)} | {verdict} |")


def quantile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile, linearly interpolated between order statistics.

    >>> quantile([4.0, 1.0, 3.0, 2.0], 0.5), quantile([4.0, 1.0, 3.0, 2.0], 0.9)
    (2.5, 3.7)
    """
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (position - low), 12)


def correlation(first: Sequence[float], second: Sequence[float]) -> float:
    """Pearson's correlation; NaN when either sequence is constant.

    >>> correlation([1.0, 2.0, 3.0], [2.0, 4.0, 7.0]), correlation([1.0, 2.0], [5.0, 5.0])
    (0.9933992677987828, nan)
    """
    mean_a, mean_b = sum(first) / len(first), sum(second) / len(second)
    covariance = sum((a - mean_a) * (b - mean_b) for a, b in zip(first, second, strict=True))
    spread = math.sqrt(sum((a - mean_a) ** 2 for a in first) * sum((b - mean_b) ** 2 for b in second))
    return covariance / spread if spread else math.nan


def delta_distribution(runs: dict) -> str:
    """The table of Δ's distribution over the recorded training pairs of each Sr run (all seeds); empty when no
    record keeps its pairs' terms."""
    rows = []
    for (method, beta), by_seed in sorted(runs.items()):
        steps = [step for run in by_seed.values() for step in run.get("pairs", []) if step.get("delta")]
        if not method.startswith("sr_") or not steps:
            continue
        deltas = [value for step in steps for value in step["delta"]]
        margins = [value for step in steps for value in step["margin"]]
        moved = sum(abs(value) > 0.01 for value in deltas) / len(deltas)
        spread = ", ".join(f"{quantile(deltas, q):+.4f}" for q in (0.0, 0.1, 0.5, 0.9, 1.0))
        rows.append(f"| {method} | {beta:g} | {len(by_seed)} | {len(deltas)} | {moved:.2f} | {spread} | "
                    f"{correlation(deltas, margins):+.2f} |")
    if not rows:
        return ""
    head = ["| method | β | seeds | pairs | fraction \\|Δ\\| > 0.01 | Δ quantiles 0, 0.1, 0.5, 0.9, 1 | "
            "correlation of Δ with β·h |", "|---|---|---|---|---|---|---|"]
    return "\n".join(head + rows) + "\n"


def report(records: list[Record]) -> str:
    runs = runs_by(records)
    initial = {seed: run for (method, _), by_seed in runs.items() if method == "initial"
               for seed, run in by_seed.items()}
    betas = sorted({beta for method, beta in runs if method != "initial"})
    rows = []
    for beta in betas:
        rows += [minor_dpo(runs, initial, beta), sgdpo(runs, initial, beta),
                 self_refine(runs, initial, beta, "sr_dpo", "dpo"), self_refine(runs, initial, beta, "sr_ipo", "ipo")]
    lines = ["| claim | β | seeds | statistic (mean ± standard error over seeds) | verdict |", "|---|---|---|---|---|"]
    text = "\n".join(lines + [row for row in rows if row]) + "\n"
    deltas = delta_distribution(runs)
    return text + ("\nThe refinement term Δ over the training pairs\n\n" + deltas if deltas else "")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) not in (1, 2):
        print("usage: python bench/claims.py RESULTS.jsonl [OUTPUT.md]", file=sys.stderr)
        return 2
    records = [json.loads(line) for line in Path(argv[0]).read_text().splitlines() if line.strip()]
    text = report(records)
    if len(argv) == 2:
        Path(argv[1]).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
