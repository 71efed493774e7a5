"""AOT (paired) and AOT-pair (unpaired): batch sorting, values and gradient routing derived by hand."""

import math

import pytest
import torch
from torch.testing import assert_close

from lightpref.losses import LogProbs, build
from lightpref.losses.aot import AOT, AOTPair


def softplus(x):
    return math.log1p(math.exp(x))


# Policy margins pc − pr = [3, −1, 1]; reference margins rc − rr = [0, 2, −3].
# Log-ratios ρc = pc − rc = [−1, −4, 0], ρr = pr − rr = [−4, −1, −4].
POLICY = LogProbs.from_sums(torch.tensor([-2.0, -6.0, -3.0]), torch.tensor([-5.0, -5.0, -4.0]))
REFERENCE = LogProbs.from_sums(torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([-1.0, -4.0, 0.0]))


def test_aot_golden():
    """Paired: sort([3, −1, 1]) = [−1, 1, 3], sort([0, 2, −3]) = [−3, 0, 2], δ = [2, 1, 1].
    β = 1, ε = 0: L = softplus(−δ) = [0.126928, 0.313262, 0.313262]
    (DPO pairs h = [3, −3, 4] instead). Rewards stay per pair: β·ρc = [−1, −4, 0].
    """
    output = build("aot", beta=1.0)(POLICY, REFERENCE)
    assert_close(output.losses, torch.tensor([softplus(-2), softplus(-1), softplus(-1)]))
    assert_close(output.chosen_rewards, torch.tensor([-1.0, -4.0, 0.0]))
    assert_close(output.rejected_rewards, torch.tensor([-4.0, -1.0, -4.0]))


def test_aot_pair_golden():
    """Unpaired: sort(ρc) = [−4, −1, 0], sort(ρr) = [−4, −4, −1], δ = [0, 3, 1].
    β = 1, ε = 0.1: L = 0.9·softplus(−δ) + 0.1·softplus(δ):
    δ = 0: log 2 = 0.693147;  δ = 3: 0.9·0.048587 + 0.1·3.048587 = 0.348587;
    δ = 1: 0.9·0.313262 + 0.1·1.313262 = 0.413262.
    """
    output = build("aot_pair", beta=1.0, label_smoothing=0.1)(POLICY, REFERENCE)
    assert_close(output.losses, torch.tensor([0.693147, 0.348587, 0.413262]), atol=1e-6, rtol=0)


def test_gradient_follows_the_sort():
    """Paired, β = 1: pc of pair i gets −σ(−δ_k) where k is the rank of its margin: pair 0 (margin 3) is rank 2
    (δ = 1), pair 1 (margin −1) rank 0 (δ = 2), pair 2 (margin 1) rank 1 (δ = 1):
    dL/dpc = −[σ(−1), σ(−2), σ(−1)] = −[0.268941, 0.119203, 0.268941].
    """
    chosen = POLICY.chosen.clone().requires_grad_()
    AOT(beta=1.0)(LogProbs.from_sums(chosen, POLICY.rejected), REFERENCE).losses.sum().backward()
    assert_close(chosen.grad, -torch.sigmoid(torch.tensor([-1.0, -2.0, -1.0])))


@pytest.mark.parametrize("loss", [AOT(beta=0.5), AOTPair(beta=0.5, label_smoothing=0.2)])
def test_shuffling_the_batch_changes_nothing(loss):
    order = torch.tensor([2, 0, 1])
    shuffled = [LogProbs.from_sums(r.chosen[order], r.rejected[order]) for r in (POLICY, REFERENCE)]
    assert_close(loss(*shuffled).losses, loss(POLICY, REFERENCE).losses)


def test_equal_log_probs_and_large_margins():
    """All margins 0 → δ = 0 → log 2; ρc = [1e4, −1e4], ρr = 0, β = 0.1: sorted δ = [−1e4, 1e4] → [1000, 0]."""
    zeros = LogProbs.from_sums(torch.zeros(2), torch.zeros(2))
    assert_close(AOTPair()(zeros, zeros).losses, torch.full((2,), math.log(2)))
    policy = LogProbs.from_sums(torch.tensor([1e4, -1e4]), torch.zeros(2))
    assert_close(AOTPair(beta=0.1)(policy, zeros).losses, torch.tensor([1000.0, 0.0]))
    assert_close(AOT(beta=0.1)(policy, zeros).losses, torch.tensor([1000.0, 0.0]))


def test_arguments():
    with pytest.raises(ValueError, match="label_smoothing"):
        AOT(label_smoothing=0.6)
