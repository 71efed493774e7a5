"""Length-normalised DPO: DPO on token means, through the same record path the module uses."""

import math

import pytest
import torch

from lightpref.losses import LogProbs, build
from lightpref.losses.dpo import DPO
from lightpref.losses.ln_dpo import LengthNormalizedDPO


def test_defaults_to_token_means():
    loss = build("ln_dpo")
    assert isinstance(loss, LengthNormalizedDPO) and isinstance(loss, DPO)
    assert loss.length_normalized is True and loss.requires_reference
    assert build("ln_dpo", length_normalized=False).length_normalized is False


def test_golden_on_token_means():
    """Chosen: 2 tokens, policy [−1, −3] (mean −2), reference [−2, −4] (mean −3): ρ̄c = 1.
    Rejected: 4 tokens, policy [−1, −1, −1, −1] (mean −1), reference [−1, −1, −1, 1] (mean −0.5): ρ̄r = −0.5.
    β = 1: L = −logσ(1.5) = log(1 + e^−1.5) = 0.201413 (on sums, h = 2 − (−2) = 4 would give 0.018150).
    """
    loss = LengthNormalizedDPO(beta=1.0)
    mask = torch.tensor([[True, True, False, False]]), torch.tensor([[True, True, True, True]])

    def record(chosen, rejected):
        return LogProbs.from_tokens(torch.tensor([chosen]), torch.tensor([rejected]), *mask, length_normalized=True)

    policy = record([-1.0, -3.0, 0.0, 0.0], [-1.0, -1.0, -1.0, -1.0])
    reference = record([-2.0, -4.0, 0.0, 0.0], [-1.0, -1.0, -1.0, 1.0])
    output = loss(policy, reference)
    assert output.losses.item() == pytest.approx(math.log1p(math.exp(-1.5)), rel=1e-6)
    assert output.chosen_rewards.item() == pytest.approx(1.0)


def test_label_smoothing_bounds():
    with pytest.raises(ValueError, match="label_smoothing"):
        LengthNormalizedDPO(label_smoothing=0.7)
