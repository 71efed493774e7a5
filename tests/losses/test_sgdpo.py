import io

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from lightpref.losses import LogProbs, build
from lightpref.losses.dpo import DPO
from lightpref.losses.sgdpo import SGDPO, sample_positions

# Two pairs, three token slots. Pair 0: y⁺ has 3 tokens, y⁻ 2 (+1 padding); pair 1: 3 and 3.
CHOSEN_MASK = torch.tensor([[True, True, True], [True, True, True]])
REJECTED_MASK = torch.tensor([[True, True, False], [True, True, True]])
POLICY_CHOSEN = torch.tensor([[-1.0, -2.0, -1.0], [-1.0, -1.0, -1.0]])
POLICY_REJECTED = torch.tensor([[-2.0, -3.0, 0.0], [-1.0, -1.0, -1.0]])
REFERENCE_CHOSEN = torch.tensor([[-1.5, -1.5, -2.0], [-1.0, -1.0, -1.0]])
REFERENCE_REJECTED = torch.tensor([[-1.0, -2.0, 0.0], [-1.0, -1.0, -1.0]])
CHOSEN_SUBSET = torch.tensor([[False, False, True], [True, False, False]])  # S₁
REJECTED_SUBSET = torch.tensor([[True, False, False], [False, True, False]])  # S₂


def records(policy_chosen=POLICY_CHOSEN, policy_rejected=POLICY_REJECTED):
    policy = LogProbs.from_tokens(policy_chosen, policy_rejected, CHOSEN_MASK, REJECTED_MASK)
    reference = LogProbs.from_tokens(REFERENCE_CHOSEN, REFERENCE_REJECTED, CHOSEN_MASK, REJECTED_MASK)
    return policy, reference


def test_golden_values_with_fixed_subsets():
    """β = 0.5, fixed S₁ = {2}, {0} and S₂ = {0}, {1} (what k₁ = k₂ = 1 would draw; see ``test_subset_sizes``).

    Pair 0: per-token log-ratios of y⁺ are [0.5, −0.5, 1], so ρc = 1 and Y₁ = 1 (position 2); of y⁻ [−1, −1], so
    ρr = −2 and Y₂ = −1 (position 0). z₁ = ρc − Y₂ = 2, z₂ = Y₁ − ρr = 3; β·z₁ = 1, β·z₂ = 1.5.
    Pair 1: policy = reference, every log-ratio and pilot is 0, so β·z₁ = β·z₂ = 0.

    With f(z) = −(1−ε)logσ(z) − ε·logσ(−z) = softplus(−z) + ε·z (since softplus(z) = softplus(−z) + z):

    - ε = 0:   pair 0: ½·softplus(−1) + ½·softplus(−1.5) = ½·0.313262 + ½·0.201413 = 0.257337; pair 1: log 2 = 0.693147
    - ε = 0.1: pair 0: ½·(0.313262 + 0.1) + ½·(0.201413 + 0.15) = 0.382337; pair 1: f(0) = log 2 again.
    """
    policy, reference = records()
    out = SGDPO(beta=0.5).pilot_losses(policy, reference, CHOSEN_SUBSET, REJECTED_SUBSET)
    assert_close(out.losses, torch.tensor([0.257337, 0.693147]), atol=1e-6, rtol=0)
    assert_close(out.metrics["sgdpo/pilot_chosen"], torch.tensor([1.0, 0.0]))
    assert_close(out.metrics["sgdpo/pilot_rejected"], torch.tensor([-1.0, 0.0]))
    assert_close(out.metrics["sgdpo/logits_chosen"], torch.tensor([1.0, 0.0]))
    assert_close(out.metrics["sgdpo/logits_rejected"], torch.tensor([1.5, 0.0]))
    assert_close(out.chosen_rewards, torch.tensor([0.5, 0.0]))
    assert_close(out.rejected_rewards, torch.tensor([-1.0, 0.0]))
    smoothed = SGDPO(beta=0.5, label_smoothing=0.1).pilot_losses(policy, reference, CHOSEN_SUBSET, REJECTED_SUBSET)
    assert_close(smoothed.losses, torch.tensor([0.382337, 0.693147]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_gradients_flow_only_through_summed_log_probs_with_separate_weights(label_smoothing):
    """Per-token policy log-probs are leaves; the summed pc, pr are built from them, the pilots from them detached.

    f′(z) = ε − σ(−z), so d L/d pc = ½·β·(ε − σ(−β·z₁)) and d L/d pr = −½·β·(ε − σ(−β·z₂)). Each completion
    token's log-prob enters pc (or pr) with weight 1, so every token of y⁺ gets exactly d L/d pc, whether it is in
    S₁ or not (a pilot that leaked gradient would add ½·β·f′(β·z₂) on the S₁ tokens), and padding gets 0.

    Golden values (β = 0.5, ε = 0), σ(−1) = 0.268941, σ(−1.5) = 0.182426, σ(0) = 0.5:
    d L/d pc = [−0.25·0.268941, −0.25·0.5] = [−0.067235, −0.125]; d L/d pr = [0.25·0.182426, 0.125] =
    [0.045606, 0.125]. With ε = 0.1 add ½·β·ε = 0.025 to d L/d pc and subtract it from d L/d pr.
    """
    policy_chosen = POLICY_CHOSEN.clone().requires_grad_()
    policy_rejected = POLICY_REJECTED.clone().requires_grad_()
    out = SGDPO(beta=0.5, label_smoothing=label_smoothing).pilot_losses(
        *records(policy_chosen, policy_rejected), CHOSEN_SUBSET, REJECTED_SUBSET
    )
    out.losses.sum().backward()
    shift = 0.5 * 0.5 * label_smoothing
    chosen_grad = torch.tensor([-0.067235, -0.125]) + shift
    rejected_grad = torch.tensor([0.045606, 0.125]) - shift
    assert_close(policy_chosen.grad, chosen_grad[:, None] * CHOSEN_MASK, atol=1e-6, rtol=0)
    assert_close(policy_rejected.grad, rejected_grad[:, None] * REJECTED_MASK, atol=1e-6, rtol=0)


def chosen_and_rejected_grads(policy_chosen, policy_rejected):
    policy_chosen, policy_rejected = policy_chosen.clone().requires_grad_(), policy_rejected.clone().requires_grad_()
    policy, reference = records(policy_chosen, policy_rejected)
    SGDPO(beta=0.5).pilot_losses(policy, reference, CHOSEN_SUBSET, REJECTED_SUBSET).losses.sum().backward()
    return policy_chosen.grad[0, 0], policy_rejected.grad[0, 0]  # d L/d pc, d L/d pr of pair 0


def test_raising_the_rejected_pilot_raises_the_chosen_update():
    """Move 0.5 of log-prob within y⁻ of pair 0 onto its S₂ token: ρr stays −2, Y₂ rises −1 → −0.5, z₁ falls 2 → 1.5.

    |d L/d pc| = ½·β·σ(−β·z₁) grows from 0.25·σ(−1) = 0.067235 to 0.25·σ(−0.75) = 0.25·0.320821 = 0.080205; the
    rejected update does not depend on Y₂ and stays 0.045606.
    """
    chosen_before, rejected_before = chosen_and_rejected_grads(POLICY_CHOSEN, POLICY_REJECTED)
    shifted = POLICY_REJECTED + torch.tensor([[0.5, -0.5, 0.0], [0.0, 0.0, 0.0]])
    chosen_after, rejected_after = chosen_and_rejected_grads(POLICY_CHOSEN, shifted)
    assert_close(chosen_before, torch.tensor(-0.067235), atol=1e-6, rtol=0)
    assert_close(chosen_after, torch.tensor(-0.080205), atol=1e-6, rtol=0)
    assert_close(rejected_after, rejected_before)


def test_raising_the_chosen_pilot_shrinks_the_rejected_update():
    """Move 0.5 of log-prob within y⁺ of pair 0 onto its S₁ token: ρc stays 1, Y₁ rises 1 → 1.5, z₂ rises 3 → 3.5.

    |d L/d pr| = ½·β·σ(−β·z₂) shrinks from 0.25·σ(−1.5) = 0.045606 to 0.25·σ(−1.75) = 0.25·0.148047 = 0.037012; the
    chosen update does not depend on Y₁ and stays −0.067235.
    """
    chosen_before, rejected_before = chosen_and_rejected_grads(POLICY_CHOSEN, POLICY_REJECTED)
    shifted = POLICY_CHOSEN + torch.tensor([[-0.5, 0.0, 0.5], [0.0, 0.0, 0.0]])
    chosen_after, rejected_after = chosen_and_rejected_grads(shifted, POLICY_REJECTED)
    assert_close(rejected_before, torch.tensor(0.045606), atol=1e-6, rtol=0)
    assert_close(rejected_after, torch.tensor(0.037012), atol=1e-6, rtol=0)
    assert_close(chosen_after, chosen_before)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_full_ratios_on_equal_lengths_give_dpo_value_and_half_its_gradient(label_smoothing):
    """r₁ = r₂ = 1 and n⁺ = n⁻: k₁ = k₂ = m = n, so S₁, S₂ are the whole completions whatever is drawn.

    Then Y₁ = ⊥ρc and Y₂ = ⊥ρr, so z₁ = ρc − ⊥ρr and z₂ = ⊥ρc − ρr both equal h in value, and
    L = ½·f(β·h) + ½·f(β·h) = f(β·h) = −(1−ε)·logσ(β·h) − ε·logσ(−β·h), DPO's value. But pc appears only in z₁
    (its copy in z₂ is detached), so d L/d pc = ½·β·f′(β·h) = ½·β·(ε − σ(−β·h)), and likewise
    d L/d pr = −½·β·(ε − σ(−β·h)): exactly half of DPO's gradient, β·(ε − σ(−β·h)) and its negative.
    """
    generator = torch.Generator().manual_seed(0)
    lengths = torch.tensor([4, 3, 2])  # equal for y⁺ and y⁻ in each pair, different across pairs
    mask = torch.arange(4) < lengths[:, None]  # (3, 4)
    policy_chosen = (-3 * torch.rand(3, 4, generator=generator) * mask).requires_grad_()
    policy_rejected = (-3 * torch.rand(3, 4, generator=generator) * mask).requires_grad_()
    reference_chosen, reference_rejected = -3 * torch.rand(2, 3, 4, generator=generator) * mask

    def run(loss):
        policy = LogProbs.from_tokens(policy_chosen, policy_rejected, mask, mask)
        reference = LogProbs.from_tokens(reference_chosen, reference_rejected, mask, mask)
        out = loss(policy, reference)
        return out, torch.autograd.grad(out.losses.sum(), [policy_chosen, policy_rejected])

    sgdpo, (sgdpo_chosen_grad, sgdpo_rejected_grad) = run(
        SGDPO(beta=0.5, chosen_ratio=1.0, rejected_ratio=1.0, label_smoothing=label_smoothing, seed=3)
    )
    dpo, (dpo_chosen_grad, dpo_rejected_grad) = run(DPO(beta=0.5, label_smoothing=label_smoothing))
    chosen_ratio = ((policy_chosen - reference_chosen) * mask).sum(-1).detach()
    rejected_ratio = ((policy_rejected - reference_rejected) * mask).sum(-1).detach()
    assert_close(sgdpo.metrics["sgdpo/pilot_chosen"], chosen_ratio)
    assert_close(sgdpo.metrics["sgdpo/pilot_rejected"], rejected_ratio)
    assert_close(sgdpo.metrics["sgdpo/logits_chosen"], 0.5 * (chosen_ratio - rejected_ratio))
    assert_close(sgdpo.metrics["sgdpo/logits_rejected"], 0.5 * (chosen_ratio - rejected_ratio))
    assert_close(sgdpo.losses, dpo.losses)
    assert_close(sgdpo_chosen_grad, 0.5 * dpo_chosen_grad)
    assert_close(sgdpo_rejected_grad, 0.5 * dpo_rejected_grad)
    weight = 0.5 * 0.5 * (label_smoothing - torch.sigmoid(-0.5 * (chosen_ratio - rejected_ratio)))
    assert_close(sgdpo_chosen_grad, weight[:, None] * mask)  # the closed form


def test_subset_sizes():
    """k = max(⌊m·r⌋, 1) with m = min(n⁺, n⁻).

    n⁺ = [5, 3, 1, 10, 100], n⁻ = [3, 7, 4, 10, 100] → m = [3, 3, 1, 10, 100].
    r₁ = 0.6: ⌊1.8⌋ = 1, 1, ⌊0.6⌋ = 0 → 1, 6, 60. r₂ = 0.9: ⌊2.7⌋ = 2, 2, 0 → 1, 9, 90.
    r = 0.29, m = 100: 29 exactly (in floats 100·0.29 = 28.999…, which would floor to 28).
    """
    chosen_mask = torch.arange(100) < torch.tensor([5, 3, 1, 10, 100])[:, None]
    rejected_mask = torch.arange(100) < torch.tensor([3, 7, 4, 10, 100])[:, None]
    chosen_counts, rejected_counts = SGDPO().subset_sizes(chosen_mask, rejected_mask)
    assert chosen_counts.tolist() == [1, 1, 1, 6, 60]
    assert rejected_counts.tolist() == [2, 2, 1, 9, 90]
    assert SGDPO(chosen_ratio=0.29).subset_sizes(chosen_mask, rejected_mask)[0][-1] == 29


def test_sample_positions_draws_exactly_k_distinct_positions_inside_the_mask():
    mask = torch.tensor(
        [
            [True, True, True, True, True, False],
            [False, False, True, True, True, True],  # left padding
            [True, False, True, False, True, False],  # not contiguous
            [True, False, False, False, False, False],
        ]
    )
    counts = torch.tensor([3, 4, 2, 1])
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        subset = sample_positions(mask, counts, generator)
        assert subset.dtype == torch.bool and subset.shape == mask.shape
        assert subset.sum(-1).tolist() == counts.tolist()  # a bool mask cannot repeat a position: k distinct ones
        assert not (subset & ~mask).any()


def test_sample_positions_is_uniform_and_independent_across_rows():
    """4000 rows of 5 valid tokens, k = 2: each token is drawn with probability 2/5 (std of the frequency ≈ 0.008)."""
    mask = (torch.arange(7) < 5).expand(4000, 7)
    subset = sample_positions(mask, torch.full((4000,), 2), torch.Generator().manual_seed(0))
    frequency = subset.float().mean(0)
    assert_close(frequency[:5], torch.full((5,), 0.4), atol=0.04, rtol=0)
    assert (frequency[5:] == 0).all()
    assert len({tuple(row.tolist()) for row in subset}) == 10  # all C(5, 2) subsets occur across rows


def random_token_records(seed=0, batch=4, length=20):
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, length, dtype=torch.bool)
    tokens = -torch.rand(4, batch, length, generator=generator)
    policy = LogProbs.from_tokens(tokens[0], tokens[1], mask, mask)
    reference = LogProbs.from_tokens(tokens[2], tokens[3], mask, mask)
    return policy, reference


def pilots(loss, policy, reference):
    out = loss(policy, reference)
    return torch.stack([out.metrics["sgdpo/pilot_chosen"], out.metrics["sgdpo/pilot_rejected"]])


def test_draws_are_fresh_at_every_call_and_reproducible_from_the_seed():
    policy, reference = random_token_records()
    loss = SGDPO(seed=7)
    first, second = pilots(loss, policy, reference), pilots(loss, policy, reference)
    assert not torch.equal(first, second)
    again = SGDPO(seed=7)
    assert torch.equal(pilots(again, policy, reference), first)
    assert torch.equal(pilots(again, policy, reference), second)
    assert not torch.equal(pilots(SGDPO(seed=8), policy, reference), first)


def test_without_a_seed_the_sampler_takes_the_runs_seed_at_the_first_call():
    policy, reference = random_token_records()
    unseeded = SGDPO()
    with torch.random.fork_rng():  # leave the global seed as other tests expect it
        torch.manual_seed(11)  # what Lightning's seed_everything(11) does to torch.initial_seed()
        assert torch.equal(pilots(unseeded, policy, reference), pilots(SGDPO(seed=11), policy, reference))


def test_generator_state_round_trips_through_the_state_dict():
    """A resumed run continues the same draws: save after one step, load into a fresh loss, compare the next draws."""
    policy, reference = random_token_records()
    loss = SGDPO(seed=7)
    pilots(loss, policy, reference)
    buffer = io.BytesIO()
    torch.save(nn.ModuleDict({"loss": loss}).state_dict(), buffer)  # as a submodule of the LightningModule
    buffer.seek(0)
    resumed = nn.ModuleDict({"loss": SGDPO(seed=123)})
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(pilots(resumed["loss"], policy, reference), pilots(loss, policy, reference))
    assert torch.equal(pilots(resumed["loss"], policy, reference), pilots(loss, policy, reference))


def test_a_state_saved_before_the_first_draw_keeps_the_lazy_seed():
    policy, reference = random_token_records()
    state = SGDPO().state_dict()
    restored = SGDPO()
    restored.load_state_dict(state)
    with torch.random.fork_rng():
        torch.manual_seed(5)
        assert torch.equal(pilots(restored, policy, reference), pilots(SGDPO(seed=5), policy, reference))


@pytest.mark.parametrize("name", ["chosen_ratio", "rejected_ratio"])
@pytest.mark.parametrize("value", [0.0, -0.1, 1.5, True])
def test_ratios_must_be_in_the_unit_interval(name, value):
    with pytest.raises(ValueError, match=rf"`{name}` must be in \(0, 1\]"):
        SGDPO(**{name: value})


def test_other_arguments_are_validated():
    with pytest.raises(ValueError, match="label_smoothing"):
        SGDPO(label_smoothing=0.6)
    with pytest.raises(ValueError, match="beta"):
        SGDPO(beta=-1.0)
    with pytest.raises(TypeError, match="seed"):
        SGDPO(seed="1")


def test_records_without_per_token_log_probs_are_refused():
    sums = LogProbs.from_sums(chosen=torch.tensor([-1.0]), rejected=torch.tensor([-2.0]))
    with pytest.raises(ValueError, match="needs_token_logps"):
        SGDPO()(sums, sums)


def test_builds_through_the_registry():
    loss = build("sgdpo", beta=0.1)
    assert isinstance(loss, SGDPO) and loss.needs_token_logps and loss.requires_reference
    assert (loss.chosen_ratio, loss.rejected_ratio, loss.label_smoothing, loss.seed) == (0.6, 0.9, 0.0, None)
