"""Warm-up then decay, by hand: base lr 1.0, 10 total steps, 2 warm-up steps."""

import math

import pytest
import torch

from lightpref.training.schedules import WarmupCosineLR, WarmupLinearLR


def lrs(scheduler_class, steps=10, **kwargs):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = scheduler_class(optimizer, **kwargs)
    values = []
    for _ in range(steps):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def test_cosine():
    """step 0: 0, step 1: 1/2, step 2: cos(0) → 1, step 6: ½(1 + cos(π·4/8)) = 0.5."""
    values = lrs(WarmupCosineLR, warmup_steps=2, total_steps=10)
    assert values[0] == 0 and values[1] == pytest.approx(0.5) and values[2] == pytest.approx(1.0)
    assert values[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))


def test_linear_with_fractional_warmup_and_floor():
    """warm-up 0.2 × 10 = 2 steps; step 6: progress 4/8, factor 0.1 + 0.9·0.5 = 0.55."""
    values = lrs(WarmupLinearLR, warmup_steps=0.2, total_steps=10, min_lr_ratio=0.1)
    assert values[6] == pytest.approx(0.55)


def test_bad_warmup_names_the_parameter():
    with pytest.raises(ValueError, match="warmup_steps"):
        lrs(WarmupCosineLR, warmup_steps=1.5)


@pytest.mark.parametrize("scheduler_class", [WarmupCosineLR, WarmupLinearLR])
def test_fractional_warmup_with_total_steps_filled_later_starts_at_zero(scheduler_class):
    """As the module does it: built without `total_steps`, filled before the first step (10 steps, warm-up 0.2 → 2).
    The first optimiser step runs at lr 0, the second at 1/2, the third at the full lr."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = scheduler_class(optimizer, warmup_steps=0.2)
    scheduler.set_total_steps(10)
    values = []
    for _ in range(4):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert values[:3] == [0.0, pytest.approx(0.5), pytest.approx(1.0)]


def test_module_fills_total_steps_so_the_first_step_runs_at_lr_zero(tiny_checkpoint, pairs_file, tmp_path):
    """`configs/hh_rlhf_hub.yaml`'s schedule (warm-up 0.1 of the run) through a real fit of 3 steps: warm-up 0.3
    steps, so step 0 runs at lr 0 and step 1 at the cosine of progress (1 − 0.3) / (3 − 0.3)."""
    from functools import partial

    from lightning.pytorch import Callback, Trainer

    from lightpref.data import PreferenceDataModule
    from lightpref.training.module import PreferenceModule

    seen = []

    class LearningRates(Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            seen.append(optimizer.param_groups[0]["lr"])

    module = PreferenceModule(str(tiny_checkpoint), optimizer=partial(torch.optim.AdamW, lr=1e-3),
                              lr_scheduler=partial(WarmupCosineLR, warmup_steps=0.1))
    data = PreferenceDataModule(tokenizer=str(tiny_checkpoint), train_files=str(pairs_file), batch_size=8,
                                max_length=64, max_prompt_length=32)
    trainer = Trainer(max_steps=3, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                      logger=False, enable_checkpointing=False, default_root_dir=tmp_path, callbacks=[LearningRates()])
    module.export_dir = None
    trainer.fit(module, data)
    assert seen[0] == 0.0 and seen[1] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 0.7 / 2.7)))
