"""FSDP2 on unpaired feedback: two CPU processes (gloo), each with half of every batch of labelled completions,
train KTO like one process with the whole batch (same losses and weights). KTO's reference point z₀ is the mean of
the two processes' means, which equals the one process's mean over the whole batch only because it is averaged
across processes; the reference is sharded like the policy."""

import json

import pytest
from test_distributed import STEPS, assert_same_losses, assert_same_weights, record, run_two_processes, write_job

from lightpref.cli import build_cli

KTO = {"class_path": "lightpref.losses.kto.KTO", "init_args": {"beta": 0.5}}


@pytest.mark.slow
def test_fsdp2_two_processes_train_kto_like_one(tiny_checkpoint, tmp_path):
    feedback = tmp_path / "feedback.jsonl"
    feedback.write_text("".join(json.dumps({
        "prompt": f"Human: question {i}? Assistant:",
        "completion": f" The answer is {i}." if i % 2 else " I don't know" + " at all" * (i % 3) + ".",
        "label": i % 2 == 1,
    }) + "\n" for i in range(24)))
    one_root, two_root = tmp_path / "one", tmp_path / "two"
    build_cli(["fit", "--config", str(write_job(tmp_path / "one.yaml", tiny_checkpoint, feedback, one_root, KTO,
                                                batch_size=4)), "--trainer.devices", "1"])
    run_two_processes(write_job(tmp_path / "two.yaml", tiny_checkpoint, feedback, two_root, KTO, batch_size=2),
                      strategy="fsdp2")
    one, two = record(one_root), record(two_root)
    assert two["world_size"] == 2 and two["policy_dtensor"] and two["reference_dtensor"]
    assert_same_losses(one, two, range(1, STEPS + 1))
    assert_same_weights(one["policy"], two["policy"])
