"""APO-zero and APO-down: values and the gradient signs the paper states, derived by hand."""

import pytest
import torch
from torch.testing import assert_close

from lightpref.losses import LogProbs, build
from lightpref.losses.apo import APODown, APOZero


def ratios(chosen, rejected):
    """Records with ρc = chosen and ρr = rejected (the reference is 0)."""
    chosen, rejected = torch.as_tensor(chosen), torch.as_tensor(rejected)
    zeros = torch.zeros_like(chosen)
    return LogProbs.from_sums(chosen, rejected), LogProbs.from_sums(zeros, zeros)


def test_apo_zero_golden():
    """β = 1, L = (1 − σ(ρc)) + σ(ρr): (0, 0) → 0.5 + 0.5 = 1; (2, −1) → 0.119203 + 0.268941 = 0.388144."""
    output = build("apo_zero", beta=1.0)(*ratios([0.0, 2.0], [0.0, -1.0]))
    assert_close(output.losses, torch.tensor([1.0, 0.388144]), atol=1e-6, rtol=0)


def test_apo_down_golden():
    """β = 1, L = σ(ρc) + (1 − σ(ρc − ρr)): (0, 0) → 0.5 + 0.5 = 1; (2, −1) → 0.880797 + 0.047426 = 0.928223."""
    output = build("apo_down", beta=1.0)(*ratios([0.0, 2.0], [0.0, -1.0]))
    assert_close(output.losses, torch.tensor([1.0, 0.928223]), atol=1e-6, rtol=0)


def test_apo_zero_raises_chosen_and_lowers_rejected():
    """dL/dρc = −σ'(ρc) < 0 and dL/dρr = σ'(ρr) > 0 for every value: −0.25 and 0.25 at 0."""
    chosen = torch.tensor([0.0, 3.0, -3.0], requires_grad=True)
    rejected = torch.tensor([0.0, -3.0, 3.0], requires_grad=True)
    APOZero(beta=1.0)(*ratios(chosen, rejected)).losses.sum().backward()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()
    assert chosen.grad[0].item() == pytest.approx(-0.25) and rejected.grad[0].item() == pytest.approx(0.25)


def test_apo_down_lowers_both_rejected_more():
    """(ρc, ρr) = (0, −1), β = 1: dL/dρc = σ'(0) − σ'(1) = 0.25 − 0.196612 = 0.053388 > 0 (descent lowers y⁺) and
    dL/dρr = σ'(1) = 0.196612, larger (descent lowers y⁻ more).
    """
    chosen = torch.tensor([0.0], requires_grad=True)
    rejected = torch.tensor([-1.0], requires_grad=True)
    APODown(beta=1.0)(*ratios(chosen, rejected)).losses.sum().backward()
    assert chosen.grad.item() == pytest.approx(0.053388, abs=1e-6)
    assert rejected.grad.item() == pytest.approx(0.196612, abs=1e-6)


def test_large_values_are_bounded():
    """ρc = 1e4, ρr = −1e4: APO-zero → 0 + 0; APO-down → 1 + 0. Reversed: 1 + 1 and 0 + 1."""
    records = ratios([1e4, -1e4], [-1e4, 1e4])
    assert_close(APOZero()(*records).losses, torch.tensor([0.0, 2.0]))
    assert_close(APODown()(*records).losses, torch.tensor([1.0, 1.0]))


def test_arguments():
    with pytest.raises(ValueError, match="beta"):
        APODown(beta=-0.1)
