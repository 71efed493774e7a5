"""Killed at any point (during sampling, after scoring, during training), ``--ckpt_path last`` finishes the run with
the same pairs and the same final weights as an uninterrupted run, and does not redo finished chunks.

The kills are real: ``$LIGHTPREF_ITERATE_FAULT`` makes the process ``os._exit`` at a named point, with no cleanup.
Each kill costs one subprocess; the uninterrupted run and the final resume run in-process.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from lightpref.iterate import stages, workflow
from lightpref.iterate.command import run_iterate
from lightpref.iterate.stages import FAULT_ENV


def run_until(config, fault: str) -> None:
    """``lightpref iterate --config … --ckpt_path last`` in a subprocess that must die at ``fault``."""
    code = "import sys; from lightpref.iterate.command import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", code, "--config", str(config), "--ckpt_path", "last"],
                            env={**os.environ, FAULT_ENV: fault}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 86, f"did not stop at {fault}: {result.returncode}\n{result.stderr[-3000:]}"


def chunk_files(out, round_):
    return sorted(path.name for path in (out / f"round_{round_}" / "samples").iterdir())


@pytest.mark.slow
def test_killed_at_each_stage_resumes_to_the_uninterrupted_result(iterate_config, monkeypatch):
    reference_config, reference_out = iterate_config("uninterrupted")
    expected = run_iterate(["--config", str(reference_config)])

    config, out = iterate_config("interrupted")
    # 1. killed during round 1's sampling: chunk 0 is sampled and scored, chunk 1 only sampled, chunk 2 not started
    run_until(config, "round1:sampled:1")
    assert chunk_files(out, 1) == ["chunk_00000.samples.json", "chunk_00000.scores.json", "chunk_00001.samples.json"]
    first_chunk = (out / "round_1" / "samples" / "chunk_00000.samples.json").stat()

    # 2. resumed, then killed after every chunk is scored, before the pairs are written
    run_until(config, "round1:scored")
    assert len(chunk_files(out, 1)) == 6 and not (out / "round_1" / "pairs.jsonl").exists()
    again = (out / "round_1" / "samples" / "chunk_00000.samples.json").stat()
    assert (again.st_ino, again.st_mtime_ns) == (first_chunk.st_ino, first_chunk.st_mtime_ns)  # not sampled again

    # 3. resumed, then killed in round 2's training after step 2 (the last checkpoint is step 1's)
    run_until(config, "round2:step:2")
    assert (out / "round_1" / "policy").is_dir() and not (out / "round_2" / "policy").exists()
    checkpoint = torch.load(out / "round_2" / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert checkpoint["global_step"] == 1

    # 4. resumed in-process to the end, recording the points it passes
    passed = []
    monkeypatch.setattr(stages, "fault_point", passed.append)
    monkeypatch.setattr(workflow, "fault_point", passed.append)
    history = run_iterate(["--config", str(config), "--ckpt_path", "last"])
    # nothing is sampled or scored again; round 2's training continues from step 1's checkpoint: steps 2 and 3 only
    assert passed == ["round2:step:2", "round2:step:3", "round2:trained", "round2:saved"]
    for round_ in (1, 2):
        assert (out / f"round_{round_}" / "pairs.jsonl").read_text() == \
            (reference_out / f"round_{round_}" / "pairs.jsonl").read_text()
    final = load_file(out / "round_2" / "policy" / "model.safetensors")
    uninterrupted = load_file(reference_out / "round_2" / "policy" / "model.safetensors")
    assert final.keys() == uninterrupted.keys()
    for key in final:
        torch.testing.assert_close(final[key], uninterrupted[key], rtol=0, atol=0, msg=key)
    assert json.dumps(history) == json.dumps(expected)  # identical held-out rewards and KLs
