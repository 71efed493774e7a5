"""The non-finite guard: a step with a NaN loss or gradient is skipped (weights and optimiser untouched) and
counted, or stops the run with a message naming the step and the batch."""

import pytest
import torch
from lightning.pytorch import Callback
from scaling_probe import NaNOnceDPO, fit_tiny

from lightpref.run.guards import NonFiniteGuard, any_nonfinite
from lightpref.training.module import PreferenceModule


class WeightLog(Callback):
    """The policy's weights after each optimiser step, and a NaN gradient planted before one chosen step."""

    def __init__(self, nan_gradient_at_step: int | None = None) -> None:
        self.after_step: dict[int, dict[str, torch.Tensor]] = {}
        self.nan_gradient_at_step = nan_gradient_at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step + 1 == self.nan_gradient_at_step:
            weight = pl_module.policy.get_input_embeddings().weight
            handle = weight.register_hook(lambda grad: (handle.remove(), grad * float("nan"))[1])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after_step[trainer.global_step] = {k: v.detach().clone() for k, v in pl_module.policy.state_dict().items()}


def changed(before: dict, after: dict) -> bool:
    return any(not torch.equal(before[name], after[name]) for name in before)


def test_nan_loss_and_nan_gradient_steps_are_skipped_and_counted(tiny_checkpoint, pairs_file, tmp_path):
    weights = WeightLog(nan_gradient_at_step=4)
    tolerant = NonFiniteGuard(max_skipped_share=0.5)  # 2 of 5 steps: more than the default 25% allows
    module, trainer, probe = fit_tiny(tiny_checkpoint, pairs_file, tmp_path, loss=NaNOnceDPO(at_call=2), steps=5,
                                      callbacks=(weights, tolerant))
    assert [c for c in trainer.callbacks if isinstance(c, NonFiniteGuard)] == [tolerant]
    assert tolerant.skipped_steps == 2 and tolerant.steps == 5
    assert trainer.callback_metrics["nonfinite_steps"].item() == 2
    after = weights.after_step
    assert not changed(after[1], after[2]), "step 2 (NaN loss) must leave the weights alone"
    assert not changed(after[3], after[4]), "step 4 (NaN gradient) must leave the weights alone"
    assert changed(after[2], after[3]) and changed(after[4], after[5]), "the steps around them still train"
    assert trainer.global_step == 5 and probe.learning_rates[5] != probe.learning_rates[4]  # the schedule moves on
    assert all(torch.isfinite(value).all() for value in module.policy.state_dict().values())
    adam = trainer.optimizers[0]
    assert all(adam.state[p]["step"].item() == 3 for p in module.policy.parameters())  # 5 steps, 2 skipped


def test_stop_names_the_step_and_the_batch(tiny_checkpoint, pairs_file, tmp_path):
    with pytest.raises(FloatingPointError, match=r"non-finite loss at global step 2 \(batch 2 of epoch 0\)") as error:
        fit_tiny(tiny_checkpoint, pairs_file, tmp_path, loss=NaNOnceDPO(at_call=3), steps=4, on_nonfinite="stop")
    assert "model.on_nonfinite: skip" in str(error.value)


def test_bad_action_names_the_config_key(tiny_checkpoint):
    with pytest.raises(ValueError, match=r"`model.on_nonfinite` must be one of \['skip', 'stop'\], got 'ignore'"):
        PreferenceModule(str(tiny_checkpoint), on_nonfinite="ignore")


def test_any_nonfinite_on_plain_tensors():
    device = torch.device("cpu")
    assert not any_nonfinite([torch.ones(3), torch.zeros(2, 2)], device)
    assert any_nonfinite([torch.ones(3), torch.tensor([1.0, float("inf")])], device)
    assert any_nonfinite([torch.tensor([float("nan")])], device)
    assert not any_nonfinite([], device)
