"""``lightpref`` on the command line: configs, overrides, the saved config, the loss listing and a plugin."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from lightpref.cli import build_cli, main
from lightpref.losses import LossRegistryError
from lightpref.losses.dpo import DPO
from lightpref.losses.exo import EXOPair
from lightpref.losses.ipo import IPO
from lightpref.losses.mixture import Mixture
from lightpref.losses.sft import SFT
from lightpref.losses.simpo import SimPO

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "plugins" / "lightpref-margin-dpo"


def write_config(path, checkpoint, pairs_file, root, **loss):
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_steps": 3, "accelerator": "cpu", "default_root_dir": str(root), "enable_progress_bar": False,
            "enable_model_summary": False, "log_every_n_steps": 1, "num_sanity_val_steps": 0,
        },
        "model": {
            "pretrained": str(checkpoint),
            "loss": loss or "dpo",
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-2}},
        },
        "data": {"train_files": str(pairs_file), "batch_size": 4, "max_length": 64, "max_prompt_length": 32},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def run(*args, env=None, check=True):
    result = subprocess.run([sys.executable, "-m", "lightpref", *args], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, **(env or {})}, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"lightpref {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def test_fit_from_config_and_rerun_from_saved_config(tiny_checkpoint, pairs_file, tmp_path):
    config = write_config(tmp_path / "job.yaml", tiny_checkpoint, pairs_file, tmp_path / "first")
    first = build_cli(["fit", "--config", str(config)])
    original = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).state_dict()
    policy, reference = first.model.policy.state_dict(), first.model.reference.model.state_dict()
    assert any(not torch.equal(policy[key], value) for key, value in original.items()), "the policy did not train"
    assert all(torch.equal(reference[key], value) for key, value in original.items()), "the reference changed"
    saved = Path(first.trainer.log_dir) / "config.yaml"
    assert saved.is_file()
    second = build_cli(["fit", "--config", str(saved), "--trainer.default_root_dir", str(tmp_path / "second")])
    for name, value in first.model.policy.state_dict().items():
        torch.testing.assert_close(second.model.policy.state_dict()[name], value)


def test_dotted_override_of_class_path_loss(tiny_checkpoint, pairs_file, tmp_path):
    loss = {"class_path": "lightpref.losses.dpo.DPO", "init_args": {"beta": 0.1, "label_smoothing": 0.1}}
    config = write_config(tmp_path / "job.yaml", tiny_checkpoint, pairs_file, tmp_path, **loss)
    cli = build_cli(["fit", "--config", str(config), "--model.loss.init_args.beta", "0.2"], run=False)
    assert isinstance(cli.model.loss, DPO)
    assert (cli.model.loss.beta, cli.model.loss.label_smoothing) == (0.2, 0.1)


def test_loss_by_registered_name_and_repeated_configs(tiny_checkpoint, pairs_file, tmp_path):
    config = write_config(tmp_path / "job.yaml", tiny_checkpoint, pairs_file, tmp_path)
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"data": {"batch_size": 2}, "model": {"loss": "ipo"}}))
    cli = build_cli(["fit", "--config", str(config), "--config", str(override)], run=False)
    assert isinstance(cli.model.loss, IPO) and cli.datamodule.batch_size == 2


@pytest.mark.parametrize("trusted", [False, True])
def test_the_model_trust_flag_also_reaches_the_tokenizer(trusted, tiny_checkpoint, pairs_file, tmp_path):
    config = write_config(tmp_path / "job.yaml", tiny_checkpoint, pairs_file, tmp_path)
    cli = build_cli(["fit", "--config", str(config), "--model.trust_remote_code", str(trusted).lower()], run=False)
    assert cli.datamodule.trust_remote_code is trusted and cli.model.source.trust_remote_code is trusted


def test_unknown_loss_name_lists_the_registered_ones(tiny_checkpoint, pairs_file, tmp_path):
    config = write_config(tmp_path / "job.yaml", tiny_checkpoint, pairs_file, tmp_path)
    with pytest.raises(LossRegistryError) as error:
        build_cli(["fit", "--config", str(config), "--model.loss", "dpoo"], run=False)
    assert "unknown loss 'dpoo'" in str(error.value) and "dpo, " in str(error.value)


@pytest.mark.parametrize("override", [
    ["--model.loss.init_args.beta", "0.2"],  # the config says `loss: dpo`
    ["--model.loss", "dpo", "--model.loss.init_args.beta", "0.2"],
    ["--model.loss", "{class_path: dpo, init_args: {beta: 0.2}}"],
    ["--model.loss", "DPO", "--model.loss.init_args.beta", "0.2"],  # a class name, as jsonargparse allows
])
def test_registered_name_takes_arguments(override, tiny_checkpoint, pairs_file, tmp_path):
    config = write_config(tmp_path / "job.yaml", tiny_checkpoint, pairs_file, tmp_path)
    cli = build_cli(["fit", "--config", str(config), *override], run=False)
    assert type(cli.model.loss) is DPO and cli.model.loss.beta == 0.2


def test_registered_names_inside_a_mixture_and_another_name_with_arguments(tiny_checkpoint, pairs_file, tmp_path):
    config = write_config(tmp_path / "job.yaml", tiny_checkpoint, pairs_file, tmp_path)
    cli = build_cli(["fit", "--config", str(config), "--model.loss", "ipo", "--model.loss.init_args.beta", "0.3"],
                    run=False)
    assert type(cli.model.loss) is IPO and cli.model.loss.beta == 0.3
    mixture = tmp_path / "mixture.yaml"
    mixture.write_text(yaml.safe_dump({"model": {"loss": {"class_path": "mixture", "init_args": {
        "losses": [{"class_path": "dpo", "init_args": {"beta": 0.5}}, "sft"], "weights": [1.0, 0.2]}}}}))
    cli = build_cli(["fit", "--config", str(config), "--config", str(mixture)], run=False)
    assert isinstance(cli.model.loss, Mixture) and cli.model.loss.names == ["dpo", "sft"]
    assert cli.model.loss.parts[0].beta == 0.5 and isinstance(cli.model.loss.parts[1], SFT)


def test_a_loss_given_anew_starts_from_its_own_defaults(tiny_checkpoint, pairs_file, tmp_path):
    """Over a config's `loss: dpo`, `--model.loss simpo` is SimPO with its own β = 2.0, not DPO's 0.1 carried over."""
    config = write_config(tmp_path / "job.yaml", tiny_checkpoint, pairs_file, tmp_path)
    cli = build_cli(["fit", "--config", str(config), "--model.loss", "simpo"], run=False)
    assert type(cli.model.loss) is SimPO and cli.model.loss.beta == 2.0
    cli = build_cli(["fit", "--config", str(config), "--model.loss", "exo_pair"], run=False)
    assert type(cli.model.loss) is EXOPair and cli.model.loss.label_smoothing == 1e-3  # 0 (DPO's) is an error there
    cli = build_cli(["fit", "--config", str(config), "--model.loss.init_args.beta", "0.3", "--model.loss", "ipo",
                     "--model.loss.init_args.beta", "0.2"], run=False)
    assert type(cli.model.loss) is IPO and cli.model.loss.beta == 0.2


def test_print_config(tiny_checkpoint, pairs_file, tmp_path, capsys):
    config = write_config(tmp_path / "job.yaml", tiny_checkpoint, pairs_file, tmp_path)
    with pytest.raises(SystemExit):
        build_cli(["fit", "--config", str(config), "--model.loss.init_args.beta", "0.3", "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["loss"]["class_path"] == "lightpref.losses.dpo.DPO"
    assert printed["model"]["loss"]["init_args"]["beta"] == 0.3
    assert printed["data"]["batch_size"] == 4 and "predict" not in printed


@pytest.mark.parametrize("config", sorted((REPO / "configs").glob("*.yaml")), ids=lambda path: path.name)
def test_every_shipped_config_parses(config):
    """Each config instantiates (models are built later, in configure_model), says how to run it, and the objects
    built carry what it sets: model source, loss class and arguments, learning rate, schedule, strategy, trainer
    and data values."""
    from lightpref.losses import build

    assert config.read_text().startswith("# Run: lightpref ")
    if config.read_text().startswith("# Run: lightpref iterate"):
        pytest.skip("an iterate config: parsed by tests/iterate/test_iterate.py")
    if "lightpref.reward.module.RewardModule" in config.read_text():
        pytest.skip("a reward-model config: parsed by tests/reward/test_reward_config.py")
    settings = yaml.safe_load(config.read_text())
    cli = build_cli(["fit", "--config", str(config)], run=False)
    model, trainer, data = settings["model"], settings.get("trainer", {}), settings.get("data", {})
    assert cli.model.source.name == model["pretrained"] and cli.model.source.gguf_file == model.get("gguf_file")
    loss = model.get("loss", "dpo")
    if isinstance(loss, str):
        assert type(cli.model.loss) is type(build(loss))
    else:
        assert type(cli.model.loss).__name__ == loss["class_path"].rsplit(".", 1)[-1]
        for name, value in loss.get("init_args", {}).items():
            assert getattr(cli.model.loss, name) == value, name
    if "optimizer" in model:
        optimizer = cli.model.optimizer_factory([torch.nn.Parameter(torch.zeros(1))])
        assert type(optimizer).__name__ == model["optimizer"]["class_path"].rsplit(".", 1)[-1]
        assert optimizer.param_groups[0]["lr"] == model["optimizer"]["init_args"]["lr"]
        if "lr_scheduler" in model:
            scheduler = cli.model.scheduler_factory(optimizer)
            assert type(scheduler).__name__ == model["lr_scheduler"]["class_path"].rsplit(".", 1)[-1]
            for name, value in model["lr_scheduler"].get("init_args", {}).items():
                assert getattr(scheduler, name) == value, name
    strategy = trainer.get("strategy")
    if isinstance(strategy, dict):
        assert type(cli.trainer.strategy).__name__ == strategy["class_path"].rsplit(".", 1)[-1]
    elif strategy is not None:
        assert type(cli.trainer.strategy).__name__.lower().startswith(strategy)
    for name in ("max_steps", "max_epochs", "accumulate_grad_batches", "log_every_n_steps", "val_check_interval"):
        if name in trainer:
            assert getattr(cli.trainer, name) == trainer[name], name
    for name in ("batch_size", "max_length", "max_prompt_length", "val_fraction", "seed"):
        if name in data:
            assert getattr(cli.datamodule, name) == data[name], name


def test_losses_lists_builtins(capsys):
    assert main(["losses"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["name", "reference", "distribution"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["dpo"].split()[1:3] == ["yes", "lightpref"] and "logσ" in rows["dpo"]
    assert rows["simpo"].split()[1] == "no" and rows["rpo"].split()[1] == "yes"
    assert "if any part does" in rows["mixture"] and "as the wrapped loss" in rows["wpo"]


def test_help_lists_the_commands_without_predict(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in ("fit", "validate", "test", "losses", "export", "build-dataset"):
        assert f"\n  {command} " in text
    assert "predict" not in text
    with pytest.raises(SystemExit):
        build_cli(["predict", "--help"])
    assert "invalid choice" in capsys.readouterr().err


def test_fit_help_reads_cleanly_and_lists_model_and_data_first(capsys):
    with pytest.raises(SystemExit):
        build_cli(["fit", "--help"])
    text = capsys.readouterr().out
    assert text.startswith("usage: lightpref fit [--config FILE.yaml")
    assert text.index("--print_config") < text.index("--model.pretrained")
    assert text.index("--model.pretrained") < text.index("--data.train_files") < text.index("--trainer.max_steps")
    assert "``" not in text and ":class:" not in text and ":paramref:" not in text
    assert "registered names: aot, aot_pair," in " ".join(text.split()) and "known subclasses" not in text
    assert len(text.splitlines()) < 500


def test_commands_that_do_not_train_never_import_lightning():
    """`lightpref losses`, `--help`, and the `--help` and usage errors of the commands that do not train, start in
    about a second: Lightning alone takes ~10 s."""
    code = ("import sys; from lightpref.cli import main\n"
            "for argv in (['--help'], ['losses'], ['export', '--help'], ['build-dataset', '--help'],\n"
            "             ['reward', 'export', '--help'], ['export', 'a.ckpt', 'out', '--adapter_onlyy'],\n"
            "             ['build-dataset', '--outpt', 'x']):\n"
            "    try: main(argv)\n"
            "    except SystemExit: pass\n"
            "print(sorted(name for name in sys.modules if name.split('.')[0] in ('lightning', 'pytorch_lightning')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_plugin_is_listed(installed_plugin):
    rows = {line.split()[0]: line for line in run("losses", env=installed_plugin).stdout.splitlines()[1:]}
    assert rows["margin_dpo"].split()[1:3] == ["yes", "lightpref-margin-dpo"]


def test_plugin_trains(installed_plugin, tiny_checkpoint, pairs_file, tmp_path):
    config = write_config(tmp_path / "job.yaml", tiny_checkpoint, pairs_file, tmp_path)
    result = run("fit", "--config", str(config), "--model.loss", "margin_dpo", env=installed_plugin)
    assert "margin_dpo" in (tmp_path / "lightning_logs" / "version_0" / "config.yaml").read_text()
    assert result.returncode == 0


def test_plugin_own_tests_pass(installed_plugin):
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PLUGIN / "tests")],
                            capture_output=True, text=True, env={**os.environ, **installed_plugin}, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("command", ["validate", "test"])
def test_validate_and_test_report_the_validation_metrics(command, tiny_checkpoint, pairs_file, tmp_path):
    config = write_config(tmp_path / "job.yaml", tiny_checkpoint, pairs_file, tmp_path)
    cli = build_cli([command, "--config", str(config), "--data.val_fraction", "0.25"])
    prefix = "val" if command == "validate" else "test"
    metrics = cli.trainer.callback_metrics
    assert metrics[f"{prefix}/rewards/accuracies"].item() == 0.0  # policy == reference: no pair is ranked yet
    assert metrics[f"{prefix}/loss"].item() == pytest.approx(0.6931, abs=1e-4)  # −logσ(0) = log 2


def test_a_jsonargparse_without_the_functions_lightpref_wraps_is_named(monkeypatch):
    """Loss names resolve through private jsonargparse functions; a release without them is one clear error."""
    from jsonargparse import _typehints

    from lightpref.commands.loss_names import resolve_registered_loss_names

    monkeypatch.delattr(_typehints, "discard_init_args_on_class_path_change")
    with pytest.raises(RuntimeError, match=r"lacks discard_init_args_on_class_path_change.*>=4.32,<5"):
        resolve_registered_loss_names()
