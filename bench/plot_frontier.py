"""Figures and table of ``bench/frontier.py``'s results: ``python bench/plot_frontier.py RESULTS.jsonl FIGURES_DIR``.

- ``frontier.png``: ground-truth reward against KL(π‖π_ref) at every evaluation step of every method and β (colour:
  method, marker: β), the mean over seeds with standard-error bars on both axes when there are several, each
  method's upper envelope (of the means) dashed, the initial model as a black star;
- ``frontier_curves.png``: per β (rows), the held-out pairs' chosen and rejected log-probs and the sampled reward
  against training steps, one line per method (mean over seeds);
- ``frontier.md``: one table row per method and β (means ± standard errors over seeds).

matplotlib is needed only here: ``pip install matplotlib``.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from statistics import mean
from typing import Any, NamedTuple

MARKERS = ["o", "s", "^", "D", "v", "P", "X"]


def load(results: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in results.read_text().splitlines() if line.strip()]


def by_step(records: list[dict[str, Any]], key: str, metric: str) -> dict[int, float]:
    """``metric`` of the ``key`` entries (``evals`` or ``val``), averaged over the records (seeds) per step."""
    values: dict[int, list[float]] = defaultdict(list)
    for record in records:
        for entry in record[key]:
            if metric in entry:
                values[entry["step"]].append(entry[metric])
    return {step: mean(found) for step, found in sorted(values.items())}


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error over seeds (0 for a single value, drawn without a bar)."""
    centre = mean(values)
    if len(values) < 2:
        return centre, 0.0
    return centre, (sum((v - centre) ** 2 for v in values) / (len(values) - 1) / len(values)) ** 0.5


def eval_points(runs: list[dict[str, Any]]) -> list[tuple[float, float, float, float]]:
    """Per evaluation step: (mean KL, its SE, mean reward, its SE) over the runs (seeds)."""
    by: dict[int, list[dict[str, float]]] = defaultdict(list)
    for record in runs:
        for entry in record["evals"]:
            if "kl" in entry:
                by[entry["step"]].append(entry)
    return [(*mean_se([e["kl"] for e in found]), *mean_se([e["reward"] for e in found]))
            for _, found in sorted(by.items())]


def upper_envelope(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points not beaten by one with less KL and more reward, by increasing KL.

    >>> upper_envelope([(0.0, 0.1), (1.0, 0.05), (2.0, 0.4), (3.0, 0.3)])
    [(0.0, 0.1), (2.0, 0.4)]
    """
    envelope: list[tuple[float, float]] = []
    for kl, reward in sorted(points):
        if not envelope or reward > envelope[-1][1]:
            envelope.append((kl, reward))
    return envelope


def groups(records: list[dict[str, Any]]) -> dict[tuple[str, float], list[dict[str, Any]]]:
    found: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record["method"] != "initial":
            found[(record["method"], record["beta"])].append(record)
    return found


class TaskText(NamedTuple):
    """How the figures and the table name an evaluation's reward."""

    axis: str  # the frontier's y-axis
    panel: str  # the reward panel of the curves
    prompts: str  # the held-out prompts, in the frontier's title
    sentence: str  # the table's description of a reward


TASK_TEXT = {
    "sentiment": TaskText("mean VADER sentiment of sampled reviews", "sampled reward (VADER)",
                          "held-out review prompts",
                          "rewards are mean VADER compound scores of one sampled review per held-out prompt"),
    "arithmetic": TaskText("fraction of held-out questions answered right", "sampled reward (right answers)",
                           "held-out arithmetic questions",
                           "rewards are the fraction of held-out questions whose sampled answer is right"),
}


def task_text(records: list[dict[str, Any]]) -> TaskText:
    """:data:`TASK_TEXT` of the records' task (records without one are sentiment runs)."""
    task = str((records[-1].get("config", {}) if records else {}).get("task", "sentiment"))
    return TASK_TEXT["arithmetic" if task.startswith("arithmetic") else "sentiment"]


def plot(records: list[dict[str, Any]], figures: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    text = task_text(records)
    initial = [record for record in records if record["method"] == "initial"]
    runs = groups(records)
    methods = list(dict.fromkeys(method for method, _ in runs))
    betas = sorted({beta for _, beta in runs})
    colours = {method: pyplot.get_cmap("tab10")(index) for index, method in enumerate(methods)}
    start = [(0.0, entry["reward"]) for record in initial for entry in record["evals"]]

    figure, axes = pyplot.subplots(figsize=(7.5, 5.5))
    for method in methods:
        points = list(start)
        for beta in betas:
            found = eval_points(runs.get((method, beta), []))
            points += [(kl, reward) for kl, _, reward, _ in found]
            if found:
                kl, kl_se, reward, reward_se = zip(*found, strict=True)
                axes.errorbar(kl, reward, xerr=kl_se, yerr=reward_se, color=colours[method], linestyle="none",
                              marker=MARKERS[betas.index(beta) % len(MARKERS)], alpha=0.75, markersize=5, capsize=2,
                              elinewidth=0.8)
        envelope = upper_envelope(points)
        axes.plot(*zip(*envelope, strict=True), color=colours[method], linestyle="--", linewidth=1, label=method)
    for beta in betas:
        axes.scatter([], [], color="grey", marker=MARKERS[betas.index(beta) % len(MARKERS)], label=f"β = {beta}")
    if start:
        axes.scatter(*zip(*start, strict=True), color="black", marker="*", s=150, zorder=3, label="initial model")
    axes.set_xlabel("KL(π‖π_ref) per completion (nats, sampled estimate)")
    axes.set_ylabel(text.axis)
    axes.set_title(f"Reward–KL frontier, SmolLM2-135M-Instruct, {text.prompts}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    figure.savefig(figures / "frontier.png", dpi=130)
    pyplot.close(figure)

    panels = [("val", "logps/chosen", "held-out log π(y⁺|x)"), ("val", "logps/rejected", "held-out log π(y⁻|x)"),
              ("evals", "reward", text.panel)]
    figure, axes = pyplot.subplots(len(betas), 3, figsize=(13, 3.2 * len(betas)), squeeze=False)
    for row, beta in enumerate(betas):
        for column, (key, metric, title) in enumerate(panels):
            axis = axes[row][column]
            for method in methods:
                curve = {**by_step(initial, key, metric), **by_step(runs.get((method, beta), []), key, metric)}
                if len(curve) > 1:
                    axis.plot(list(curve), list(curve.values()), marker=".", color=colours[method], label=method)
            axis.set_title(f"{title}, β = {beta}", fontsize=10)
            axis.set_xlabel("step")
            axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(figures / "frontier_curves.png", dpi=110)
    pyplot.close(figure)


def table(records: list[dict[str, Any]], timing: dict[str, Any] | None) -> str:
    initial = [record for record in records if record["method"] == "initial"]
    start_logps = {m: by_step(initial, "val", m).get(0) for m in ("logps/chosen", "logps/rejected")}
    start_reward = by_step(initial, "evals", "reward").get(0)
    config = records[-1].get("config", {}) if records else {}
    lines = [
        "Generated by `bench/frontier.py` from `results.jsonl`: means ± standard errors over seeds (no ± for one "
        f"seed); {task_text(records).sentence}; KL is the sampled estimate per completion (nats); "
        "Δ log-probs are the change of the held-out pairs' summed log-probs since the initial model.",
        "",
        "Settings: " + ", ".join(f"`{key}={value}`" for key, value in sorted(config.items())),
        "",
        f"Initial model: reward {_fmt(start_reward)}, held-out log π(y⁺) {_fmt(start_logps['logps/chosen'], 1)}, "
        f"log π(y⁻) {_fmt(start_logps['logps/rejected'], 1)}.",
    ]
    if timing:
        lines.append(f"Building the pairs took {timing.get('wall_s')} s wall ({timing.get('prompts_sampled')} "
                     "prompts sampled in that invocation).")
    lines += ["", "| method | β | seeds | final reward | final KL | best reward (KL) | Δ log π(y⁺) | Δ log π(y⁻) "
              "| val accuracy | wall s / run |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (method, beta), runs in sorted(groups(records).items()):
        rewards, kls = by_step(runs, "evals", "reward"), by_step(runs, "evals", "kl")
        best = max(rewards, key=lambda step: rewards[step])
        accuracy = by_step(runs, "val", "rewards/accuracies")
        finals = {name: [record[key][-1].get(metric) for record in runs] for name, key, metric in
                  [("reward", "evals", "reward"), ("kl", "evals", "kl"), ("chosen", "val", "logps/chosen"),
                   ("rejected", "val", "logps/rejected")]}
        cells = [method, f"{beta:g}", str(len(runs)), _spread(finals["reward"]), _spread(finals["kl"], 2),
                 f"{_fmt(rewards[best])} ({_fmt(kls.get(best), 2)})",
                 _spread(finals["chosen"], 1, start_logps["logps/chosen"]),
                 _spread(finals["rejected"], 1, start_logps["logps/rejected"]),
                 _fmt(accuracy[max(accuracy)] if accuracy else None, 2), f"{mean(r['wall_s'] for r in runs):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _spread(values: list[float | None], digits: int = 3, start: float | None = 0.0) -> str:
    """Mean ± SE over seeds of ``values`` (minus ``start`` with a sign, for changes); "n/a" when any is missing."""
    if not values or start is None or any(value is None for value in values):
        return "n/a"
    centre, se = mean_se([value - start for value in values])
    text = f"{centre:+.{digits}f}" if start else f"{centre:.{digits}f}"
    return text + (f" ± {se:.{digits}f}" if len(values) > 1 else "")


def write_report(results: Path, figures: Path, timing_path: Path | None = None) -> None:
    """Draw both figures and write the table from ``results``."""
    records = load(results)
    if not any(record["method"] != "initial" for record in records):
        raise ValueError(f"{results} holds no training runs yet; run bench/frontier.py first")
    figures.mkdir(parents=True, exist_ok=True)
    timing = json.loads(timing_path.read_text()) if timing_path and timing_path.is_file() else None
    plot(records, figures)
    (figures / "frontier.md").write_text(table(records, timing))
    print(f"wrote {figures / 'frontier.png'}, {figures / 'frontier_curves.png'} and {figures / 'frontier.md'}")


if __name__ == "__main__":
    write_report(Path(sys.argv[1]), Path(sys.argv[2]))
