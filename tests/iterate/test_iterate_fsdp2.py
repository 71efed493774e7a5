"""``lightpref iterate`` rounds under FSDP2: two CPU processes (gloo, started by torchrun), each training on half of
every batch, give the rounds one process gives with the whole batch.

Sampling is seeded per round and chunk, so round 1's pairs are the same file whichever process sampled each chunk.
Training then differs only in floating-point summation order (the gradient is all-reduced over two halves instead of
summed over one batch), so round 1's policies agree to 5e-5 (measured: below 1e-5 on one machine, 1.7e-5 on
another; the matrix kernels differ by CPU) and round 2, sampled from them, has the same pairs. Round 2 starts from
policies that close, and AdamW (lr 0.01) turns a near-zero gradient of either sign into a step
of up to lr: its policies agree to 5e-3 (measured: 1.8e-3), against a change of about 3e-2 that its 3 steps make.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lightpref.iterate.command import run_iterate

REPO = Path(__file__).resolve().parents[2]
WEIGHT_TOLERANCE = {1: 5e-5, 2: 5e-3}  # see the module docstring


@pytest.mark.slow
def test_fsdp2_rounds_in_two_processes_equal_one_process(iterate_config, tiny_checkpoint):
    (one_config, one), (two_config, two) = iterate_config("one"), iterate_config("two")
    one_history = run_iterate(["--config", str(one_config), "--data.batch_size", "2", "--trainer.devices", "1"])
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
               "-m", "lightpref", "iterate", "--config", str(two_config), "--data.batch_size", "1",
               "--trainer.devices", "2", "--trainer.strategy", "fsdp2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO),
                                                                                 os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    for round_ in (1, 2):
        assert (one / f"round_{round_}" / "pairs.jsonl").read_text() == \
            (two / f"round_{round_}" / "pairs.jsonl").read_text()
        one_weights = load_file(one / f"round_{round_}" / "policy" / "model.safetensors")
        two_weights = load_file(two / f"round_{round_}" / "policy" / "model.safetensors")
        assert one_weights.keys() == two_weights.keys()
        for name in one_weights:
            torch.testing.assert_close(two_weights[name], one_weights[name], rtol=1e-4, atol=WEIGHT_TOLERANCE[round_],
                                       msg=name)
        two_eval = json.loads((two / f"round_{round_}" / "eval.json").read_text())
        assert two_eval["heldout/reward"] == pytest.approx(one_history[round_]["heldout/reward"], abs=1e-6)
        assert two_eval["heldout/kl"] == pytest.approx(one_history[round_]["heldout/kl"], rel=1e-2, abs=1e-3)
    initial = load_file(tiny_checkpoint / "model.safetensors")
    assert any(not torch.equal(initial[key], one_weights[key]) for key in initial)  # the rounds trained
    assert not (two / "round_1" / "checkpoints").exists()
