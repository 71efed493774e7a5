"""KTO and unpaired APO-zero against values derived by hand, KTO against TRL 1.16's own KTO computation on the same
log-probs (float64), and the label-balance warning of KTO's eq. 8."""

import math
from collections import defaultdict
from functools import partial
from types import SimpleNamespace

import pytest
import torch

from lightpref.losses import build
from lightpref.losses.apo_unpaired import APOZeroUnpaired
from lightpref.losses.kto import KTO
from lightpref.losses.shapes import UnpairedLogProbs
from lightpref.losses.unpaired import balance_warning


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def records(policy, reference, labels, policy_mismatched=None, reference_mismatched=None, dtype=torch.float32):
    def tensor(values):
        return None if values is None else torch.tensor(values, dtype=dtype)

    labels = torch.tensor(labels)
    policy_logps = torch.tensor(policy, dtype=dtype, requires_grad=True)
    return (policy_logps, UnpairedLogProbs.from_sums(policy_logps, labels, tensor(policy_mismatched)),
            UnpairedLogProbs.from_sums(tensor(reference), labels, tensor(reference_mismatched)))


def test_kto_by_hand():
    """β = 0.5, λ_D = 1, λ_U = 2. ρ = policy − reference = (1, 0, −1, −2) for labels (D, U, D, U).
    Mismatched log-ratios (1, 0, 0, 0): z₀ = max(0, 0.25) = 0.25. Losses:
    D: 1 − σ(0.5·(1 − 0.25)) = 1 − σ(0.375);   U: 2·(1 − σ(0.5·(0.25 − 0))) = 2·(1 − σ(0.125));
    D: 1 − σ(0.5·(−1 − 0.25)) = 1 − σ(−0.625); U: 2·(1 − σ(0.5·(0.25 + 2))) = 2·(1 − σ(1.125)).
    Rewards β·ρ = (0.5, 0, −0.5, −1)."""
    policy, mine, reference = records([-1.0, -2.0, -3.0, -4.0], [-2.0] * 4, [True, False, True, False],
                                      [-5.0] * 4, [-6.0, -5.0, -5.0, -5.0])
    output = KTO(beta=0.5, desirable_weight=1.0, undesirable_weight=2.0)(mine, reference)
    expected = [1 - sigmoid(0.375), 2 * (1 - sigmoid(0.125)), 1 - sigmoid(-0.625), 2 * (1 - sigmoid(1.125))]
    assert output.losses.tolist() == pytest.approx(expected, abs=1e-6)
    assert output.chosen_rewards.tolist() == pytest.approx([0.5, 0.0, -0.5, -1.0])
    assert output.metrics["kl"].item() == pytest.approx(0.25)
    output.losses.sum().backward()  # z₀ carries no gradient: d/dρ of 1 − σ(β(ρ − z₀)) is −β·σ'(·) only
    slope = [-0.5 * sigmoid(0.375) * (1 - sigmoid(0.375)), 2 * 0.5 * sigmoid(0.125) * (1 - sigmoid(0.125))]
    assert policy.grad[:2].tolist() == pytest.approx(slope, abs=1e-6)


def test_kto_reference_point_is_clamped_at_zero():
    """Mismatched log-ratios (−1, −3): mean −2 < 0, so z₀ = 0 and the desirable loss is 1 − σ(β·ρ) = 1 − σ(0.1)."""
    _, mine, reference = records([0.0, 0.0], [-1.0, -1.0], [True, False], [-4.0, -6.0], [-3.0, -3.0])
    output = KTO(beta=0.1)(mine, reference)
    assert output.metrics["kl"].item() == 0.0
    assert output.losses.tolist() == pytest.approx([1 - sigmoid(0.1), 1 - sigmoid(-0.1)], abs=1e-7)


def test_apo_zero_unpaired_by_hand():
    """β = 1, λ_D = 3, λ_U = 0.5, ρ = (2, 2): desirable 3·(1 − σ(2)), undesirable 0.5·σ(2); no mismatched input."""
    _, mine, reference = records([1.0, 1.0], [-1.0, -1.0], [True, False])
    output = APOZeroUnpaired(beta=1.0, desirable_weight=3.0, undesirable_weight=0.5)(mine, reference)
    assert output.losses.tolist() == pytest.approx([3 * (1 - sigmoid(2)), 0.5 * sigmoid(2)], abs=1e-6)
    assert not APOZeroUnpaired.needs_mismatched and KTO.needs_mismatched


def test_registered_with_their_defaults():
    kto, apo = build("kto"), build("apo_zero_unpaired")
    assert (kto.beta, kto.desirable_weight, kto.undesirable_weight, kto.consumes) == (0.1, 1.0, 1.0, "unpaired")
    assert isinstance(apo, APOZeroUnpaired) and apo.consumes == "unpaired"


@pytest.mark.parametrize("options", [{"beta": 0.0}, {"desirable_weight": -1.0}, {"undesirable_weight": True}])
def test_bad_arguments_are_refused(options):
    with pytest.raises(ValueError, match="beta|weight"):
        KTO(**options)


def test_balance_warning_follows_eq_8():
    """λ_D·n_D / (λ_U·n_U) must lie in [1, 4/3]: 100 D / 100 U at λ = 1 gives 1 (no warning); 100 D / 300 U gives
    1/3: λ_D must be in [3, 4] (= [1, 4/3]·300/100) or λ_U in [0.25, 0.333] (= 100/(300·[4/3, 1]))."""
    assert balance_warning(100, 100, 1.0, 1.0) is None
    assert balance_warning(120, 100, 1.0, 1.0) is None
    message = balance_warning(100, 300, 1.0, 1.0)
    assert "= 0.33" in message and "`desirable_weight` within [3, 4]" in message
    assert "`undesirable_weight` within [0.25, 0.333]" in message
    assert balance_warning(100, 0, 1.0, 1.0) is None  # one kind only: nothing to balance
    assert KTO(desirable_weight=3.0).balance_warning(100, 300) is None


def trl_kto(policy, reference, labels, policy_mismatched, reference_mismatched, beta, desirable_weight,
            undesirable_weight, loss_type="kto"):
    """TRL 1.16's `KTOTrainer._compute_loss`, run on these log-probs: a stand-in model returns per-token log-probs
    whose completion sums are the given values (the batch has two tokens per row, the second the completion), and the
    reference log-probs come in as precomputed ones."""
    kto_trainer = pytest.importorskip("trl.trainer.kto_trainer")
    n = len(policy)
    ids, kl_ids = torch.ones(n, 2, dtype=torch.long), torch.full((n, 2), 2, dtype=torch.long)
    completion_mask = torch.tensor([[0, 1]] * n)

    def model(input_ids, labels, **kwargs):
        values = policy_mismatched if input_ids is kl_ids else policy
        logps = torch.tensor(values, dtype=torch.float64)[:, None]  # (N, T − 1)
        return SimpleNamespace(log_probs=logps, entropy=torch.zeros_like(logps), mean_logits=torch.zeros_like(logps))

    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": completion_mask,
              "KL_input_ids": kl_ids, "KL_attention_mask": torch.ones_like(ids), "KL_completion_mask": completion_mask,
              "label": torch.tensor(labels), "ref_logps": torch.tensor(reference, dtype=torch.float64),
              "ref_KL_logps": torch.tensor(reference_mismatched, dtype=torch.float64)}
    accelerator = SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda value: value)
    trainer = SimpleNamespace(model=SimpleNamespace(training=True), accelerator=accelerator,
                              _metrics=defaultdict(lambda: defaultdict(list)), precompute_ref_logps=True,
                              calculate_KL=loss_type == "kto", loss_type=loss_type, beta=beta,
                              desirable_weight=desirable_weight, undesirable_weight=undesirable_weight,
                              aux_loss_enabled=False, _total_train_tokens=0, _tp_size=1)
    trainer._compute_kl_logps = partial(kto_trainer.KTOTrainer._compute_kl_logps, trainer)
    loss = kto_trainer.KTOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    return loss, {name: values[-1] for name, values in trainer._metrics["train"].items()}


@pytest.mark.parametrize("loss_type", ["kto", "apo_zero_unpaired"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_trl_on_the_same_log_probs(seed, loss_type):
    """Loss, z₀ (``kl``), mean rewards and log-probs of each label equal TRL 1.16's on random float64 log-probs
    (the mismatched log-ratios shifted so that z₀ is positive for seed 0 and clamped to 0 for seed 1)."""
    generator = torch.Generator().manual_seed(seed)
    n = 7
    labels = (torch.rand(n, generator=generator) > 0.4).tolist()
    labels[0], labels[1] = True, False
    policy, reference, policy_mismatched, reference_mismatched = (
        (-20 * torch.rand(n, generator=generator, dtype=torch.float64)).tolist() for _ in range(4))
    shift = {0: 15.0, 1: -15.0, 2: 0.0}[seed]
    policy_mismatched = [value + shift for value in policy_mismatched]
    settings = {"beta": 0.3, "desirable_weight": 1.5, "undesirable_weight": 0.8}
    expected, metrics = trl_kto(policy, reference, labels, policy_mismatched, reference_mismatched,
                                loss_type=loss_type, **settings)
    loss = build(loss_type, **settings)
    _, mine, theirs = records(policy, reference, labels, policy_mismatched, reference_mismatched, torch.float64)
    output = loss(mine, theirs)
    assert output.losses.mean().item() == pytest.approx(expected.item(), rel=1e-12, abs=1e-14)
    labels = torch.tensor(labels)
    assert output.chosen_rewards[labels].mean().item() == pytest.approx(metrics["rewards/chosen"], rel=1e-12)
    assert output.rejected_rewards[~labels].mean().item() == pytest.approx(metrics["rewards/rejected"], rel=1e-12)
    assert mine.logps[labels].mean().item() == pytest.approx(metrics["logps/chosen"], rel=1e-12)
    if loss_type == "kto":
        assert output.metrics["kl"].item() == pytest.approx(metrics["kl"], rel=1e-12, abs=1e-14)
        assert (metrics["kl"] > 0, metrics["kl"] == 0) == (seed == 0, seed == 1) or seed == 2
