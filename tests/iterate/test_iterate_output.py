"""What a user sees from ``lightpref iterate``: a run's output as clean as ``lightpref fit``'s, and readable help."""

import os
import subprocess
import sys

import pytest
import yaml

from lightpref.cli import main

NOISE = (
    "Tip:",  # Lightning's adverts (litlogger)
    "litlogger",
    "LeafSpec",
    "module(s) in eval mode at the start of training",
    "Total length of `list` across ranks is zero",
    "Epoch 0/-",  # max_epochs -1 of a step-bounded run, shown as "Epoch 0/-2"
    "v_num",  # the logger's version, "train", cut to "rain" by Lightning's bar
    "rain loss",
)


@pytest.mark.slow
def test_a_run_prints_no_known_noise_and_one_readable_progress_bar(iterate_config):
    config, out = iterate_config(rounds=1)
    settings = yaml.safe_load(config.read_text())
    for key in ("enable_progress_bar", "enable_model_summary"):  # as a user's config has them: Lightning's defaults
        settings["trainer"].pop(key)
    settings["trainer"]["max_steps"] = 2
    config.write_text(yaml.safe_dump(settings))
    result = subprocess.run([sys.executable, "-m", "lightpref", "iterate", "--config", str(config)],
                            capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "100"})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "round 1: held-out reward" in output
    assert [noise for noise in NOISE if noise in output] == []
    bars = [line for line in output.splitlines() if line.startswith("Epoch ")]
    assert len(bars) == 1 and bars[0].startswith("Epoch 0 ") and "2/2" in bars[0], bars
    assert "FLOPs" not in output  # the model summary is fit's, without the FLOPs it cannot count


def test_help_reads_cleanly_with_iterate_model_and_data_first(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        main(["iterate", "--help"])
    text = capsys.readouterr().out
    assert text.startswith("usage: lightpref iterate --config FILE.yaml")
    assert ":class:" not in text and ":paramref:" not in text and ":mod:" not in text and "``" not in text
    assert "known subclasses" not in text
    order = ["--ckpt_path", "--iterate.out_dir", "--model.pretrained", "--data.batch_size", "--trainer.max_steps"]
    assert [text.index(option) for option in order] == sorted(text.index(option) for option in order)
    assert "--iterate.*  " in text and "--model.*  " in text  # the section titles fit's help has
    assert len(text.splitlines()) < 480  # 455 lines at 80 columns; 752 before its help was formatted as fit's is
