"""lightpref fit on the real HH-RLHF sample (../shared/data), with the tiny model: the whole path on real data."""

import math

import pytest
import torch
from pairs_support import HH_SAMPLE
from transformers import AutoModelForCausalLM

from lightpref.cli import build_cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not HH_SAMPLE.is_file(), reason=f"the HH-RLHF sample is not at {HH_SAMPLE} (../shared absent)"),
]


def test_fit_on_hh_rlhf_sample(tiny_checkpoint, tmp_path):
    cli = build_cli([
        "fit", "--trainer.max_steps", "3", "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(tmp_path),
        "--trainer.enable_progress_bar", "false", "--trainer.val_check_interval", "3",
        "--trainer.limit_val_batches", "2", "--trainer.check_val_every_n_epoch", "null",
        "--model.pretrained", str(tiny_checkpoint), "--model.loss", "sgdpo",
        "--model.optimizer", '{"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01}}',
        "--data.train_files", str(HH_SAMPLE), "--data.format", "hh_rlhf", "--data.skip_invalid", "true",
        "--data.val_fraction", "0.05", "--data.batch_size", "4", "--data.max_length", "256",
        "--data.max_prompt_length", "192",
    ])
    stats = cli.datamodule.stats["train"]
    assert stats["skipped_invalid"] == 4 and stats["pairs"] == 1908  # four rows have a blank chosen completion
    assert len(cli.datamodule.train_dataset) + len(cli.datamodule.val_dataset) == 1908
    metrics = cli.trainer.callback_metrics
    assert math.isfinite(metrics["loss"].item()) and math.isfinite(metrics["val/loss"].item())
    original = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).state_dict()
    assert any(not torch.equal(value, original[key]) for key, value in cli.model.policy.state_dict().items())
