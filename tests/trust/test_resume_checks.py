"""A checkpoint records what it was trained with; resuming it with another loss, loss argument, model or training
data is refused with an error naming what changed, unless allowed. ``--ckpt_path last`` finds the newest
checkpoint of the run across its ``version_N`` directories, or stops with an error."""

import pytest
from scaling_probe import fit_tiny

from lightpref.cli import build_cli, main
from lightpref.losses.ipo import IPO
from lightpref.run.checkpointing import SafeCheckpoints
from lightpref.run.last import SameCheckpointEverywhere
from lightpref.run.resume import NoCheckpointError, ResumeMismatchError, resume_command
from lightpref.testing import save_tiny_checkpoint


@pytest.fixture(scope="module")
def step_2(saved_run):
    return saved_run / "checkpoints" / "step=2.ckpt"


@pytest.mark.parametrize(("change", "named"), [
    ({"loss": "ipo"}, r"another loss than this run \(loss: lightpref.losses.dpo.DPO\(beta=0.1.*-> "
                      r"lightpref.losses.ipo.IPO\(beta=0.1"),
    ({"loss": IPO(beta=0.3)}, "another loss"),
])
def test_another_loss_is_refused(change, named, step_2, tiny_checkpoint, pairs_file, tmp_path):
    with pytest.raises(ResumeMismatchError, match=named) as error:
        fit_tiny(tiny_checkpoint, pairs_file, tmp_path, steps=3, ckpt_path=str(step_2), **change)
    assert "allow_resume_changes=[loss]" in str(error.value)


def test_other_loss_arguments_are_refused(step_2, tiny_checkpoint, pairs_file, tmp_path):
    from lightpref.losses.dpo import DPO

    with pytest.raises(ResumeMismatchError, match=r"DPO\(beta=0.1, .*-> lightpref.losses.dpo.DPO\(beta=0.5"):
        fit_tiny(tiny_checkpoint, pairs_file, tmp_path, loss=DPO(beta=0.5), steps=3, ckpt_path=str(step_2))


def test_another_model_of_the_same_shape_is_refused(step_2, pairs_file, tmp_path):
    other = save_tiny_checkpoint(tmp_path / "other-model", seed=1)
    with pytest.raises(ResumeMismatchError, match=r"another model, data than this run .*other-model"):
        fit_tiny(other, pairs_file, tmp_path / "run", loss="dpo", steps=3, ckpt_path=str(step_2))


def test_other_training_data_is_refused_unless_allowed(step_2, tiny_checkpoint, pairs_file, tmp_path):
    lines = (pairs_file.read_text().splitlines())[:20]  # the same kind of pairs, four fewer
    other = tmp_path / "other.jsonl"
    other.write_text("\n".join(lines) + "\n")
    with pytest.raises(ResumeMismatchError, match=r"another data .*other.jsonl"):
        fit_tiny(tiny_checkpoint, other, tmp_path / "run", loss="dpo", steps=3, ckpt_path=str(step_2))
    allowing = SafeCheckpoints(allow_resume_changes=["data"])
    _, trainer, probe = fit_tiny(tiny_checkpoint, other, tmp_path / "run", loss="dpo", steps=3,
                                 ckpt_path=str(step_2), callbacks=(allowing,))
    assert trainer.global_step == 3 and sorted(probe.losses) == [3]


def test_unknown_part_to_allow_is_refused():
    with pytest.raises(ValueError, match=r"takes \['loss', 'model', 'data'\], got \['optimizer'\]"):
        SafeCheckpoints(allow_resume_changes=["optimizer"])


def test_last_resumes_the_newest_checkpoint_across_versions(tiny_checkpoint, pairs_file, tmp_path, capsys):
    root = tmp_path / "run"
    args = ["fit", "--model.pretrained", str(tiny_checkpoint), "--data.train_files", str(pairs_file),
            "--data.batch_size", "4", "--data.max_length", "64", "--data.max_prompt_length", "32",
            "--model.export_dir", "null", "--trainer.enable_progress_bar", "false",
            "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(root),
            "--trainer.default_root_dir", str(root)]
    assert main([*args, "--ckpt_path", "last"]) == 1  # nothing to resume: an error, not a fresh start
    assert "no complete checkpoint to resume from" in capsys.readouterr().err
    periodic = ["--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.every_n_train_steps=1",
                "--trainer.callbacks.filename={step}", "--trainer.callbacks.save_top_k=-1"]
    first = build_cli([*args, *periodic, "--trainer.max_steps", "2"])
    assert first.trainer.global_step == 2 and first.trainer.logger.version == 0
    second = build_cli([*args, "--trainer.max_steps", "3", "--ckpt_path", "last"])
    assert second.trainer.logger.version == 1
    assert second.trainer.ckpt_path == str(root / "lightning_logs" / "version_0" / "checkpoints" / "step=2.ckpt")
    assert second.trainer.global_step == 3
    new = str(tmp_path / "new")
    third = build_cli([*args, "--trainer.max_steps", "1", "--ckpt_path", "auto", "--trainer.default_root_dir", new,
                       "--trainer.logger.save_dir", new])
    assert third.trainer.ckpt_path is None and third.trainer.global_step == 1  # auto: nothing yet, a fresh start
    checks = [(callback.option, callback.path) for cli in (second, third) for callback in cli.trainer.callbacks
              if isinstance(callback, SameCheckpointEverywhere)]
    assert checks == [("last", second.trainer.ckpt_path), ("auto", None)]


class TwoProcesses:
    """What one process of two sees: process 0's resolved path, and whether any process differs from it."""

    def __init__(self, rank: int, first: str | None, any_differs: bool) -> None:
        self.world_size, self.global_rank = 2, rank
        self.strategy = self
        self.first, self.any_differs = first, any_differs

    def broadcast(self, value, src: int = 0):
        return self.first

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        assert not all  # "any process": every process must stop together
        return decision or self.any_differs


def test_processes_that_resolved_different_checkpoints_all_stop():
    """``--ckpt_path last`` is resolved by each process alone; a disagreement stops every process, naming both."""
    SameCheckpointEverywhere("last", "/r/a.ckpt").setup(TwoProcesses(1, "/r/a.ckpt", False), None, "fit")
    with pytest.raises(ValueError, match=r"last`: .*\(process 0: /r/a.ckpt; process 1: /r/b.ckpt\).*--ckpt_path PATH"):
        SameCheckpointEverywhere("last", "/r/b.ckpt").setup(TwoProcesses(1, "/r/a.ckpt", True), None, "fit")
    with pytest.raises(ValueError, match=r"\(process 0: /r/a.ckpt; another: another\)"):
        SameCheckpointEverywhere("last", "/r/a.ckpt").setup(TwoProcesses(0, "/r/a.ckpt", True), None, "fit")
    with pytest.raises(ValueError, match=r"auto`: .*process 0: none; process 1: /r/a.ckpt"):  # one would start afresh
        SameCheckpointEverywhere("auto", "/r/a.ckpt").setup(TwoProcesses(1, None, True), None, "fit")
    with pytest.raises(ValueError, match=r"last`: .*process 0: /r/a.ckpt; process 1: none"):  # one found nothing
        SameCheckpointEverywhere("last", None, "no checkpoint").setup(TwoProcesses(1, "/r/a.ckpt", True), None, "fit")
    with pytest.raises(NoCheckpointError, match="no complete checkpoint"):  # none found any: all stop, not hang
        SameCheckpointEverywhere("last", None, "no complete checkpoint").setup(TwoProcesses(1, None, False), None,
                                                                              "fit")


def test_resume_command_replaces_the_checkpoint_option():
    argv = ["/usr/bin/lightpref", "fit", "--config", "my job.yaml", "--ckpt_path", "last", "--trainer.max_steps", "9"]
    assert resume_command("/runs/v0/last.ckpt", argv) == (
        "lightpref fit --config 'my job.yaml' --trainer.max_steps 9 --ckpt_path /runs/v0/last.ckpt")
    assert resume_command("/x.ckpt", ["pytest", "-q"]) == "--ckpt_path /x.ckpt"  # not started as lightpref
