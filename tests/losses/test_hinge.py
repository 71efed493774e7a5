"""SLiC hinge: values derived by hand on small tensors."""

import pytest
import torch
from torch.testing import assert_close

from lightpref.losses import LogProbs, build
from lightpref.losses.hinge import Hinge


def records(pc, pr, rc, rr):
    policy = LogProbs.from_sums(torch.as_tensor(pc), torch.as_tensor(pr))
    reference = LogProbs.from_sums(torch.as_tensor(rc), torch.as_tensor(rr))
    return policy, reference


def test_golden():
    """β = 0.5; pc = [−4, −6, −2], rc = [−5, −6, −5] so ρc = [1, 0, 3]; pr = [−8, −7, −9], rr = [−8, −7, −8] so
    ρr = [0, 0, −1]; h = [1, 0, 4] and β·h = [0.5, 0, 2]:
    L = max(0, 1 − [0.5, 0, 2]) = [0.5, 1, 0]. Rewards β·ρc = [0.5, 0, 1.5], β·ρr = [0, 0, −0.5].
    """
    policy, reference = records([-4.0, -6.0, -2.0], [-8.0, -7.0, -9.0], [-5.0, -6.0, -5.0], [-8.0, -7.0, -8.0])
    output = build("hinge", beta=0.5)(policy, reference)
    assert_close(output.losses, torch.tensor([0.5, 1.0, 0.0]))
    assert_close(output.chosen_rewards, torch.tensor([0.5, 0.0, 1.5]))
    assert_close(output.rejected_rewards, torch.tensor([0.0, 0.0, -0.5]))


def test_no_gradient_beyond_the_margin():
    """β = 0.5: dL/dpc = −β = −0.5 while β·h < 1 (pairs 0, 1), and 0 once β·h > 1 (pair 2: β·h = 2)."""
    pc = torch.tensor([-4.0, -6.0, -2.0], requires_grad=True)
    policy, reference = records(pc, [-8.0, -7.0, -9.0], [-5.0, -6.0, -5.0], [-8.0, -7.0, -8.0])
    Hinge(beta=0.5)(policy, reference).losses.sum().backward()
    assert_close(pc.grad, torch.tensor([-0.5, -0.5, 0.0]))


def test_large_margins_are_finite():
    """h = ±1e4, β = 0.1: L = max(0, 1 − 1000) = 0 and max(0, 1 + 1000) = 1001."""
    policy, reference = records([0.0, -1e4], [-1e4, 0.0], [0.0, 0.0], [0.0, 0.0])
    assert_close(Hinge(beta=0.1)(policy, reference).losses, torch.tensor([0.0, 1001.0]))


def test_registry_and_arguments():
    assert isinstance(build("hinge"), Hinge) and build("hinge").requires_reference
    with pytest.raises(ValueError, match="beta"):
        Hinge(beta=-1.0)
