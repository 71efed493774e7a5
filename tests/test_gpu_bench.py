"""bench/gpu.py, the one-shot GPU benchmark, kept working on CPU: its CPU rehearsal (``--smoke``) end to end, and
the pieces a GPU run leans on (batch-size search, FLOP count, failure isolation)."""

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"


@pytest.fixture(scope="module")
def gpu():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("gpu")
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.slow
def test_smoke_runs_every_variant_and_lightpref_matches_trl(tmp_path, gpu):
    """The CPU rehearsal: every variant has a row; lightpref's losses at steps 1 and 2 equal TRL's on the same
    batches (float32), the step-2 loss has moved (so the comparison means something), the token counts are those
    of the batches, and what needs CUDA is skipped with that reason."""
    done = subprocess.run([sys.executable, str(BENCH / "gpu.py"), "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu.json").read_text())
    rows = {(row["workload"], row["variant"]): row for row in report["runs"]}
    assert set(rows) == set(gpu.ORDER)
    has_trl = importlib.util.find_spec("trl") is not None
    for (_, variant), row in rows.items():
        spec = gpu.VARIANTS[variant]
        if spec.needs_cuda:
            assert row["status"] == "skipped" and row["error"] == "needs a CUDA device"
            continue
        if spec.side == "trl" and not has_trl:
            assert row["status"] == "skipped" and "trl" in row["error"]
            continue
        assert row["status"] == "ok", row
        assert row["same_tokens_as_batches"] and row["tokens_per_s"] > 0 and row["model_flops_per_s"] > 0
        assert row["losses"][0] == pytest.approx(0.6931472, abs=1e-5)  # policy = reference at step 1
        if has_trl and spec.side == "lightpref":
            assert row["losses_agree"], row
            assert max(row["loss_differences"]) < 1e-4 and max(row["logps_relative_differences"]) < 1e-5
            assert len(row["loss_differences"]) == (1 if variant == "lightpref-lora" else 2)
    if has_trl:
        trl_b = rows[("B", "trl")]
        assert trl_b["batch_size"] == 4 and trl_b["batch_sizes_out_of_memory"] == []
        assert abs(trl_b["losses"][1] - trl_b["losses"][0]) > 1e-3
    markdown = (tmp_path / "gpu.md").read_text()
    assert "| B | lightpref | 4 |" in markdown and markdown.count("\n| ") == 2 + len(gpu.ORDER)
    assert "target" not in markdown  # a CPU rehearsal says nothing about the GPU targets


def test_largest_fitting_tries_down_from_the_largest(gpu):
    attempts, releases = [], []

    def attempt(size):
        attempts.append(size)
        if size > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return f"ran {size}"

    found = gpu.largest_fitting([2, 8, 4, 6], attempt, lambda: releases.append(True))
    assert found == (4, "ran 4", [8, 6]) and attempts == [8, 6, 4] and len(releases) == 2


def test_largest_fitting_lets_other_errors_through(gpu):
    def broken(size):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    with pytest.raises(RuntimeError, match="illegal memory access"):
        gpu.largest_fitting([4, 2], broken)
    with pytest.raises(RuntimeError, match=r"every batch size tried: \[4, 2\]"):
        gpu.largest_fitting([4, 2], lambda size: (_ for _ in ()).throw(RuntimeError("CUDA out of memory")))


def test_step_flops_by_hand(gpu):
    """Rows of 3 and 4 tokens, N = 100, 2 layers of attention width 8: linear 8·100·7 = 5600, attention forward
    2·2·8·(3·4 + 4·5) = 1024, times 4 = 4096."""
    config = {"num_hidden_layers": 2, "num_attention_heads": 2, "head_dim": 4}
    pairs = [{"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4, 5]}]
    assert gpu.workloads.step_flops(pairs, config, 100, 8, 4) == 5600 + 4096


def test_chains_doctest(gpu):
    import doctest

    assert doctest.testmod(gpu.workloads, raise_on_error=True).attempted > 0


def test_a_failing_run_is_recorded(tmp_path, gpu):
    """One variant failing (here: its model directory is missing) becomes a row with the error; nothing raises."""
    spec = {"workload": "A", "variant": "lightpref", "model": str(tmp_path / "missing"), "dtype": "float32",
            "lr": 1e-3, "steps": 2, "batch_sizes": [2], "batch_size": 2, "max_length": 64, "max_prompt_length": 32,
            "pairs": [], "records": [{"prompt": "Q", "chosen": " a", "rejected": " b"}] * 4,
            "cache": str(tmp_path / "cache")}
    args = argparse.Namespace(inline=True)
    with (tmp_path / "log").open("w") as log:
        result = gpu.launch(spec, args, tmp_path, 60, log)
    assert result["status"] == "failed" and "missing" in result["error"]


def test_a_failing_process_is_recorded_with_its_error(tmp_path, gpu):
    """The GPU path: the run in its own process fails; its last output line becomes the error, its output the log."""
    spec = {"workload": "A", "variant": "no-such-variant", "cache": str(tmp_path / "cache")}
    with (tmp_path / "log").open("w") as log:
        result = gpu.launch(spec, argparse.Namespace(inline=False), tmp_path, 120, log)
    assert result["status"] == "failed" and result["error"].startswith("exit 1: ")
    assert "KeyError: 'no-such-variant'" in result["error"]
    assert "Traceback" in (tmp_path / "log").read_text()
