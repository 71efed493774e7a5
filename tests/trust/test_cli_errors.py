"""Every user error on the command line prints one message and exits non-zero without a traceback; a bug keeps its
traceback plus a one-line summary; ``LIGHTPREF_DEBUG=1`` shows the traceback of either. Run in-process through
``lightpref.cli.main`` (the console script's function), which is what ``lightpref …`` calls."""

import errno
import json

import pytest
import torch
import yaml

from lightpref import errors
from lightpref.cli import main


@pytest.fixture
def fit_args(tiny_checkpoint, pairs_file, tmp_path):
    def build(*extra, data=None):
        return ["fit", "--model.pretrained", str(tiny_checkpoint), "--data.train_files", str(data or pairs_file),
                "--data.batch_size", "4", "--data.max_length", "64", "--data.max_prompt_length", "32",
                "--trainer.max_steps", "2",
                "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                "--trainer.default_root_dir", str(tmp_path / "run"), *extra]
    return build


def run_main(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def assert_one_message(code, output, *fragments):
    assert code == 1
    assert "Traceback" not in output
    errors_printed = [line for line in output.splitlines() if line.startswith("lightpref: error: ")]
    assert len(errors_printed) == 1, output[-2000:]
    for fragment in fragments:
        assert fragment in errors_printed[0]


def test_unknown_loss(fit_args, capsys):
    assert_one_message(*run_main(fit_args("--model.loss", "dpoo"), capsys), "unknown loss 'dpoo'", "`lightpref losses`")


def test_missing_data_file(fit_args, tmp_path, capsys):
    missing = tmp_path / "absent.jsonl"
    assert_one_message(*run_main(fit_args(data=missing), capsys), "`train_files`", str(missing))


def test_bad_config_value(fit_args, capsys):
    assert_one_message(*run_main(fit_args("--model.reference_batch_size", "0"), capsys),
                       "`model.reference_batch_size` must be a positive integer, got 0")


def test_bad_data_row(fit_args, tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"prompt": "Human: hi? Assistant:", "chosen": " hello"}) + "\n")
    assert_one_message(*run_main(fit_args(data=data), capsys), f"{data}, line 1", "`rejected` is missing")


def test_negative_learning_rate_fails_at_start_up_naming_the_key(fit_args, capsys):
    code, output = run_main(fit_args("--model.optimizer", "AdamW", "--model.optimizer.lr", "-0.1"), capsys)
    assert_one_message(code, output, "`model.optimizer.init_args.lr`", "-0.1")
    assert "lightpref data:" not in output  # before the data is read, let alone the models loaded


def test_missing_and_truncated_checkpoints(fit_args, saved_run, tmp_path, capsys):
    missing = tmp_path / "absent.ckpt"
    assert_one_message(*run_main(fit_args("--ckpt_path", str(missing)), capsys), str(missing), "--ckpt_path")
    whole = (saved_run / "checkpoints" / "step=1.ckpt").read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(whole[: len(whole) // 2])
    assert_one_message(*run_main(fit_args("--ckpt_path", str(truncated)), capsys), str(truncated),
                       "resume from an earlier checkpoint")
    assert_one_message(*run_main(["validate", *fit_args("--ckpt_path", str(truncated))[1:]], capsys), str(truncated))


def test_a_run_whose_every_step_is_non_finite_fails_and_exports_nothing(fit_args, tmp_path, capsys):
    export = tmp_path / "exported"
    code, output = run_main(fit_args("--model.loss", "faults.AlwaysNaNDPO", "--model.export_dir", str(export)), capsys)
    assert_one_message(code, output, "2 of the 2 optimiser steps so far (100%)", "exports nothing")
    assert not export.exists()


def test_command_line_syntax_errors_are_usage_messages(fit_args, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(fit_args("--config", str(tmp_path / "absent.yaml")))
    output = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in output and "absent.yaml" in output


def test_debug_variable_shows_the_traceback(fit_args, capsys, monkeypatch):
    monkeypatch.setenv(errors.DEBUG_ENV, "1")
    code, output = run_main(fit_args("--model.reference_batch_size", "0"), capsys)
    assert code == 1 and "Traceback" in output and "lightpref: error: `model.reference_batch_size`" in output


def test_an_unexpected_error_keeps_its_traceback_and_gets_a_summary(fit_args, capsys, monkeypatch):
    def broken(*args, **kwargs):
        return {}["no such key"]  # a bug, not a message written for a person

    monkeypatch.setattr("lightpref.cli.list_losses", broken)
    code, output = run_main(["losses"], capsys)
    assert code == 1 and "Traceback" in output
    assert output.strip().splitlines()[-1].startswith("lightpref: unexpected error: KeyError: 'no such key'")


def test_the_rule_in_isolation(tmp_path):
    """Deliberate raises in lightpref count; the same types from a failing call inside lightpref, or from code
    outside it, do not."""
    from lightpref.io import file_sha256
    from lightpref.run.guards import NonFiniteGuard

    with pytest.raises(ValueError) as deliberate:
        NonFiniteGuard(max_skipped_share=2.0)
    with pytest.raises(IsADirectoryError) as accidental:
        file_sha256(tmp_path)  # open() on a directory, inside lightpref: not a message written for a person
    with pytest.raises(ValueError) as elsewhere:
        raise ValueError("raised in a test, not in lightpref")
    assert errors.is_user_error(deliberate.value)
    assert not errors.is_user_error(accidental.value)
    assert not errors.is_user_error(elsewhere.value)


def test_fit_refuses_a_non_empty_export_directory_before_loading_a_model(fit_args, tmp_path, capsys, monkeypatch):
    """As ``lightpref export`` does without ``--overwrite``: files already there survive unless the run is told."""
    from lightpref.models.pretrained import ModelSource

    export = tmp_path / "export"
    export.mkdir()
    (export / "model.safetensors").write_text("an earlier run's policy")
    loads = []
    load_model = ModelSource.load_model
    monkeypatch.setattr(ModelSource, "load_model", lambda self, *args, **kwargs: loads.append(self.name)
                        or load_model(self, *args, **kwargs))
    assert_one_message(*run_main(fit_args("--model.export_dir", str(export)), capsys),
                       f"`model.export_dir`: {export} is not empty", "`model.export_overwrite: true`")
    assert loads == [] and (export / "model.safetensors").read_text() == "an earlier run's policy"
    assert main(fit_args("--model.export_dir", str(export), "--model.export_overwrite", "true")) == 0
    assert loads and (export / "config.json").is_file()
    assert (export / "model.safetensors").read_bytes()[:20] != b"an earlier run's pol"


def test_a_loss_argument_its_constructor_rejects_is_one_message(fit_args, tmp_path, capsys):
    """jsonargparse wraps the loss's own ValueError in a "Does not validate" error: the loss's message is printed,
    with the key being built."""
    assert_one_message(*run_main(fit_args("--model.loss.init_args.beta", "0"), capsys),
                       "`model.loss`", "`beta` must be a positive number, got 0.0")
    config = tmp_path / "loss.yaml"
    config.write_text(yaml.safe_dump({"model": {"loss": {"class_path": "dpo", "init_args": {"beta": 0}}}}))
    assert_one_message(*run_main(fit_args("--config", str(config)), capsys),
                       "`model.loss`", "`beta` must be a positive number")


def test_a_full_disk_during_a_checkpoint_write_is_one_message_naming_the_path(fit_args, tmp_path, capsys,
                                                                                monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    code, output = run_main(fit_args(), capsys)
    assert_one_message(code, output, "no space left on the device (ENOSPC) while writing "
                       f"{tmp_path / 'run' / 'checkpoints'}", "free space")
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


def test_a_plugin_loss_that_exits_on_import_is_the_registrys_message(fit_args, tmp_path, capsys, monkeypatch):
    info = tmp_path / "exiting_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: exiting-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[lightpref.losses]\nexiting = exiting_loss:Exiting\n")
    (tmp_path / "exiting_loss.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert_one_message(*run_main(fit_args("--model.loss", "exiting"), capsys),
                       "loss plugin 'exiting'", "exiting-plugin 1.0", "sys.exit(3)")


def test_an_empty_directory_as_the_model_says_it_holds_no_model(fit_args, tmp_path, capsys):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    assert_one_message(*run_main(fit_args("--model.pretrained", str(empty)), capsys),
                       f"the directory {str(empty)!r} holds no model", "no config.json", "no weights",
                       "a model directory holds config.json")


def test_an_unknown_hub_name_offline_is_one_message(fit_args, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert_one_message(*run_main(fit_args("--model.pretrained", "no-such-org/no-such-model"), capsys),
                       "'no-such-org/no-such-model' is neither a local directory nor", "HF_HUB_OFFLINE is set",
                       "huggingface-cli download no-such-org/no-such-model")


def test_an_error_is_looked_through_only_when_jsonargparse_wrapped_it():
    """A bug raised while handling a user's mistake stays a bug; a full disk anywhere in the chain is a message."""
    from lightpref.run.guards import NonFiniteGuard

    with pytest.raises(KeyError) as bug:
        try:
            NonFiniteGuard(max_skipped_share=2.0)
        except ValueError as error:
            raise KeyError("a bug in the handler") from error
    assert not errors.is_user_error(bug.value)
    with pytest.raises(RuntimeError) as wrapped:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded", "/data/run/x.bin")
        except OSError as error:
            raise RuntimeError("write failed") from error
    assert errors.user_message(wrapped.value) == (
        "the disk quota is exceeded (EDQUOT) while writing /data/run/x.bin: free space on that filesystem (or write "
        "the run's output to another one) and run the command again")
