"""DPO and IPO: values derived by hand on small tensors."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from lightpref.losses import LogProbs, build


def records(pc, pr, rc, rr, lengths=None):
    lengths = None if lengths is None else (torch.tensor(lengths[0]), torch.tensor(lengths[1]))
    policy = LogProbs.from_sums(torch.tensor(pc), torch.tensor(pr), *(lengths or ()))
    reference = LogProbs.from_sums(torch.tensor(rc), torch.tensor(rr), *(lengths or ()))
    return policy, reference


def test_dpo_golden():
    """Pairs (pc, pr, rc, rr) and h = (pc − rc) − (pr − rr), β = 0.1:
    (−5, −9, −6, −8): h = 1 + 1 = 2,   L = −logσ(0.2)  = log(1 + e^−0.2) = 0.598139
    (−3, −3, −3, −3): h = 0,           L = log 2 = 0.693147
    (−8, −2, −4, −6): h = −4 − 4 = −8, L = log(1 + e^0.8) = 1.171183
    """
    policy, reference = records([-5.0, -3.0, -8.0], [-9.0, -3.0, -2.0], [-6.0, -3.0, -4.0], [-8.0, -3.0, -6.0])
    output = build("dpo", beta=0.1)(policy, reference)
    expected = torch.tensor([math.log1p(math.exp(-0.2)), math.log(2), math.log1p(math.exp(0.8))])
    torch.testing.assert_close(output.losses, expected)
    torch.testing.assert_close(output.chosen_rewards, torch.tensor([0.1, 0.0, -0.4]))
    torch.testing.assert_close(output.rejected_rewards, torch.tensor([-0.1, 0.0, 0.4]))


def test_dpo_label_smoothing_golden():
    """ε = 0.25, β = 0.1, h = 2: L = 0.75·log(1 + e^−0.2) + 0.25·log(1 + e^0.2) = 0.448604 + 0.199517."""
    policy, reference = records([-5.0], [-9.0], [-6.0], [-8.0])
    loss = build("dpo", beta=0.1, label_smoothing=0.25)(policy, reference).losses
    expected = 0.75 * math.log1p(math.exp(-0.2)) + 0.25 * math.log1p(math.exp(0.2))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_dpo_length_normalized_uses_token_means(tiny_checkpoint, tmp_path):
    """Through the module, length-normalised DPO is the DPO formula on token means: with a reference that differs
    from the policy, the batch loss equals mean −logσ(β·((π̄c − r̄c) − (π̄r − r̄r))) over per-token log-probs computed
    here with the plain forward (π̄ a token mean), and differs from the summed version."""
    from lightpref.data.collate import collate_pairs
    from lightpref.data.tokenize import TokenizedPair
    from lightpref.testing import save_tiny_checkpoint
    from lightpref.training.forward import completion_logprobs
    from lightpref.training.module import PreferenceModule

    reference_dir = save_tiny_checkpoint(tmp_path / "reference", seed=1)
    batch = collate_pairs([TokenizedPair([5, 6], [7, 8, 9, 10], [11]), TokenizedPair([5], [12], [13, 14, 15])], 0)
    means = []
    for directory in (tiny_checkpoint, reference_dir):
        model = AutoModelForCausalLM.from_pretrained(directory)
        tokens = completion_logprobs(model, batch.input_ids, batch.attention_mask, batch.completion_mask)
        means.append(tokens.logps.sum(-1) / tokens.mask.sum(-1))  # (2B,) token means, chosen rows first
    (policy_chosen, policy_rejected), (reference_chosen, reference_rejected) = (m.chunk(2) for m in means)
    h = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
    expected = -torch.nn.functional.logsigmoid(0.1 * h).mean()
    losses = {}
    for normalized in (True, False):
        module = PreferenceModule(str(tiny_checkpoint), loss=build("dpo", length_normalized=normalized),
                                  reference=str(reference_dir))
        module.configure_model()
        losses[normalized] = module(batch)[1]
    torch.testing.assert_close(losses[True], expected, rtol=1e-5, atol=1e-6)
    assert abs(losses[False].item() - losses[True].item()) > 1e-4


def test_dpo_large_margin_is_finite():
    """h = ±1e5: L → 0 for a huge positive margin and → β·|h| = 1e4 for a huge negative one, never inf/NaN."""
    policy, reference = records([0.0, -1e5], [-1e5, 0.0], [0.0, 0.0], [0.0, 0.0])
    losses = build("dpo", beta=0.1)(policy, reference).losses
    torch.testing.assert_close(losses, torch.tensor([0.0, 1e4]))


def test_dpo_gradient_is_sigma_weighted():
    """dL/dpc = −β·σ(−β·h) and dL/dpr = +β·σ(−β·h): for h = 2, β = 0.1, σ(−0.2) = 0.450166."""
    pc, pr = torch.tensor([-5.0], requires_grad=True), torch.tensor([-9.0], requires_grad=True)
    policy = LogProbs.from_sums(pc, pr)
    reference = LogProbs.from_sums(torch.tensor([-6.0]), torch.tensor([-8.0]))
    build("dpo", beta=0.1)(policy, reference).losses.sum().backward()
    weight = 0.1 * torch.sigmoid(torch.tensor(-0.2)).item()
    assert pc.grad.item() == pytest.approx(-weight, rel=1e-6)
    assert pr.grad.item() == pytest.approx(weight, rel=1e-6)


@pytest.mark.parametrize("bad", [-0.1, 0.6])
def test_dpo_rejects_label_smoothing_outside_bounds(bad):
    with pytest.raises(ValueError, match=r"label_smoothing.*\[0, 0.5\]"):
        build("dpo", label_smoothing=bad)


@pytest.mark.parametrize("bound", [0.0, 0.5])
def test_dpo_accepts_label_smoothing_at_bounds(bound):
    """ε = 0.5 makes the loss symmetric: L = ½·(log(1+e^−z) + log(1+e^z)) for z = 0.2."""
    policy, reference = records([-5.0], [-9.0], [-6.0], [-8.0])
    loss = build("dpo", label_smoothing=bound)(policy, reference).losses.item()
    expected = {0.0: math.log1p(math.exp(-0.2)), 0.5: 0.5 * (math.log1p(math.exp(-0.2)) + math.log1p(math.exp(0.2)))}
    assert loss == pytest.approx(expected[bound], rel=1e-6)


def test_dpo_rejects_bad_beta():
    with pytest.raises(ValueError, match="beta"):
        build("dpo", beta=0.0)


def test_ipo_golden():
    """β = 0.1 so the target margin is 1/(2β) = 5:
    h = 2 → (2 − 5)² = 9;  h = 0 → 25;  h = −8 → 169.
    """
    policy, reference = records([-5.0, -3.0, -8.0], [-9.0, -3.0, -2.0], [-6.0, -3.0, -4.0], [-8.0, -3.0, -6.0])
    output = build("ipo", beta=0.1)(policy, reference)
    torch.testing.assert_close(output.losses, torch.tensor([9.0, 25.0, 169.0]))
    torch.testing.assert_close(output.chosen_rewards, torch.tensor([0.1, 0.0, -0.4]))


def test_ipo_token_mean_switch():
    """TRL's IPO uses token means: with the module dividing by lengths (4 and 2 tokens), sums (−8, −6) and
    references (−12, −4) give means (−2, −3) and (−3, −2); h = 1 − (−1) = 2 and L = (2 − 5)² = 9."""
    ipo = build("ipo", beta=0.1, length_normalized=True)
    assert ipo.length_normalized
    policy, reference = records([-8.0], [-6.0], [-12.0], [-4.0], lengths=([4], [2]))
    output = ipo(policy.token_mean(), reference.token_mean())
    assert output.losses.item() == pytest.approx(9.0)
