"""The report of ``gpu.py``: steady-state figures of each run, the comparison with TRL, the environment, and the
markdown table with the targets read off the measured rows."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import gpu_workloads as workloads
import harness

REPO = Path(__file__).resolve().parents[1]


def summarise(result: dict[str, Any], workload: workloads.Workload, warmup: int, parameters: int,
              linear: int, attention: int) -> dict[str, Any]:
    """Steady-state figures of one finished run (its measured steps, after ``warmup``); FLOPs per token are
    ``linear``·N plus ``attention`` × the attention forward (:func:`gpu_workloads.step_flops`)."""
    batch = result["batch_size"]
    steps = range(warmup, len(result["step_seconds"]))
    seconds = [result["step_seconds"][step] for step in steps]
    tokens = [result["tokens"][step] for step in steps]
    batches = [workload.pairs[step * batch : (step + 1) * batch] for step in steps]
    expected = [sum(len(p["prompt_ids"]) * 2 + len(p["chosen_ids"]) + len(p["rejected_ids"]) for p in pairs)
                for pairs in batches]
    flops = sum(workloads.step_flops(pairs, workload.config, parameters, linear, attention) for pairs in batches)
    return {
        "step_s": statistics.median(seconds), "tokens_per_s": sum(tokens) / sum(seconds),
        "model_flops_per_s": flops / sum(seconds), "same_tokens_as_batches": tokens == expected,
        "measured_steps": len(seconds), "setup_s": (result.get("setup_seconds") or [None])[0],
        "losses": result["losses"][:2], "logps_chosen_steps": result["logps_chosen"][:2],
    }


def compare(rows: list[dict[str, Any]], loss_tolerance: float, logps_tolerance: float, step_one_only: set[str]
            ) -> None:
    """Each run against TRL's on its workload: speed and memory ratios, and at steps 1 and 2 (step 1 alone for the
    variants in ``step_one_only``, whose update differs from TRL's) the loss difference and the relative
    difference of the mean ``logps/chosen`` (the policy's log-probs of the same tokens: same batches, same model),
    which agree when within the tolerances."""
    for row in rows:
        trl = next((other for other in rows if other["workload"] == row["workload"] and other["variant"] == "trl"
                    and other["status"] == "ok"), None)
        if row["status"] != "ok" or trl is None or row is trl:
            continue
        row["speed_vs_trl"] = row["tokens_per_s"] / trl["tokens_per_s"]
        if row.get("peak_allocated_gib") and trl.get("peak_allocated_gib"):
            row["memory_vs_trl"] = row["peak_allocated_gib"] / trl["peak_allocated_gib"]
        if row["batch_size"] != trl["batch_size"]:
            continue  # other batches: losses are not comparable
        checked = 1 if row["variant"] in step_one_only else 2
        pairs = zip(row["losses"][:checked], trl["losses"], strict=False)
        row["loss_differences"] = [abs(mine - theirs) for mine, theirs in pairs]
        pairs = zip(row["logps_chosen_steps"][:checked], trl["logps_chosen_steps"], strict=False)
        row["logps_relative_differences"] = [abs(mine - theirs) / abs(theirs) for mine, theirs in pairs]
        row["losses_agree"] = all(d <= loss_tolerance for d in row["loss_differences"]) and all(
            d <= logps_tolerance for d in row["logps_relative_differences"])


def dependency_check() -> list[dict[str, Any]]:
    """lightpref's declared dependency ranges against the versions installed here."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    try:
        import tomllib
    except ImportError:  # Python 3.10
        return []
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    checks = []
    for text in declared:
        requirement = Requirement(text)
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            installed = None
        accepted = installed is not None and requirement.specifier.contains(installed, prereleases=True)
        checks.append({"requirement": text, "installed": installed, "accepted": accepted})
    return checks


def environment(cuda: bool) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    names = ("torch", "transformers", "lightning", "trl", "peft", "liger-kernel", "datasets", "accelerate")
    versions = {}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "python": platform.python_version(),
            "cpu": harness.cpu_name(), "cores": os.cpu_count(), "cuda": cuda, "versions": versions,
            "dependencies": dependency_check()}


def number(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(report: dict[str, Any]) -> str:
    """The markdown report: the setting, one row per run, then the targets on workload B."""
    env, peak = report["environment"], report["matmul_peak_flops"]
    versions = ", ".join(f"{name} {v}" for name, v in env["versions"].items() if v)
    lines = [
        f"# lightpref vs TRL on {report['device']}"
        + (" (CPU rehearsal of bench/gpu.py: a tiny model; its timings measure nothing)" if report["smoke"] else ""),
        "",
        f"{env['date']}; Python {env['python']}; {versions}. Best {report['matmul']} matmul measured in the runs: "
        f"{number(peak and peak / 1e12, 1)} TFLOP/s. {report['dtype']}, AdamW lr {report['lr']}, DPO β 0.1, "
        f"{report['warmup']} warm-up + {report['steps']} measured steps per run, one run each, "
        f"{'all in one process' if report['inline'] else 'a fresh process per run'}; {report['elapsed_s']:.0f} s in "
        f"all (budget {report['budget_s']:.0f} s).", "",
    ]
    refused = [f"{check['requirement']} (installed: {check['installed']})" for check in env["dependencies"]
               if not check["accepted"]]
    lines.append("lightpref's dependency ranges: " + ("NOT accepting " + "; ".join(refused) if refused else
                                                      "every installed version accepted") + ".")
    lines.append("")
    for name, workload in report["workloads"].items():
        lines.append(f"- **{name}**: {workload['description']}; max length {workload['max_length']}; "
                     f"{workload['parameters']:,} matmul parameters.")
    lines += ["", "| workload | run | batch | step s | tokens/s | × TRL | model TFLOP/s | % of peak | peak alloc GiB | "
              "peak reserved GiB | alloc / TRL | loss 1 | loss 2 | Δ loss vs TRL | Δ logps/chosen vs TRL (relative) | "
              "status |", "| --- " * 16 + "|"]
    for row in report["runs"]:
        if row["status"] != "ok":
            lines.append(f"| {row['workload']} | {row['variant']} | | | | | | | | | | | | | | "
                         f"{row['status']}: {row.get('error', '')} |".replace("\n", " "))
            continue
        losses = row["losses"] + [None] * (2 - len(row["losses"]))
        differences = ", ".join(f"{d:.1e}" for d in row.get("loss_differences", []))
        relative = ", ".join(f"{d:.1e}" for d in row.get("logps_relative_differences", []))
        agree = {True: " (agree)", False: " (DIFFER)", None: ""}[row.get("losses_agree")]
        status = "ok" if row["same_tokens_as_batches"] else "ok, token counts differ from the batches"
        lines.append(
            f"| {row['workload']} | {row['variant']} | {row['batch_size']} | {number(row['step_s'], 3)} | "
            f"{row['tokens_per_s']:.0f} | {number(row.get('speed_vs_trl'))} | "
            f"{row['model_flops_per_s'] / 1e12:.3g} | {number(100 * row['model_flops_per_s'] / peak, 1)} | "
            f"{number(row.get('peak_allocated_gib'))} | {number(row.get('peak_reserved_gib'))} | "
            f"{number(row.get('memory_vs_trl'))} | {number(losses[0], 4)} | {number(losses[1], 4)} | "
            f"{differences} | {relative}{agree} | {status} |")
    lines += [""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def targets(rows: list[dict[str, Any]], peak: float) -> list[str]:
    """The issue's targets on workload B, read off the measured rows (no figure, no verdict)."""
    light = next((row for row in rows if row["workload"] == "B" and row["variant"] == "lightpref"
                  and row["status"] == "ok"), None)
    if light is None or "speed_vs_trl" not in light:
        return ["targets on workload B: not measured (the lightpref or TRL run did not finish)"]
    checks = [("tokens/s ≥ 2× TRL", light["speed_vs_trl"], light["speed_vs_trl"] >= 2),
              ("peak allocated ≤ 0.6× TRL", light.get("memory_vs_trl"), (light.get("memory_vs_trl") or 9) <= 0.6),
              ("model FLOP/s ≥ 40% of the matmul peak", light["model_flops_per_s"] / peak,
               light["model_flops_per_s"] / peak >= 0.4)]
    return [f"target on B, {name}: {number(value)} — {'met' if met else 'NOT met'}" for name, value, met in checks]
