"""Robust DPO: values derived by hand, including ε at its bounds."""

import math

import pytest
import torch
from torch.testing import assert_close

from lightpref.losses import LogProbs, build
from lightpref.losses.robust import RobustDPO


def records(pc, pr, rc, rr):
    policy = LogProbs.from_sums(torch.as_tensor(pc), torch.as_tensor(pr))
    reference = LogProbs.from_sums(torch.as_tensor(rc), torch.as_tensor(rr))
    return policy, reference


# ρc = [0, 1, 0], ρr = [0, 0, 2], so h = [0, 1, −2]
POLICY_REFERENCE = ([-3.0, -4.0, -5.0], [-3.0, -6.0, -5.0], [-3.0, -5.0, -5.0], [-3.0, -6.0, -7.0])


def test_golden():
    """β = 1, ε = 0.1, z = β·h = [0, 1, −2]; L = [−0.9·logσ(z) + 0.1·logσ(−z)] / 0.8.

    logσ(0) = −0.693147; logσ(1) = −0.313262, logσ(−1) = −1.313262; logσ(−2) = −2.126928, logσ(2) = −0.126928.
    z = 0:  (0.9·0.693147 − 0.1·0.693147) / 0.8 = log 2 = 0.693147
    z = 1:  (0.9·0.313262 − 0.1·1.313262) / 0.8 = (0.281936 − 0.131326) / 0.8 = 0.188262
    z = −2: (0.9·2.126928 − 0.1·0.126928) / 0.8 = (1.914235 − 0.012693) / 0.8 = 2.376928
    (the same as −logσ(z) − ε·z/(1 − 2ε) = −logσ(z) − z/8).
    """
    output = build("robust", beta=1.0, label_smoothing=0.1)(*records(*POLICY_REFERENCE))
    assert_close(output.losses, torch.tensor([0.693147, 0.188262, 2.376928]), atol=1e-6, rtol=0)
    assert_close(output.chosen_rewards, torch.tensor([0.0, 1.0, 0.0]))
    assert_close(output.rejected_rewards, torch.tensor([0.0, 0.0, 2.0]))


def test_zero_epsilon_is_dpo():
    policy, reference = records(*POLICY_REFERENCE)
    assert_close(RobustDPO(beta=0.3)(policy, reference).losses, build("dpo", beta=0.3)(policy, reference).losses)


def test_large_margins_are_finite():
    """β = 1, ε = 0.1, z = ±1e4: L = softplus(−z) − z/8 = 0 − 1250 and 1e4 + 1250 (unbounded below, by design)."""
    policy, reference = records([0.0, -1e4], [-1e4, 0.0], [0.0, 0.0], [0.0, 0.0])
    assert_close(RobustDPO(beta=1.0, label_smoothing=0.1)(policy, reference).losses, torch.tensor([-1250.0, 11250.0]))


@pytest.mark.parametrize("bad", [0.5, 0.7, -0.01])
def test_epsilon_outside_bounds_is_an_error(bad):
    with pytest.raises(ValueError, match=r"label_smoothing.*\[0, 0.5\)"):
        RobustDPO(label_smoothing=bad)


def test_epsilon_just_below_one_half_is_finite():
    """ε = 0.49, z = 1: L = −logσ(1) − 0.49/0.02 = 0.313262 − 24.5."""
    policy, reference = records([-4.0], [-6.0], [-5.0], [-6.0])
    loss = RobustDPO(beta=1.0, label_smoothing=0.49)(policy, reference).losses.item()
    assert loss == pytest.approx(-math.log(1 / (1 + math.exp(-1))) - 24.5, rel=1e-5)
