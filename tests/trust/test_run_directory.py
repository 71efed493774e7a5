"""A run owns its directory: two ``lightpref fit`` processes on one ``default_root_dir`` never share a ``version_N``
or a checkpoint file, a run whose checkpoint directory another live run holds is refused with one message, and
``--ckpt_path last`` passes over the checkpoints of a run that is still running."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightpref.cli import build_cli, main

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def fit_args(checkpoint: Path, pairs: Path, root: Path, steps: int, *extra: str, logger: bool = True) -> list[str]:
    log = ["--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(root)]
    return ["fit", "--model.pretrained", str(checkpoint), "--data.train_files", str(pairs), "--data.batch_size", "4",
            "--data.max_length", "64", "--data.max_prompt_length", "32", "--trainer.max_steps", str(steps),
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.default_root_dir", str(root), *(log if logger else ["--trainer.logger", "false"]), *extra]


def start(args: list[str], output: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "lightpref", *args], cwd=REPO, env=env, stdout=output.open("w"),
                            stderr=subprocess.STDOUT)


def test_two_runs_started_together_get_their_own_version(tiny_checkpoint, pairs_file, tmp_path):
    """Both choose their log directory at the same moment (the barrier), as two jobs started together can."""
    root = tmp_path / "run"
    barrier = ["--trainer.callbacks+=faults.Barrier", f"--trainer.callbacks.directory={tmp_path / 'barrier'}"]
    runs = [start(fit_args(tiny_checkpoint, pairs_file, root, 2, *barrier), tmp_path / f"out{index}.txt")
            for index in range(2)]
    outputs = [tmp_path / f"out{index}.txt" for index in range(2)]
    assert [run.wait(timeout=600) for run in runs] == [0, 0], [path.read_text()[-3000:] for path in outputs]
    versions = root / "lightning_logs"
    assert sorted(path.name for path in versions.iterdir()) == ["version_0", "version_1"]
    for version in versions.iterdir():
        assert (version / "checkpoints" / "last.ckpt").is_file() and (version / "huggingface" / "config.json").is_file()
    saved_to = sorted(line.rsplit(" to ", 1)[1] for path in outputs for line in path.read_text().splitlines()
                      if line.startswith("Saved the trained policy"))
    assert saved_to == [str(versions / name / "huggingface") for name in ("version_0", "version_1")]


def test_a_live_runs_directory_is_refused_and_never_resumed(tiny_checkpoint, pairs_file, tmp_path, capsys,
                                                           monkeypatch):
    """Run A finished earlier (``version_0``), then a run with another loss (``version_1``). Run B, with no logger,
    writes ``<root>/checkpoints/last.ckpt`` as its first epoch ends and is paused in the next: a run started on B's
    directory is refused while B lives, and ``--ckpt_path last`` to continue A resumes A's checkpoint, not B's or
    the other loss's, which are newer."""
    monkeypatch.syspath_prepend(str(HERE))
    root = tmp_path / "run"
    no_export = ("--model.export_dir", "null")
    assert main(fit_args(tiny_checkpoint, pairs_file, root, 2, *no_export)) == 0  # A
    assert main(fit_args(tiny_checkpoint, pairs_file, root, 2, *no_export, "--model.loss", "ipo")) == 0
    hold = tmp_path / "hold"
    b = start(fit_args(tiny_checkpoint, pairs_file, root, 8, "--model.export_dir", "null",
                       "--trainer.callbacks+=faults.Hold", f"--trainer.callbacks.path={hold}",
                       "--trainer.callbacks.at_step=7", logger=False), tmp_path / "b.txt")
    try:
        deadline = 600
        while not Path(f"{hold}.held").exists() and b.poll() is None and deadline > 0:
            deadline -= 1
            subprocess.run(["sleep", "1"], check=True)
        assert Path(f"{hold}.held").exists(), (tmp_path / "b.txt").read_text()[-3000:]
        b_last = root / "checkpoints" / "last.ckpt"
        assert b_last.is_file()

        capsys.readouterr()
        code = main(fit_args(tiny_checkpoint, pairs_file, root, 2, "--model.export_dir", "null", logger=False))
        output = capsys.readouterr()
        errors = [line for line in output.err.splitlines() if line.startswith("lightpref: error: ")]
        assert code == 1 and "Traceback" not in output.err and len(errors) == 1, output.err[-3000:]
        assert f"another lightpref run that is still running writes its checkpoints to {root / 'checkpoints'}" \
            in errors[0] and "`trainer.default_root_dir`" in errors[0]

        a_last = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
        ipo_last = root / "lightning_logs" / "version_1" / "checkpoints" / "last.ckpt"
        assert b_last.stat().st_mtime_ns > ipo_last.stat().st_mtime_ns > a_last.stat().st_mtime_ns
        continued = build_cli(fit_args(tiny_checkpoint, pairs_file, root, 3, "--model.export_dir", "null",
                                       "--ckpt_path", "last"))
        assert continued.trainer.ckpt_path == str(a_last) and continued.trainer.global_step == 3
    finally:
        Path(f"{hold}.go").touch()
        code = b.wait(timeout=600)
    assert code == 0, (tmp_path / "b.txt").read_text()[-3000:]
