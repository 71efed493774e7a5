"""kill -9 at six points of a run — mid-step, mid-optimiser-update, mid-checkpoint-write, between a checkpoint's
write and its rename, in the epoch after an end-of-epoch checkpoint, at the first batch after a resume — plus a
SIGTERM, each followed by a resume: every step trained by any of the interrupted runs has the loss of the same step
of the uninterrupted run, and the last weights are the same.

The kills are chained to keep CI time low: one run is killed at the first point, resumed with ``--ckpt_path last``,
killed at the next, and so on. The default layout is used — a CSV logger, so a new ``version_N`` directory per
start, and periodic checkpoints with ``save_last`` off — where ``--ckpt_path last`` used to find nothing and
silently start again from step 0, plus lightpref's own ``last.ckpt`` written as each epoch ends (6 steps an epoch).
Each killed run is a new process; the SIGTERM run prints the command that resumes
it, and the test runs that command as printed.
"""

import json
import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lightpref.cli import main

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
STEPS = 12


def write_job(root: Path, checkpoint: Path, pairs: Path) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_steps": STEPS, "accelerator": "cpu", "default_root_dir": str(root),
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(root)}},
            "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "init_args": {"filename": "{step}", "every_n_train_steps": 2, "save_top_k": -1, "save_last": False}},
                {"class_path": "lightpref.run.callbacks.FinalCheckpoint"},
                {"class_path": "faults.Faults"},
                {"class_path": "faults.LossLog", "init_args": {"path": str(root / "losses.jsonl")}},
            ],
        },
        "model": {
            "pretrained": str(checkpoint), "loss": "sgdpo", "export_dir": None,
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01}},
            "lr_scheduler": {"class_path": "lightpref.training.schedules.WarmupCosineLR",
                             "init_args": {"warmup_steps": 2}},
        },
        "data": {"train_files": str(pairs), "batch_size": 4, "max_length": 64, "max_prompt_length": 32},
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def logged(root: Path) -> list[dict]:
    path = root / "losses.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class Chain:
    """Runs a ``lightpref fit`` command line with a fault armed, as a new process (the one that gets killed).

    Not a forked copy of the test process: a fork inherits OpenMP's thread pool without its threads, and the child's
    first parallel matmul can wait for them forever."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
                    "OMP_NUM_THREADS": "1"}

    def run(self, command: list[str], fault: str | None) -> tuple[int, list[int], str]:
        """Run a command line as a new process; its exit status, the steps it trained, its output."""
        before = len(logged(self.root))
        env = {**self.env, "LIGHTPREF_TEST_FAULT": fault or ""}
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
        steps = [entry["step"] for entry in logged(self.root)[before:]]
        return result.returncode, steps, result.stdout + result.stderr


def test_kill_at_five_points_then_resume_matches_the_uninterrupted_run(tiny_checkpoint, pairs_file, tmp_path,
                                                                       monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))  # faults.* for the in-process reference run
    reference_root = tmp_path / "reference"
    assert main(["fit", "--config", str(write_job(reference_root, tiny_checkpoint, pairs_file))]) == 0
    expected = {entry["step"]: entry["loss"] for entry in logged(reference_root)}
    assert sorted(expected) == list(range(1, STEPS + 1))

    root = tmp_path / "run"
    fit = [sys.executable, "-m", "lightpref", "fit", "--config", str(write_job(root, tiny_checkpoint, pairs_file))]
    resume = [*fit, "--ckpt_path", "last"]
    chain = Chain(root)
    versions = root / "lightning_logs"

    assert chain.run(fit, "step:5")[:2] == (-9, [1, 2, 3, 4])
    assert chain.run(resume, "write:6")[:2] == (-9, [5, 6])  # resumes version_0's step 4, dies writing step 6
    assert [p.name for p in (versions / "version_1" / "checkpoints").iterdir()] == [".step=6.ckpt.partial"]

    assert chain.run(resume, "rename:6")[:2] == (-9, [5, 6])  # the partial file is no candidate: step 4 again
    assert chain.run(resume, "step:8")[:2] == (-9, [5, 6, 7])  # killed in epoch 1: the newest is the epoch-end one
    assert sorted(p.name for p in (versions / "version_3" / "checkpoints").iterdir()) == ["last.ckpt", "step=6.ckpt"]
    assert chain.run(resume, "optimizer:9")[:2] == (-9, [7, 8])  # epoch 1 again from its first batch
    assert sorted(p.name for p in (versions / "version_4" / "checkpoints").iterdir()) == ["step=8.ckpt"]

    # in this process (saves a start-up): as if started as `python -m lightpref fit ...`
    monkeypatch.setenv("LIGHTPREF_TEST_FAULT", "sigterm:10")
    monkeypatch.setattr(sys, "argv", [str(REPO / "lightpref" / "__main__.py"), *resume[3:]])
    messages: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger("lightning.pytorch").addHandler(handler)  # Lightning's own logger does not propagate
    with pytest.raises(SystemExit) as exit_info:
        main(resume[3:])
    assert exit_info.value.code in (None, 0) and [entry["step"] for entry in logged(root)][-2:] == [9, 10]
    logging.getLogger("lightning.pytorch").removeHandler(handler)
    printed = next(message for message in messages if "continue the run with" in message).splitlines()[1]
    command = shlex.split(printed.strip())
    last = versions / "version_5" / "checkpoints" / "last.ckpt"
    assert command[-2:] == ["--ckpt_path", str(last)] and command[1:5] == ["-m", "lightpref", "fit", "--config"]

    code, steps, output = chain.run(command, "resumed:10")  # the printed command, killed before its first step
    assert (code, steps) == (-9, []), output[-3000:]

    monkeypatch.setenv("LIGHTPREF_TEST_FAULT", "")
    assert main(resume[3:]) == 0  # in this process again
    assert [entry["step"] for entry in logged(root)][-2:] == [11, 12]

    for entry in logged(root):  # every step any process trained, retrained ones included
        assert entry["loss"] == pytest.approx(expected[entry["step"]], rel=1e-6, abs=1e-7), entry
    final = torch.load(versions / "version_7" / "checkpoints" / "step=12.ckpt", weights_only=True)["state_dict"]
    uninterrupted = torch.load(next(reference_root.glob("lightning_logs/version_0/checkpoints/step=12.ckpt")),
                               weights_only=True)["state_dict"]
    assert final.keys() == uninterrupted.keys()
    for name, value in uninterrupted.items():
        torch.testing.assert_close(final[name], value, rtol=1e-6, atol=1e-7, msg=name)
