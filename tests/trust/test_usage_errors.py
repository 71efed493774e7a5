"""A mistyped option or loss argument, on the command line or in a config, is one line naming the key and the
nearest valid names; the tip names the command's help. Run in-process through ``lightpref.cli.main``."""

import doctest

import pytest

import lightpref.commands.usage_errors
from lightpref.cli import main

TIP = "tip: For details of accepted options run: lightpref {command} --help"
BATCH = "error: unknown option `data.bath_size` (did you mean `data.batch_size` or `data.val_batch_size`?)"
BETA = ("error: `model.loss`: lightpref.losses.dpo.DPO takes no argument `betaa` (did you mean `beta`?); its "
        "arguments: beta, label_smoothing, length_normalized")


@pytest.fixture
def base_args(tiny_checkpoint, pairs_file, tmp_path):
    return ["--model.pretrained", str(tiny_checkpoint), "--data.train_files", str(pairs_file),
            "--trainer.max_steps", "1", "--trainer.default_root_dir", str(tmp_path / "run")]


def usage_error(argv, capsys) -> list[str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    output = capsys.readouterr()
    assert exit_info.value.code == 2 and output.out == ""
    assert "Traceback" not in output.err and "Union" not in output.err and "Given value" not in output.err
    return output.err.strip().splitlines()


def config(tmp_path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("command", ["fit", "validate"])
def test_a_mistyped_flag_names_the_nearest_options(command, base_args, capsys):
    lines = usage_error([command, *base_args, "--data.bath_size", "3"], capsys)
    assert lines[-2:] == [TIP.format(command=command), BATCH]


def test_a_mistyped_config_key_names_the_nearest_options(base_args, tmp_path, capsys):
    lines = usage_error(["fit", "--config", config(tmp_path, "data:\n  bath_size: 3\n"), *base_args], capsys)
    assert lines[-2:] == [TIP.format(command="fit"), BATCH]


def test_an_option_with_nothing_near_points_at_the_help(base_args, capsys):
    lines = usage_error(["fit", *base_args, "--zzzzzz", "1"], capsys)
    assert lines[-1] == "error: unknown option `zzzzzz`; `lightpref fit --help` lists the options"


def test_a_mistyped_loss_argument_is_one_line(base_args, tmp_path, capsys):
    assert usage_error(["fit", *base_args, "--model.loss.init_args.betaa", "0.2"], capsys)[-2:] == [
        TIP.format(command="fit"), BETA]
    yaml = "model:\n  loss:\n    class_path: dpo\n    init_args: {betaa: 0.2}\n"
    assert usage_error(["fit", "--config", config(tmp_path, yaml), *base_args], capsys)[-1] == BETA
    lines = usage_error(["fit", *base_args, "--model.loss", "sgdpo", "--model.loss.init_args.betaa", "1"], capsys)
    assert lines[-1] == ("error: `model.loss`: lightpref.losses.sgdpo.SGDPO takes no argument `betaa` (did you mean "
                         "`beta`?); its arguments: beta, chosen_ratio, rejected_ratio, label_smoothing, seed")


def test_a_mistyped_optimizer_argument_is_one_line(base_args, capsys):
    lines = usage_error(["fit", *base_args, "--model.optimizer", "AdamW", "--model.optimizer.lrr", "1"], capsys)
    assert lines[-1].startswith("error: `model.optimizer`: torch.optim.AdamW takes no argument `lrr` (did you mean "
                                "`lr`?); its arguments: lr, betas, eps, weight_decay")


def test_docstring_examples():
    failures, attempted = doctest.testmod(lightpref.commands.usage_errors)
    assert attempted and not failures
