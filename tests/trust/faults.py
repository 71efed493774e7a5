"""Faulty parts for the trust suite, importable by class path from configs run in-process or in subprocesses."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback

from lightpref.losses import LogProbs, LossOutput
from lightpref.losses.dpo import DPO


class Payload:
    """Unpickling this object runs ``touch path``: the file appears only if a reader executed code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class AlwaysNaNDPO(DPO):
    """DPO whose loss value is NaN at every training call (its gradient stays finite): nothing can be learnt."""

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        output = super().forward(policy, reference)
        if self.training:
            output.losses = output.losses + torch.full_like(output.losses, float("nan"))
        return output


FAULT_ENV = "LIGHTPREF_TEST_FAULT"  # "<point>:<global step>", e.g. "write:6"


class LossLog(Callback):
    """Appends ``{"step": …, "loss": …}`` per optimiser step to a JSON-lines file, flushed at once (so the lines of
    a process killed with SIGKILL survive it)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches == 0:
            with open(self.path, "a") as file:
                file.write(json.dumps({"step": trainer.global_step, "loss": float(outputs["loss"])}) + "\n")


def _sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # kill -9: no cleanup, no atexit, no flush


class Faults(Callback):
    """Kills its own process with SIGKILL at the point ``$LIGHTPREF_TEST_FAULT`` names (or sends itself SIGTERM):

    - ``step:N`` as step N starts (its forward not yet run); ``optimizer:N`` in step N between backward and
      optimiser update; ``resumed:N`` at the first batch of a run resumed at step N;
    - ``write:N`` half-way through writing the checkpoint of step N (half its bytes on disk);
    - ``rename:N`` when the checkpoint of step N is completely written under its hidden name, before the rename;
    - ``sigterm:N`` sends SIGTERM after step N (the run saves a checkpoint and exits 0).
    """

    def __init__(self) -> None:
        point, _, step = os.environ.get(FAULT_ENV, "").partition(":")
        self.point, self.step = point, int(step or -1)

    def setup(self, trainer, pl_module, stage) -> None:
        from lightpref.run import checkpointing

        if self.point == "write":
            real_save = checkpointing.torch.save

            def half_then_die(obj, file):
                if trainer.global_step != self.step:
                    return real_save(obj, file)
                buffer = io.BytesIO()
                real_save(obj, buffer)
                file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                file.flush()
                os.fsync(file.fileno())
                _sigkill()

            checkpointing.torch.save = half_then_die
        if self.point == "rename":
            real_replace = checkpointing.replace_atomically

            def die_before_rename(staging, target):
                if trainer.global_step == self.step:
                    _sigkill()
                return real_replace(staging, target)

            checkpointing.replace_atomically = die_before_rename

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.point == "step" and trainer.global_step + 1 == self.step:
            _sigkill()
        if self.point == "resumed" and trainer.global_step == self.step:
            _sigkill()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.point == "optimizer" and trainer.global_step + 1 == self.step:
            _sigkill()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.point == "sigterm" and trainer.global_step == self.step:
            self.point = ""
            os.kill(os.getpid(), signal.SIGTERM)


def _wait_for(condition, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.05)


class Barrier(Callback):
    """Two runs started together: at setup each reads its log directory (where Lightning decides a run's
    ``version_N``), then waits until ``parties`` processes have, so each has chosen before any writes there."""

    def __init__(self, directory: str, parties: int = 2) -> None:
        self.directory, self.parties = Path(directory), parties

    def setup(self, trainer, pl_module, stage) -> None:
        trainer.log_dir  # noqa: B018 — the version is chosen on first use
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / str(os.getpid())).touch()
        _wait_for(lambda: len(list(self.directory.iterdir())) >= self.parties, "the other run")


class Hold(Callback):
    """Pauses the run as step ``at_step`` starts: creates ``<path>.held``, then waits for ``<path>.go`` to exist."""

    def __init__(self, path: str, at_step: int) -> None:
        self.path, self.at_step = path, at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step + 1 == self.at_step:
            Path(f"{self.path}.held").touch()
            _wait_for(lambda: Path(f"{self.path}.go").exists(), f"{self.path}.go")
