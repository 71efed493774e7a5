"""Gradients are set to None right after each optimiser step (lightpref.training.free_gradients), changing nothing
else."""

import torch
from fit_support import fit
from lightning.pytorch import Callback, LightningModule

from lightpref.training.free_gradients import FreeGradientsAfterStep


class GradientsHeld(Callback):
    """After each training batch: whether any parameter still holds a gradient."""

    def __init__(self) -> None:
        self.after_batch: list[bool] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.after_batch.append(any(p.grad is not None for p in module.parameters()))


def test_gradients_are_freed_after_each_optimiser_step_only(tiny_checkpoint, pairs_file, tmp_path):
    held = GradientsHeld()
    fit(tiny_checkpoint, pairs_file, tmp_path, steps=2, accumulate=2, callbacks=[held], validate_every=None,
        sanity_steps=0, checkpoints=False, logger=False)
    # two batches per step: the first one's gradients are kept for the second, the step's are freed after it
    assert held.after_batch == [True, False, True, False]


def test_freeing_them_changes_no_value(tiny_checkpoint, pairs_file, tmp_path, monkeypatch):
    options = {"steps": 3, "accumulate": 2, "validate_every": None, "sanity_steps": 0, "checkpoints": False,
               "logger": False}
    freed, _, freed_losses = fit(tiny_checkpoint, pairs_file, tmp_path / "freed", **options)
    monkeypatch.setattr(FreeGradientsAfterStep, "optimizer_step", LightningModule.optimizer_step)  # Lightning's own
    held = GradientsHeld()
    kept, _, kept_losses = fit(tiny_checkpoint, pairs_file, tmp_path / "kept", callbacks=[held], **options)
    assert held.after_batch[1] and held.after_batch[3]  # Lightning keeps them until the next backward
    assert freed_losses == kept_losses
    kept_weights = kept.policy.state_dict()
    for name, value in freed.policy.state_dict().items():
        assert torch.equal(value, kept_weights[name]), name
