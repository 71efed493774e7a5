"""``lightpref iterate``'s command line: fit's LightningCLI with an ``iterate`` section (lightpref.iterate.command)."""

import subprocess
import sys

import pytest
import yaml

from lightpref.iterate.command import IterateCLI, parse_config
from lightpref.run.last import CheckpointPathCLI


def test_iterate_parses_with_fit_s_cli_and_builds_nothing(iterate_config):
    config, out = iterate_config()
    cli = IterateCLI(["--config", str(config), "--seed_everything", "7", "--trainer.max_steps", "5"])
    assert isinstance(cli, CheckpointPathCLI)  # the CLI class of `lightpref fit` (PreferenceCLI)
    assert cli.config.seed_everything == 7 and cli.config.trainer.max_steps == 5
    assert cli.config.iterate.out_dir == str(out) and cli.config.model.loss.class_path.endswith("DPO")
    assert not out.exists()  # parsing writes nothing and loads no model (no `model` or `trainer` attribute built)
    assert not hasattr(cli, "model") and not hasattr(cli, "trainer")


@pytest.mark.parametrize("option", ["--trainer.logger", "--trainer.default_root_dir", "--data.train_files",
                                    "--model.export_dir"])
def test_what_each_round_decides_is_not_an_option(iterate_config, option, capsys):
    config, _ = iterate_config()
    with pytest.raises(SystemExit):
        parse_config(["--config", str(config), option, "x"])
    error = capsys.readouterr().err
    assert f"unknown option `{option[2:]}`" in error and "Traceback" not in error


def test_print_config_shows_every_section(iterate_config):
    """LightningCLI's --print_config, as in fit: the config the run would use, loss resolved, and exits 0."""
    config, out = iterate_config()
    done = subprocess.run([sys.executable, "-m", "lightpref", "iterate", "--config", str(config), "--print_config"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    printed = yaml.safe_load(done.stdout)
    assert printed["iterate"]["out_dir"] == str(out) and printed["iterate"]["rounds"] == 2
    assert printed["trainer"]["max_steps"] == 3 and printed["model"]["loss"]["class_path"].endswith("DPO")
    assert "LightningCLI's args parameter" not in done.stderr  # lightpref hands the command its own arguments
    assert not out.exists()
