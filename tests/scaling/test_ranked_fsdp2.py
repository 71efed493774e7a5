"""FSDP2 on ranked groups: two CPU processes (gloo), each with half of every batch of groups, train Plackett–Luce like
one process with the whole batch (same losses and weights); the reference is sharded like the policy."""

import json

import pytest
from test_distributed import STEPS, assert_same_losses, assert_same_weights, record, run_two_processes, write_job

from lightpref.cli import build_cli

PLACKETT_LUCE = {"class_path": "lightpref.losses.plackett_luce.PlackettLuce"}


@pytest.mark.slow
def test_fsdp2_two_processes_train_groups_like_one(tiny_checkpoint, tmp_path):
    groups = tmp_path / "ranked.jsonl"
    groups.write_text("".join(json.dumps({
        "prompt": f"Human: question {i}? Assistant:",
        "completions": [f" The answer is {i}.", " I don't know" + " at all" * (i % 3) + ".", " Maybe."],
        "scores": [2, 0, 1],
    }) + "\n" for i in range(24)))
    one_root, two_root = tmp_path / "one", tmp_path / "two"
    build_cli(["fit", "--config", str(write_job(tmp_path / "one.yaml", tiny_checkpoint, groups, one_root,
                                                PLACKETT_LUCE, batch_size=4)), "--trainer.devices", "1"])
    run_two_processes(write_job(tmp_path / "two.yaml", tiny_checkpoint, groups, two_root, PLACKETT_LUCE,
                                batch_size=2), strategy="fsdp2")
    one, two = record(one_root), record(two_root)
    assert two["world_size"] == 2 and two["policy_dtensor"] and two["reference_dtensor"]
    assert_same_losses(one, two, range(1, STEPS + 1))
    assert_same_weights(one["policy"], two["policy"])
