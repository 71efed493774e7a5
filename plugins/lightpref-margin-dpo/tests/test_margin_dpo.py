"""The plugin's own tests: its loss on plain tensors, and that lightpref finds it by name."""

import math

import pytest
import torch
from lightpref_margin_dpo import MarginDPO

from lightpref.losses import LogProbs, build


def test_value_by_hand():
    """ρc = -5 - (-6) = 1, ρr = -9 - (-8) = -1, h = 2; β·h − δ = 0.2 − 0.5 = −0.3; L = −logσ(−0.3) = log(1 + e^0.3)."""
    loss = MarginDPO(beta=0.1, margin=0.5)
    policy = LogProbs.from_sums(torch.tensor([-5.0]), torch.tensor([-9.0]))
    reference = LogProbs.from_sums(torch.tensor([-6.0]), torch.tensor([-8.0]))
    assert loss(policy, reference).losses.item() == pytest.approx(math.log1p(math.exp(0.3)), rel=1e-6)


def test_zero_margin_is_dpo():
    policy = LogProbs.from_sums(torch.tensor([-5.0, -2.0]), torch.tensor([-9.0, -1.0]))
    reference = LogProbs.from_sums(torch.tensor([-6.0, -3.0]), torch.tensor([-8.0, -4.0]))
    ours = MarginDPO(beta=0.2, margin=0.0)(policy, reference).losses
    dpo = build("dpo", beta=0.2)(policy, reference).losses
    torch.testing.assert_close(ours, dpo)


def test_found_by_name():
    assert isinstance(build("margin_dpo", margin=1.0), MarginDPO)


def test_rejects_negative_margin():
    with pytest.raises(ValueError, match="margin"):
        MarginDPO(margin=-1.0)
