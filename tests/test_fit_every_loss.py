"""Every registered loss trains through ``lightpref fit`` on the tiny model: finite losses, a changed policy, and no
reference model for the reference-free ones."""

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from lightpref.cli import build_cli
from lightpref.losses import registered_losses

# Losses that cannot be built from their name alone, with the arguments the test gives them.
NEEDS_ARGUMENTS = {
    "mixture": {
        "class_path": "lightpref.losses.mixture.Mixture",
        "init_args": {
            "losses": [{"class_path": "lightpref.losses.dpo.DPO"}, {"class_path": "lightpref.losses.sft.SFT"}],
            "weights": [1.0, 0.2],
        },
    },
}
BUILTIN = sorted(name for name, entry in registered_losses().items() if entry.distribution.startswith("lightpref "))


@pytest.mark.parametrize("name", BUILTIN)
def test_fit(name, tiny_checkpoint, pairs_file, tmp_path):
    loss = NEEDS_ARGUMENTS.get(name, name)
    if registered_losses()[name].loss_class.consumes == "unpaired":  # the same pairs as labelled single completions
        pairs = [json.loads(line) for line in pairs_file.read_text().splitlines()]
        pairs_file = tmp_path / "unpaired.jsonl"
        pairs_file.write_text("".join(json.dumps({"prompt": pair["prompt"], "completion": pair[side],
                                                  "label": side == "chosen"}) + "\n"
                                      for side in ("chosen", "rejected") for pair in pairs))
    cli = build_cli([
        "fit", "--trainer.max_steps", "2", "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(tmp_path),
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.log_every_n_steps", "1", "--trainer.limit_val_batches", "0",
        "--model.pretrained", str(tiny_checkpoint), "--model.loss", loss if isinstance(loss, str) else json.dumps(loss),
        "--model.optimizer", '{"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01}}',
        "--data.train_files", str(pairs_file), "--data.batch_size", "4",
        "--data.max_length", "64", "--data.max_prompt_length", "32",
    ])
    assert math.isfinite(cli.trainer.callback_metrics["loss"].item())
    original = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).state_dict()
    trained = cli.model.policy.state_dict()
    assert any(not torch.equal(trained[key], original[key]) for key in original), f"{name} did not train"
    assert (cli.model.reference.model is None) == (not cli.model.loss.requires_reference)
