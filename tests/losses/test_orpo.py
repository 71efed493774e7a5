"""ORPO: the log odds ratio and NLL derived by hand, and a stable log(1 − e^p̄) at both ends."""

import math

import pytest
import torch
from torch.testing import assert_close

from lightpref.losses import LogProbs, build
from lightpref.losses.orpo import ORPO, log1m_exp


def test_golden():
    """β (λ) = 0.1, token means p̄ = log p, odds = p/(1 − p):
    pair 0: p⁺ = 0.5 (odds 1), p⁻ = 0.2 (odds ¼): log_odds = log 4 = 1.386294, logσ(log 4) = log 0.8 = −0.223144;
            L = −log 0.5 + 0.1·0.223144 = 0.693147 + 0.022314 = 0.715461
    pair 1: swapped: log_odds = −log 4, logσ = log 0.2 = −1.609438; L = 1.609438 + 0.160944 = 1.770382
    pair 2: p⁺ = p⁻ = 0.5: log_odds = 0, L = 0.693147 + 0.1·0.693147 = 0.762462
    """
    chosen = torch.tensor([math.log(0.5), math.log(0.2), math.log(0.5)])
    rejected = torch.tensor([math.log(0.2), math.log(0.5), math.log(0.5)])
    output = build("orpo")(LogProbs.from_sums(chosen, rejected), None)
    assert_close(output.losses, torch.tensor([0.715461, 1.770382, 0.762462]), atol=1e-6, rtol=0)
    assert_close(output.metrics["orpo/log_odds_chosen"], torch.tensor([math.log(4), -math.log(4), 0.0]))
    assert_close(output.metrics["orpo/log_odds_ratio"], torch.tensor([math.log(0.8), math.log(0.2), -math.log(2)]))
    assert_close(output.metrics["orpo/nll_loss"], -chosen)
    assert_close(output.chosen_rewards, 0.1 * chosen)


def test_log1m_exp_is_stable():
    """log(1 − e^x): x = −1e-5 → log(1e-5 − 5e-11) ≈ −11.512930 (naive log1p(−exp) loses digits);
    x = −50 → −e^−50 ≈ −1.9e-22; x = −1e4 → 0; x = 0 is clamped to −1e-6 → log(1e-6) = −13.815511.
    """
    values = log1m_exp(torch.tensor([-1e-5, -50.0, -1e4, 0.0], dtype=torch.float64))
    expected = torch.tensor([math.log(-math.expm1(-1e-5)), -math.exp(-50), 0.0, math.log(-math.expm1(-1e-6))])
    assert_close(values, expected.double())


def test_extreme_token_means_are_finite():
    """p̄ = 0 (every token certain), p̄ = −1e4: loss and gradients finite."""
    chosen = torch.tensor([0.0, -1e4], requires_grad=True)
    rejected = torch.tensor([-1e4, 0.0], requires_grad=True)
    losses = ORPO()(LogProbs.from_sums(chosen, rejected), None).losses
    assert torch.isfinite(losses).all()
    losses.sum().backward()
    assert torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()


def test_declares_token_means_and_no_reference():
    loss = ORPO()
    assert loss.length_normalized and not loss.requires_reference
    with pytest.raises(ValueError, match="beta"):
        ORPO(beta=0.0)
