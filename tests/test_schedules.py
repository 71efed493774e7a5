"""Warm-up then decay, by hand: base lr 1.0, 10 total steps, 2 warm-up steps."""

import math

import pytest
import torch

from lightpref.schedules import WarmupCosineLR, WarmupLinearLR


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
