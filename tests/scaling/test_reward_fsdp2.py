"""FSDP2 for reward models: two CPU processes (gloo), each with half of every batch, train a reward model like one
process with the whole batch (same losses and weights), and the Hugging Face export gathered from the shards equals
the single process's."""

import pytest
import torch
import yaml
from test_distributed import run_two_processes

from lightpref.cli import build_cli

STEPS = 6


def write_reward_job(path, checkpoint, pairs, root, batch_size):
    config = {
        "seed_everything": 0,
        "trainer": {"max_steps": STEPS, "accelerator": "cpu", "default_root_dir": str(root), "logger": False,
                    "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
                    "limit_val_batches": 0,
                    "callbacks": [{"class_path": "reward_probe.RewardProbe",
                                   "init_args": {"path": str(root / "rec")}}]},
        "model": {"class_path": "lightpref.reward.module.RewardModule",
                  "init_args": {"pretrained": str(checkpoint), "loss": "bradley_terry", "export_dir": str(root / "hf"),
                                "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-2}},
                                "lr_scheduler": {"class_path": "lightpref.training.schedules.WarmupCosineLR",
                                                 "init_args": {"warmup_steps": 2}}}},
        "data": {"train_files": str(pairs), "batch_size": batch_size, "max_length": 64, "max_prompt_length": 32},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_fsdp2_two_processes_train_a_reward_model_like_one(tiny_checkpoint, pairs_file, tmp_path):
    one_root, two_root = tmp_path / "one", tmp_path / "two"
    build_cli(["fit", "--config", str(write_reward_job(tmp_path / "one.yaml", tiny_checkpoint, pairs_file, one_root,
                                                       batch_size=4)), "--trainer.devices", "1"])
    run_two_processes(write_reward_job(tmp_path / "two.yaml", tiny_checkpoint, pairs_file, two_root, batch_size=2),
                      strategy="fsdp2")
    one, two = (torch.load(root / "rec" / "record.pt", weights_only=False) for root in (one_root, two_root))
    assert two["world_size"] == 2 and two["dtensor"] and not one["dtensor"]
    assert sorted(two["losses"]) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert two["losses"][step] == pytest.approx(one["losses"][step], rel=1e-5, abs=1e-6), step
    assert one["losses"][STEPS] < one["losses"][1]  # it trained
    assert one["weights"].keys() == two["weights"].keys() and "score.weight" in one["weights"]
    for name in one["weights"]:
        torch.testing.assert_close(two["weights"][name], one["weights"][name], rtol=1e-4, atol=1e-5, msg=name)

    from transformers import AutoModelForSequenceClassification

    exported = [AutoModelForSequenceClassification.from_pretrained(root / "hf") for root in (one_root, two_root)]
    torch.testing.assert_close(exported[1].score.weight, exported[0].score.weight, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(exported[1].score.weight, two["weights"]["score.weight"], rtol=0, atol=0)
