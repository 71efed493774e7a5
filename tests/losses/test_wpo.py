"""WPO: the weight derived by hand, its detachment, and records reduced the way the wrapped loss asks."""

import math

import pytest
import torch
from torch.testing import assert_close

from lightpref.losses import LogProbs, build
from lightpref.losses.dpo import DPO
from lightpref.losses.simpo import SimPO
from lightpref.losses.wpo import WPO

# Pair 0: chosen tokens [−1, −2] (third is padding), collision [−1.5, −1]: ā⁺ = (0.5 − 1)/2 = −0.25;
#         rejected token [−3], collision [−2]: ā⁻ = −1; w = exp(−1.25) = 0.286505.
# Pair 1: chosen [−0.2, −0.2, −0.2], collision [−0.5] × 3: ā⁺ = 0.3; rejected [−0.1, −0.1], collision [−0.4] × 2:
#         ā⁻ = 0.3; exp(0.6) = 1.822 is clamped to w = 1.
CHOSEN = torch.tensor([[-1.0, -2.0, 0.0], [-0.2, -0.2, -0.2]])
REJECTED = torch.tensor([[-3.0, 0.0, 0.0], [-0.1, -0.1, 0.0]])
CHOSEN_MASK = torch.tensor([[True, True, False], [True, True, True]])
REJECTED_MASK = torch.tensor([[True, False, False], [True, True, False]])
CHOSEN_COLLISION = torch.tensor([[-1.5, -1.0, 0.0], [-0.5, -0.5, -0.5]])
REJECTED_COLLISION = torch.tensor([[-2.0, 0.0, 0.0], [-0.4, -0.4, 0.0]])


def policy_record(length_normalized=False, chosen=CHOSEN):
    return LogProbs.from_tokens(
        chosen, REJECTED, CHOSEN_MASK, REJECTED_MASK, length_normalized=length_normalized,
        chosen_log_collision=CHOSEN_COLLISION, rejected_log_collision=REJECTED_COLLISION,
    )


def test_golden_with_dpo():
    """Policy sums: chosen [−3, −0.6], rejected [−3, −0.2]; reference sums chosen [−4, −0.6], rejected [−2, −0.2]:
    ρc = [1, 0], ρr = [−1, 0], h = [2, 0]; DPO (β = 1) = [softplus(−2), log 2] = [0.126928, 0.693147];
    WPO = [0.286505·0.126928, 1·0.693147] = [0.036366, 0.693147]. Metric wpo/weight = [0.286505, 1].
    """
    reference = LogProbs.from_sums(torch.tensor([-4.0, -0.6]), torch.tensor([-2.0, -0.2]))
    output = build("wpo", loss=DPO(beta=1.0))(policy_record(), reference)
    assert_close(output.losses, torch.tensor([0.036366, 0.693147]), atol=1e-6, rtol=0)
    assert_close(output.metrics["wpo/weight"], torch.tensor([math.exp(-1.25), 1.0]))
    assert_close(output.chosen_rewards, torch.tensor([1.0, 0.0]))


def test_weight_is_detached():
    """Gradient reaches the chosen tokens only through the DPO term, scaled by w: β = 1, pair 0 has
    dL/dpc = −w·σ(−2) = −0.286505·0.119203 = −0.034152 per completion token, 0 on padding.
    """
    chosen = CHOSEN.clone().requires_grad_()
    reference = LogProbs.from_sums(torch.tensor([-4.0, -0.6]), torch.tensor([-2.0, -0.2]))
    WPO(DPO(beta=1.0))(policy_record(chosen=chosen), reference).losses.sum().backward()
    expected = -math.exp(-1.25) / (1 + math.exp(2))
    assert_close(chosen.grad[0], torch.tensor([expected, expected, 0.0]))


def test_takes_on_the_wrapped_loss_needs():
    dpo_wrapper, simpo_wrapper = WPO(), WPO(SimPO())
    assert isinstance(dpo_wrapper.loss, DPO) and dpo_wrapper.requires_reference and not dpo_wrapper.length_normalized
    assert not simpo_wrapper.requires_reference and simpo_wrapper.length_normalized
    assert simpo_wrapper.needs_token_logps and simpo_wrapper.needs_collision_logps


def test_wrapped_reference_free_loss_on_token_means():
    """WPO(SimPO(β = 2, γ/β = 0.5)): the module reduces to token means because the wrapper asks for them.
    Means: chosen [−1.5, −0.2], rejected [−3, −0.1]; logits 2·(p̄c − p̄r) − 1 = [2, −1.2];
    L = w·softplus(−logits) = [0.286505·0.126928, 1·1.463282] = [0.036366, 1.463282].
    """
    loss = WPO(SimPO(beta=2.0, gamma_beta_ratio=0.5))
    output = loss(policy_record(length_normalized=loss.length_normalized), None)
    assert_close(output.losses, torch.tensor([0.036366, 1.463282]), atol=1e-6, rtol=0)


def test_missing_token_fields_is_a_clear_error():
    with pytest.raises(ValueError, match="needs_collision_logps"):
        WPO()(LogProbs.from_sums(torch.zeros(1), torch.zeros(1)), LogProbs.from_sums(torch.zeros(1), torch.zeros(1)))


def test_large_adjusted_logps_are_finite():
    """ā⁺ + ā⁻ = 2e4 clamps to w = 1 (exp overflows to inf first), −2e4 underflows to w = 0; no NaN."""
    big = torch.full((1, 1), 1e4)
    mask = torch.ones(1, 1, dtype=torch.bool)
    for sign, expected in ((1.0, 1.0), (-1.0, 0.0)):
        record = LogProbs.from_tokens(sign * big, sign * big, mask, mask, chosen_log_collision=torch.zeros(1, 1),
                                      rejected_log_collision=torch.zeros(1, 1))
        assert WPO.weights(record).item() == expected


def test_rejects_a_non_loss():
    with pytest.raises(TypeError, match="PreferenceLoss"):
        WPO(loss="dpo")
