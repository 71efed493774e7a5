import pytest
import torch
from torch.testing import assert_close

from lightpref.losses import LogProbs, build
from lightpref.losses.dpo import DPO
from lightpref.losses.minor_dpo import MinorDPO


def records(policy_chosen, policy_rejected, reference_chosen, reference_rejected):
    policy = LogProbs.from_sums(chosen=policy_chosen, rejected=policy_rejected)
    reference = LogProbs.from_sums(chosen=reference_chosen, rejected=reference_rejected)
    return policy, reference


def test_golden_values():
    """β = 0.5; pc = [−5, −4, −6], pr = [−9, −7, −8], rc = [−6, −5, −6], rr = [−8, −8, −8].

    ρc = [1, 1, 0], ρr = [−1, 1, 0], so max(0, ρr) = [0, 1, 0] and the logits β·(ρc − max(0, ρr)) = [0.5, 0, 0]:

    - pair 0: −logσ(0.5) = log(1 + e^−0.5) = log(1.606531) = 0.474077 (DPO would use β·h = 1: 0.313262);
    - pairs 1, 2: −logσ(0) = log 2 = 0.693147.

    Rewards β·ρc = [0.5, 0.5, 0], β·ρr = [−0.5, 0.5, 0]; the rejected penalty is off (ρr ≤ 0) on pairs 0 and 2.
    """
    policy, reference = records(
        torch.tensor([-5.0, -4.0, -6.0]),
        torch.tensor([-9.0, -7.0, -8.0]),
        torch.tensor([-6.0, -5.0, -6.0]),
        torch.tensor([-8.0, -8.0, -8.0]),
    )
    out = MinorDPO(beta=0.5)(policy, reference)
    assert_close(out.losses, torch.tensor([0.474077, 0.693147, 0.693147]), atol=1e-6, rtol=0)
    assert_close(out.chosen_rewards, torch.tensor([0.5, 0.5, 0.0]))
    assert_close(out.rejected_rewards, torch.tensor([-0.5, 0.5, 0.0]))
    assert_close(out.metrics["minor_dpo/rejected_below_reference"], torch.tensor([1.0, 0.0, 1.0]))


def test_no_gradient_to_rejected_at_or_below_the_reference():
    """Where pr ≤ rr (pairs 0: pr < rr, and 2: pr = rr) d L/d pr = 0; the chosen still gets −β·σ(−β·ρc).

    Same inputs as the golden test, β = 0.5: d L/d pc = −0.5·σ(−0.5) = −0.5·0.377541 = −0.188771 on pair 0 and
    −0.5·σ(0) = −0.25 on pair 2.
    """
    policy_chosen = torch.tensor([-5.0, -4.0, -6.0], requires_grad=True)
    policy_rejected = torch.tensor([-9.0, -7.0, -8.0], requires_grad=True)
    policy, reference = records(
        policy_chosen, policy_rejected, torch.tensor([-6.0, -5.0, -6.0]), torch.tensor([-8.0, -8.0, -8.0])
    )
    MinorDPO(beta=0.5)(policy, reference).losses.sum().backward()
    assert policy_rejected.grad[0] == 0 and policy_rejected.grad[2] == 0
    assert policy_rejected.grad[1] > 0  # ρr = 1 > 0: still pushed down
    assert_close(policy_chosen.grad[[0, 2]], torch.tensor([-0.188771, -0.25]), atol=1e-6, rtol=0)


def test_equals_dpo_in_value_and_gradient_when_rejected_is_above_the_reference():
    """With every ρr > 0, max(0, ρr) = ρr and the loss is DPO's −logσ(β·h), so values and gradients match DPO."""
    generator = torch.Generator().manual_seed(0)
    reference_chosen, reference_rejected = -10 * torch.rand(2, 4, generator=generator)
    policy_chosen = (reference_chosen + torch.randn(4, generator=generator)).requires_grad_()
    policy_rejected = (reference_rejected + 0.1 + torch.rand(4, generator=generator)).requires_grad_()  # ρr > 0

    def value_and_grads(loss):
        policy, reference = records(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
        losses = loss(policy, reference).losses
        return (losses.detach(), *torch.autograd.grad(losses.sum(), [policy_chosen, policy_rejected]))

    for minor, dpo in zip(value_and_grads(MinorDPO(beta=0.3)), value_and_grads(DPO(beta=0.3)), strict=True):
        assert_close(minor, dpo)


def test_arguments_are_validated():
    with pytest.raises(ValueError, match="beta"):
        MinorDPO(beta=0.0)


def test_builds_through_the_registry():
    loss = build("minor_dpo", beta=0.2)
    assert isinstance(loss, MinorDPO) and loss.beta == 0.2 and loss.requires_reference
