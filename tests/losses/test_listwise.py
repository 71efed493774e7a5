"""Plackett–Luce DPO and InfoNCA against values derived by hand, K = 2 against DPO, and the listwise contract."""

import math

import pytest
import torch

from lightpref.losses import LogProbs, RankedLogProbs, build
from lightpref.losses.info_nca import InfoNCA
from lightpref.losses.plackett_luce import PlackettLuce


def records(policy, scores, reference=None, mask=None):
    policy = torch.tensor(policy, dtype=torch.float32, requires_grad=True)
    scores = torch.tensor(scores, dtype=torch.float32)
    reference = torch.zeros_like(policy) if reference is None else torch.tensor(reference)
    mask = None if mask is None else torch.tensor(mask)
    return policy, RankedLogProbs.from_sums(policy, scores, mask), RankedLogProbs.from_sums(reference, scores, mask)


def test_plackett_luce_by_hand():
    """β = 1, reference 0 so r = policy log-probs.

    Group 0: r = (0, 0, 0), scores (3, 2, 1): −log(1/3) − log(1/2) − log 1 = ln 6.
    Group 1: r = (ln 2, 0, 0), scores (3, 1, 2), so the order is 0, 2, 1: −log(2/4) − log(1/2) − 0 = 2 ln 2.
    Group 2: r = (0, 0, 0), scores (2, 1, 1), a tie for last: −log(1/3) − log(1/2) − log(1/2) = ln 12 (each tied
    completion's stage counts both tied ones).
    Group 3: K = 2, r = (1, 0), padded: DPO, −logσ(1) = 0.3132617.
    """
    policy, mine, reference = records(
        [[0, 0, 0], [math.log(2), 0, 0], [0, 0, 0], [1, 0, 0]],
        [[3, 2, 1], [3, 1, 2], [2, 1, 1], [1, 0, 0]],
        mask=[[True] * 3] * 3 + [[True, True, False]],
    )
    output = PlackettLuce(beta=1.0)(mine, reference)
    expected = torch.tensor([math.log(6), 2 * math.log(2), math.log(12), 0.3132617])
    torch.testing.assert_close(output.losses, expected, atol=1e-6, rtol=1e-6)
    assert output.chosen_rewards.tolist() == pytest.approx([0.0, math.log(2), 0.0, 1.0])
    assert output.rejected_rewards.tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0])
    output.losses.sum().backward()
    assert torch.isfinite(policy.grad).all() and policy.grad[3, 2] == 0  # padding gets no gradient
    # group 0, first completion: ∂/∂r₀ of −r₀ + log Σ e^r = −1 + 1/3
    assert policy.grad[0, 0].item() == pytest.approx(-2 / 3)


def test_plackett_luce_for_two_is_dpo():
    generator = torch.Generator().manual_seed(0)
    chosen, rejected, ref_chosen, ref_rejected = torch.randn(4, 5, generator=generator)
    dpo = build("dpo", beta=0.3)(LogProbs.from_sums(chosen, rejected), LogProbs.from_sums(ref_chosen, ref_rejected))
    scores = torch.tensor([[1.0, 0.0]]).expand(5, 2)
    listwise = PlackettLuce(beta=0.3)(RankedLogProbs.from_sums(torch.stack([chosen, rejected], 1), scores),
                                      RankedLogProbs.from_sums(torch.stack([ref_chosen, ref_rejected], 1), scores))
    torch.testing.assert_close(listwise.losses, dpo.losses)
    torch.testing.assert_close(listwise.chosen_rewards, dpo.chosen_rewards)


def test_info_nca_by_hand():
    """β = 1, reference 0.

    Group 0: scores (ln 3, 0), α = 1: targets (3/4, 1/4); r = (0, 0): predictions (1/2, 1/2); L = ln 2.
    Group 1: scores (ln 2, 0, 0): targets (1/2, 1/4, 1/4); r = (ln 2, 0, 0): predictions (1/2, 1/4, 1/4);
    L = −(½ ln ½ + 2·¼ ln ¼) = 1.5 ln 2 (the targets' entropy: the minimum).
    Gradient ∂L/∂r_k = q_k − p_k: group 0, (1/2 − 3/4, 1/2 − 1/4) = (−1/4, 1/4); group 1: 0.
    """
    policy, mine, reference = records([[0, 0, 0], [math.log(2), 0, 0]], [[math.log(3), 0, 0], [math.log(2), 0, 0]],
                                      mask=[[True, True, False], [True, True, True]])
    output = InfoNCA(beta=1.0, alpha=1.0)(mine, reference)
    torch.testing.assert_close(output.losses, torch.tensor([math.log(2), 1.5 * math.log(2)]))
    output.losses.sum().backward()
    torch.testing.assert_close(policy.grad, torch.tensor([[-0.25, 0.25, 0.0], [0.0, 0.0, 0.0]]))


def test_info_nca_alpha_sharpens_the_targets():
    """α = 0.5 on scores (ln 3, 0): targets softmax(2 ln 3, 0) = (9/10, 1/10); r = (ln 3, 0), predictions (3/4, 1/4):
    L = −(0.9 ln 0.75 + 0.1 ln 0.25) = 0.2589139 + 0.1386294 = 0.3975433."""
    _, mine, reference = records([[math.log(3), 0]], [[math.log(3), 0]])
    output = InfoNCA(beta=1.0, alpha=0.5)(mine, reference)
    assert output.losses.item() == pytest.approx(0.3975433, abs=1e-6)


@pytest.mark.parametrize("loss", [PlackettLuce, InfoNCA])
def test_listwise_losses_declare_ranked_and_validate_arguments(loss):
    assert loss.consumes == "ranked"
    with pytest.raises(ValueError, match="beta"):
        loss(beta=0)
    with pytest.raises(ValueError, match="alpha"):
        InfoNCA(alpha=-1.0)


def test_a_mixture_or_wpo_of_a_listwise_loss_is_refused():
    with pytest.raises(ValueError, match="consumes 'ranked'.*pairwise losses only"):
        build("mixture", losses=[PlackettLuce(), build("dpo")], weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="WPO weights pairs"):
        build("wpo", loss=InfoNCA())
