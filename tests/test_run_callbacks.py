"""Short runs leave a result: a final checkpoint, first/last-step metrics, the learning rate, validation at step 0."""

import signal
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForCausalLM

from lightpref.cli import build_cli, main
from lightpref.run.callbacks import FinalCheckpoint, LogFirstAndLastStep, ValidateAtStart, with_run_callbacks


def short_run_config(path, checkpoint, pairs_file, root, max_steps=3):
    config = {
        "trainer": {"max_steps": max_steps, "accelerator": "cpu", "default_root_dir": str(root),
                    "log_every_n_steps": 50, "enable_model_summary": False},
        "model": {"pretrained": str(checkpoint), "loss": "dpo",
                  "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-2}},
                  "lr_scheduler": {"class_path": "lightpref.training.schedules.WarmupCosineLR",
                                   "init_args": {"warmup_steps": 2}}},
        "data": {"train_files": str(pairs_file), "val_fraction": 0.25, "batch_size": 4, "max_length": 64,
                 "max_prompt_length": 32},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_a_three_step_run_leaves_a_checkpoint_metrics_and_an_export(tiny_checkpoint, pairs_file, tmp_path):
    config = short_run_config(tmp_path / "job.yaml", tiny_checkpoint, pairs_file, tmp_path / "run")
    cli = build_cli(["fit", "--config", str(config)])
    log_dir = Path(cli.trainer.log_dir)
    assert [path.name for path in (log_dir / "checkpoints").iterdir()] == ["last.ckpt"]
    logged = scalars(log_dir)
    # Lightning numbers a step's metrics by the steps completed before it: 0 is the first of three, 2 the last
    assert [step for step, _ in logged["loss"]] == [0, 2]  # log_every_n_steps is 50
    assert [step for step, _ in logged["val/loss"]] == [0]  # before training; the epoch did not end
    assert logged["val/loss"][0][1] == pytest.approx(0.6931, abs=1e-4)  # policy = reference: −logσ(0) = log 2
    learning_rates = [value for _, value in logged["lr-AdamW"]]
    assert learning_rates == pytest.approx([0.0, 1e-2])  # warm-up over 2 steps, then the cosine starts at the top
    exported = tmp_path / "exported"
    assert main(["export", str(log_dir / "checkpoints" / "last.ckpt"), str(exported)]) == 0
    policy = AutoModelForCausalLM.from_pretrained(exported)
    trained = AutoModelForCausalLM.from_pretrained(log_dir / "huggingface")
    for name, value in trained.state_dict().items():
        torch.testing.assert_close(policy.state_dict()[name], value)  # the checkpoint holds the final step


class InterruptAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


def test_ctrl_c_leaves_a_checkpoint_of_the_step_reached(tiny_checkpoint, pairs_file, tmp_path):
    config = short_run_config(tmp_path / "job.yaml", tiny_checkpoint, pairs_file, tmp_path / "run", max_steps=10)
    interrupt = tmp_path / "interrupt.yaml"
    interrupt.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": f"{__name__}.InterruptAt", "init_args": {"step": 2}}]}}))
    try:
        with pytest.raises(SystemExit):  # Lightning exits with status 1 after a KeyboardInterrupt
            build_cli(["fit", "--config", str(config), "--config", str(interrupt)])
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores Ctrl-C after the first
    checkpoints = list((tmp_path / "run").rglob("*.ckpt"))
    assert [path.name for path in checkpoints] == ["last.ckpt"]
    assert torch.load(checkpoints[0], weights_only=True, map_location="cpu")["global_step"] == 2
    assert not list((tmp_path / "run").rglob("huggingface"))  # an unfinished run is not exported


def test_run_callbacks_give_way_to_the_configs_own():
    own = [ModelCheckpoint(monitor="val/loss"), LearningRateMonitor()]
    callbacks = with_run_callbacks(own)
    assert not any(isinstance(callback, FinalCheckpoint) for callback in callbacks)
    assert sum(isinstance(callback, LearningRateMonitor) for callback in callbacks) == 1
    assert isinstance(callbacks[0], LogFirstAndLastStep)  # before any LearningRateMonitor: it decides the steps
    assert any(isinstance(callback, ValidateAtStart) for callback in callbacks)
    quiet = with_run_callbacks([], checkpointing=False, progress_bar=False, logging=False)
    assert not any(isinstance(callback, (FinalCheckpoint, LearningRateMonitor, LogFirstAndLastStep))
                   for callback in quiet)
