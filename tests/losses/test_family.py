"""Every loss of the wider family through the registry: declarations, h = 0, h = 5, huge margins and gradients."""

import math

import pytest
import torch

from lightpref.losses import LogProbs, build, loss_class
from lightpref.losses.dpo import DPO
from lightpref.losses.sft import SFT

# name → (requires_reference, length_normalized, value at pc = pr = rc = rr = −1 with defaults)
# h = 0 values: σ(0) = ½ everywhere. hinge 1; robust/aot/aot_pair/ln_dpo/fdpo_* log 2; exo_pair (ε = 1e-3)
# ½(−log 2 − log 0.999) + ½(−log 2 − log 0.001) = −log 2 − ½(log 0.999 + log 0.001) = 2.761243; nca_pair 2 log 2;
# bco_pair (eval, δ = 0) 2 log 2; sppo_hard (β = 0.1) 5² + 5² = 50; apo_zero, apo_down ½ + ½ = 1;
# discopop ½·log 2 + ½·1 = 0.846574; sft −(−1) = 1; simpo softplus(γ) = softplus(1) = 1.313262;
# cpo softplus(0) + 1 = 1.693147; orpo 1 − 0.1·logσ(0) = 1 + 0.1·log 2 = 1.069315; rpo log 2 + 1; wpo(dpo) w·log 2
# with ā = −1 − log collision = −1 + 1 = 0 → w = 1.
FAMILY = {
    "hinge": (True, False, 1.0),
    "robust": (True, False, math.log(2)),
    "exo_pair": (True, False, -math.log(2) - 0.5 * (math.log(0.999) + math.log(0.001))),
    "nca_pair": (True, False, 2 * math.log(2)),
    "bco_pair": (True, False, 2 * math.log(2)),
    "sppo_hard": (True, False, 50.0),
    "aot": (True, False, math.log(2)),
    "aot_pair": (True, False, math.log(2)),
    "apo_zero": (True, False, 1.0),
    "apo_down": (True, False, 1.0),
    "discopop": (True, False, 0.5 * math.log(2) + 0.5),
    "ln_dpo": (True, True, math.log(2)),
    "sft": (False, True, 1.0),
    "wpo": (True, False, math.log(2)),
    "fdpo_forward_kl": (True, False, math.log(2)),
    "fdpo_js": (True, False, math.log(2)),
    "fdpo_alpha": (True, False, math.log(2)),
    "simpo": (False, True, math.log1p(math.e)),
    "cpo": (False, False, math.log(2) + 1),
    "orpo": (False, True, 1 + 0.1 * math.log(2)),
    "rpo": (True, False, math.log(2) + 1),
}


def record(chosen, rejected, requires_grad=False):
    """One token per completion, so sums and token means coincide; collision log Σπ² = −1 per token."""
    chosen = torch.tensor([[chosen]], requires_grad=requires_grad)
    rejected = torch.tensor([[rejected]])
    mask = torch.ones(1, 1, dtype=torch.bool)
    collision = torch.full((1, 1), -1.0)
    built = LogProbs.from_tokens(chosen, rejected, mask, mask, chosen_log_collision=collision,
                                 rejected_log_collision=collision)
    return built, chosen


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_declarations_and_equal_log_probs(name):
    requires_reference, length_normalized, expected = FAMILY[name]
    loss = build(name).eval()
    assert loss_class(name).one_line_summary()
    assert loss.requires_reference is requires_reference and loss.length_normalized is length_normalized
    policy, _ = record(-1.0, -1.0)
    reference = record(-1.0, -1.0)[0] if requires_reference else None
    output = loss(policy, reference)
    assert output.losses.shape == (1,) and output.chosen_rewards.shape == (1,)
    assert output.losses.item() == pytest.approx(expected, rel=1e-5)


def sp(x):
    """softplus(x) = log(1 + eˣ) = −logσ(−x)."""
    return math.log1p(math.exp(x))


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


# name → value at pc = −1, pr = −6, rc = rr = −1 with defaults: ρc = 0, ρr = −5, h = ρc − ρr = 5, and with β = 0.1
# z = β·h = 0.5, β·ρc = 0, β·ρr = −0.5 (one token per completion, so sums and token means coincide).
# hinge 1 − z; robust/aot/aot_pair/ln_dpo −logσ(z) = sp(−z); exo_pair σ(z)(logσ(z) − log 0.999) +
# σ(−z)(logσ(−z) − log 0.001); nca_pair −logσ(0) − ½logσ(−0) − ½logσ(0.5) = 1.5·log 2 + ½sp(−0.5);
# bco_pair (eval, δ = 0) −logσ(0) − logσ(0.5); sppo_hard (ρc − 5)² + (ρr + 5)² = 25; apo_zero σ(−0) + σ(−0.5);
# apo_down σ(0) + σ(−0.5 − 0); discopop (τ = 0.05) σ(−z/τ)·sp(−z) + e^(−z)·σ(z/τ); sft −pc = 1;
# wpo(dpo) w·sp(−z), w = exp((pc + 1) + (pr + 1)) = e⁻⁵; fdpo_forward_kl (α = 1) margin e^(−ρr) − e^(−ρc) = e⁵ − 1;
# fdpo_alpha (α = ½) (e^(−ρr/2) − e^(−ρc/2))/½ = 2(e^2.5 − 1); fdpo_js logσ(ρc) − logσ(ρr) = −log 2 + sp(5), each
# as sp(−β·margin); simpo (β = 2, γ = 1) sp(−(2·(−1) − 2·(−6) − 1)) = sp(−9); cpo sp(−β(pc − pr)) + 1 = sp(−z) + 1;
# orpo −pc + β·sp(−odds), odds = (pc − pr) − log(1 − e^pc) + log(1 − e^pr); rpo sp(−z) + 1.
ODDS = 5 - math.log(1 - math.exp(-1)) + math.log(1 - math.exp(-6))
AT_MARGIN = {
    "hinge": 0.5,
    "robust": sp(-0.5),
    "exo_pair": sigmoid(0.5) * (-sp(-0.5) - math.log(0.999)) + sigmoid(-0.5) * (-sp(0.5) - math.log(0.001)),
    "nca_pair": 1.5 * math.log(2) + 0.5 * sp(-0.5),
    "bco_pair": math.log(2) + sp(-0.5),
    "sppo_hard": 25.0,
    "aot": sp(-0.5),
    "aot_pair": sp(-0.5),
    "apo_zero": 0.5 + sigmoid(-0.5),
    "apo_down": 0.5 + sigmoid(-0.5),
    "discopop": sigmoid(-10) * sp(-0.5) + math.exp(-0.5) * sigmoid(10),
    "ln_dpo": sp(-0.5),
    "sft": 1.0,
    "wpo": math.exp(-5) * sp(-0.5),
    "fdpo_forward_kl": sp(-0.1 * (math.exp(5) - 1)),
    "fdpo_js": sp(-0.1 * (-math.log(2) + sp(5))),
    "fdpo_alpha": sp(-0.1 * 2 * (math.exp(2.5) - 1)),
    "simpo": sp(-9),
    "cpo": sp(-0.5) + 1,
    "orpo": 1 + 0.1 * sp(-ODDS),
    "rpo": sp(-0.5) + 1,
}


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_values_at_a_non_zero_margin(name):
    """Every loss of the family away from h = 0, where the terms that vanish at h = 0 count (see AT_MARGIN)."""
    assert set(AT_MARGIN) == set(FAMILY)
    loss = build(name).eval()
    policy, _ = record(-1.0, -6.0)
    reference = record(-1.0, -1.0)[0] if loss.requires_reference else None
    assert loss(policy, reference).losses.item() == pytest.approx(AT_MARGIN[name], rel=1e-5)


@pytest.mark.parametrize("name", sorted(FAMILY))
@pytest.mark.parametrize("margin", [1e4, -1e4])
def test_huge_margins_give_finite_values_and_gradients(name, margin):
    """h = ±1e4 (policy log-probs −1 and −10001 against a reference at −1, −1), in training mode."""
    loss = build(name).train()
    chosen, rejected = (-1.0, -1.0 - margin) if margin > 0 else (-1.0 + margin, -1.0)
    policy, leaf = record(chosen, rejected, requires_grad=True)
    reference = record(-1.0, -1.0)[0] if loss.requires_reference else None
    losses = loss(policy, reference).losses
    assert torch.isfinite(losses).all()
    losses.sum().backward()
    assert torch.isfinite(leaf.grad).all()


def test_wpo_and_mixture_take_their_parts_by_argument():
    assert isinstance(build("wpo", loss=SFT()).loss, SFT)
    mixture = build("mixture", losses=[DPO(), SFT()], weights=[1.0, 0.5])
    assert mixture.requires_reference and mixture.names == ["dpo", "sft"]
