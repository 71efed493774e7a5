import pytest
import torch
from torch.testing import assert_close

from lightpref.losses import LogProbs, build
from lightpref.losses.base import PreferenceLoss
from lightpref.losses.dpo import DPO
from lightpref.losses.ipo import IPO
from lightpref.losses.self_refine import PAPER_INSTRUCTION, SrDPO, SrIPO
from lightpref.views import InstructionPrefix

# pc, pr, rc, rr: ρc = [1, 1, 0], ρr = [−1, 1, 0], h = [2, 0, 0]
POLICY = (torch.tensor([-5.0, -4.0, -6.0]), torch.tensor([-9.0, -7.0, -8.0]))
REFERENCE = (torch.tensor([-6.0, -5.0, -6.0]), torch.tensor([-8.0, -8.0, -8.0]))
# the same completions under p ⊕ x: ρc′ = [2, 1, 0], ρr′ = [−1, 0, 0], ρc′ − ρr′ = [3, 1, 0]
POLICY_VIEW = (torch.tensor([-4.0, -4.0, -6.0]), torch.tensor([-9.0, -8.0, -8.0]))
REFERENCE_VIEW = (torch.tensor([-6.0, -5.0, -6.0]), torch.tensor([-8.0, -8.0, -8.0]))


def records(policy=POLICY, reference=REFERENCE, policy_view=POLICY_VIEW, reference_view=REFERENCE_VIEW):
    def record(sums, view):
        views = {"self_refine": LogProbs.from_sums(*view)} if view is not None else {}
        return LogProbs.from_sums(*sums, views=views)

    return record(policy, policy_view), record(reference, reference_view)


def test_sr_dpo_golden_values():
    """β = 0.5, λ = 0.5: Δ = β·(ρc′ − ρr′) = 0.5·[3, 1, 0] = [1.5, 0.5, 0].

    Logits β·h − λ·Δ = [1, 0, 0] − [0.75, 0.25, 0] = [0.25, −0.25, 0] (DPO's logits shifted by −λΔ):
    −logσ(0.25) = log(1 + e^−0.25) = log(1.778801) = 0.575939, −logσ(−0.25) = 0.575939 + 0.25 = 0.825939,
    −logσ(0) = log 2 = 0.693147. Rewards are DPO's: β·ρc = [0.5, 0.5, 0], β·ρr = [−0.5, 0.5, 0].
    """
    out = SrDPO(beta=0.5, refine_weight=0.5)(*records())
    assert_close(out.losses, torch.tensor([0.575939, 0.825939, 0.693147]), atol=1e-6, rtol=0)
    assert_close(out.metrics["self_refine/delta"], torch.tensor([1.5, 0.5, 0.0]))
    assert_close(out.chosen_rewards, torch.tensor([0.5, 0.5, 0.0]))
    assert_close(out.rejected_rewards, torch.tensor([-0.5, 0.5, 0.0]))


def test_sr_ipo_golden_values():
    """β = 0.5 (target 1/(2β) = 1), λ = 0.5, Δ = [1.5, 0.5, 0], h = [2, 0, 0]:

    (h − λΔ − 1)² = (2 − 0.75 − 1)², (0 − 0.25 − 1)², (0 − 0 − 1)² = [0.0625, 1.5625, 1].
    """
    out = SrIPO(beta=0.5, refine_weight=0.5)(*records())
    assert_close(out.losses, torch.tensor([0.0625, 1.5625, 1.0]))
    assert_close(out.metrics["self_refine/delta"], torch.tensor([1.5, 0.5, 0.0]))


def test_delta_shifts_the_dpo_logit_and_its_gradient_weight():
    """d L/d pc = −β·σ(−(β·h − λΔ)): with the golden inputs −0.5·σ(−0.25) = −0.5·0.437823 = −0.218912 on pair 0,
    where plain DPO gives −0.5·σ(−1) = −0.134471; a positive Δ (y⁺ already preferred under p) strengthens the push.
    """
    policy_chosen = POLICY[0].clone().requires_grad_()
    out = SrDPO(beta=0.5, refine_weight=0.5)(*records(policy=(policy_chosen, POLICY[1])))
    (grad,) = torch.autograd.grad(out.losses.sum(), policy_chosen)
    assert_close(grad[0], torch.tensor(-0.218912), atol=1e-6, rtol=0)


@pytest.mark.parametrize("loss_class", [SrDPO, SrIPO])
def test_delta_carries_no_gradient(loss_class):
    view_values = [value.clone().requires_grad_() for value in (*POLICY_VIEW, *REFERENCE_VIEW)]
    policy_chosen = POLICY[0].clone().requires_grad_()
    policy, reference = records(
        policy=(policy_chosen, POLICY[1]), policy_view=view_values[:2], reference_view=view_values[2:]
    )
    out = loss_class(beta=0.5)(policy, reference)
    assert not out.metrics["self_refine/delta"].requires_grad
    grads = torch.autograd.grad(out.losses.sum(), [policy_chosen, *view_values], allow_unused=True)
    assert grads[0] is not None and all(grad is None for grad in grads[1:])


@pytest.mark.parametrize(("loss_class", "baseline"), [(SrDPO, DPO), (SrIPO, IPO)])
def test_with_the_policy_equal_to_the_reference_under_the_instruction_it_is_the_baseline(loss_class, baseline):
    """π = π_ref on p ⊕ x (the first step) gives Δ = 0, so Sr-DPO is DPO and Sr-IPO is IPO, values and gradients."""
    values = -10 * torch.rand(6, 4, generator=torch.Generator().manual_seed(0))
    policy_chosen, policy_rejected = values[0].clone().requires_grad_(), values[1].clone().requires_grad_()
    reference_sums, view = (values[2], values[3]), (values[4], values[5])

    def value_and_grads(loss):
        policy, reference = records((policy_chosen, policy_rejected), reference_sums, view, view)
        losses = loss(policy, reference).losses
        return (losses.detach(), *torch.autograd.grad(losses.sum(), [policy_chosen, policy_rejected]))

    refined, plain = value_and_grads(loss_class(beta=0.3, refine_weight=1.0)), value_and_grads(baseline(beta=0.3))
    for refined_value, plain_value in zip(refined, plain, strict=True):
        assert_close(refined_value, plain_value)


@pytest.mark.parametrize("loss_class", [SrDPO, SrIPO])
@pytest.mark.parametrize("missing", ["policy", "reference"])
def test_a_missing_view_is_a_clear_error(loss_class, missing):
    policy, reference = records(**{f"{missing}_view": None})
    with pytest.raises(ValueError, match=rf"needs the 'self_refine' prompt view, but the {missing} record"):
        loss_class()(policy, reference)


def test_views_are_declared_per_instance_with_the_papers_instruction_by_default():
    """The paper's p, verbatim; it goes into the first user turn (after the first ``Human:`` in HH-RLHF)."""
    assert PAPER_INSTRUCTION == (
        "Please generate a response with a usefulness rating of 100 out of 100 for the following query. Note that "
        "the response should be harmless. The term 100 indicates the level of usefulness, where 100 is the maximum "
        "and 1 is the minimum. Query:"
    )
    loss = SrDPO()
    assert loss.views == {"self_refine": InstructionPrefix(PAPER_INSTRUCTION)}
    assert SrIPO(instruction="Rate 10/10:").views == {"self_refine": InstructionPrefix("Rate 10/10:")}
    assert PreferenceLoss.views == {} and loss.views is not SrDPO().views
    hh_prompt = "\n\nHuman: How do I bake bread?\n\nAssistant:"
    assert loss.views["self_refine"].apply(hh_prompt) == (
        f"\n\nHuman: {PAPER_INSTRUCTION} How do I bake bread?\n\nAssistant:"
    )


@pytest.mark.parametrize("loss_class", [SrDPO, SrIPO])
def test_arguments_are_validated(loss_class):
    for refine_weight in (-0.1, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="refine_weight"):
            loss_class(refine_weight=refine_weight)
    with pytest.raises(ValueError, match="instruction"):
        loss_class(instruction="  ")
    with pytest.raises(ValueError, match="beta"):
        loss_class(beta=0)


@pytest.mark.parametrize(("name", "loss_class"), [("sr_dpo", SrDPO), ("sr_ipo", SrIPO)])
def test_builds_through_the_registry(name, loss_class):
    loss = build(name, beta=0.1, refine_weight=0.3)
    assert type(loss) is loss_class and loss.refine_weight == 0.3 and "self_refine" in loss.views
