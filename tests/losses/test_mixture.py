"""Mixture: hand sums, what each part receives, what the mixture declares, metric names, and YAML building."""

import math

import jsonargparse
import pytest
import torch
from torch.testing import assert_close

from lightpref.losses import LogProbs, LossOutput, PreferenceLoss, build
from lightpref.losses.bco import BCOPair
from lightpref.losses.dpo import DPO
from lightpref.losses.mixture import Mixture
from lightpref.losses.orpo import ORPO
from lightpref.losses.sft import SFT
from lightpref.losses.simpo import SimPO
from lightpref.losses.wpo import WPO
from lightpref.views import InstructionPrefix

# Sums with lengths: policy chosen [−6, −4] over [3, 2] tokens, rejected [−9, −3] over [3, 1];
# reference chosen [−7, −4], rejected [−8, −4]: ρc = [1, 0], ρr = [−1, 1], h = [2, −1].
LENGTHS = torch.tensor([3, 2]), torch.tensor([3, 1])
POLICY = LogProbs.from_sums(torch.tensor([-6.0, -4.0]), torch.tensor([-9.0, -3.0]), *LENGTHS)
REFERENCE = LogProbs.from_sums(torch.tensor([-7.0, -4.0]), torch.tensor([-8.0, -4.0]), *LENGTHS)


class Spy(PreferenceLoss):
    """Records what it is given; declares what it is told to."""

    def __init__(self, length_normalized=False, requires_reference=True, views=None):
        super().__init__()
        self.length_normalized = length_normalized
        self.requires_reference = requires_reference
        self.views = views or {}
        self.seen = None

    def forward(self, policy, reference):
        self.seen = (policy, reference)
        zeros = torch.zeros_like(policy.chosen)
        return LossOutput(zeros, zeros, zeros, metrics={"seen": zeros})


def test_dpo_plus_sft_golden():
    """DPO β = 0.1: softplus(−0.1·h) = [softplus(−0.2), softplus(0.1)] = [0.598139, 0.744397];
    SFT on token means: −p̄c = [6/3, 4/2] = [2, 2]; L = DPO + 0.2·SFT = [0.998139, 1.144397].
    Rewards from DPO: β·ρc = [0.1, 0], β·ρr = [−0.1, 0.1]; metrics dpo/loss, sft/loss.
    """
    mixture = build("mixture", losses=[DPO(beta=0.1), SFT()], weights=[1.0, 0.2])
    output = mixture(POLICY, REFERENCE)
    assert_close(output.losses, torch.tensor([0.998139, 1.144397]), atol=1e-6, rtol=0)
    assert_close(output.chosen_rewards, torch.tensor([0.1, 0.0]))
    assert_close(output.rejected_rewards, torch.tensor([-0.1, 0.1]))
    assert set(output.metrics) == {"dpo/loss", "sft/loss"}
    assert_close(output.metrics["sft/loss"], torch.tensor([2.0, 2.0]))
    assert_close(output.metrics["dpo/loss"], torch.tensor([math.log1p(math.exp(-0.2)), math.log1p(math.exp(0.1))]))


def test_each_part_receives_the_reduction_it_asked_for():
    """Sums for a summing part, token means (views too) for a length-normalised one, no reference when unneeded."""
    sums, means, free = Spy(), Spy(length_normalized=True), Spy(requires_reference=False)
    policy = LogProbs.from_sums(POLICY.chosen, POLICY.rejected, *LENGTHS, views={"v": POLICY})
    Mixture([sums, means, free], [1.0, 1.0, 1.0])(policy, REFERENCE)
    assert_close(sums.seen[0].chosen, torch.tensor([-6.0, -4.0]))
    assert_close(sums.seen[1].rejected, torch.tensor([-8.0, -4.0]))
    assert_close(means.seen[0].chosen, torch.tensor([-2.0, -2.0]))
    assert_close(means.seen[0].views["v"].rejected, torch.tensor([-3.0, -3.0]))
    assert_close(means.seen[1].rejected, torch.tensor([-8.0 / 3, -4.0]))
    assert free.seen[1] is None


def test_declarations_are_the_union_of_the_parts():
    assert not Mixture([SimPO(), SFT()], [1.0, 1.0]).requires_reference
    assert Mixture([SFT(), DPO()], [1.0, 1.0]).requires_reference
    mixture = Mixture([DPO(), WPO(SFT())], [1.0, 1.0])
    assert mixture.needs_token_logps and mixture.needs_collision_logps and not mixture.length_normalized
    assert not Mixture([SimPO(), SFT()], [1.0, 1.0]).length_normalized  # receives sums, whatever its parts want


def test_views_merge_and_clash():
    same = Mixture([Spy(views={"v": InstructionPrefix("a")}), Spy(views={"v": InstructionPrefix("a")})], [1, 1])
    assert same.views == {"v": InstructionPrefix("a")}
    with pytest.raises(ValueError, match="prompt view 'v'"):
        Mixture([Spy(views={"v": InstructionPrefix("a")}), Spy(views={"v": InstructionPrefix("b")})], [1, 1])


def test_rewards_from_the_first_part_with_a_reference():
    output = Mixture([SFT(), DPO(beta=0.1)], [1.0, 1.0])(POLICY, REFERENCE)
    assert_close(output.chosen_rewards, torch.tensor([0.1, 0.0]))
    free = Mixture([SimPO(beta=2.0), SFT()], [1.0, 1.0])(POLICY, None)
    assert_close(free.chosen_rewards, torch.tensor([-4.0, -4.0]))  # SimPO's β·p̄c


def test_metric_names_are_prefixed_once():
    output = Mixture([ORPO(), Spy(), Spy()], [1.0, 1.0, 1.0], names=["orpo", "a", "b"])(POLICY, REFERENCE)
    assert {"orpo/loss", "orpo/nll_loss", "orpo/log_odds_ratio", "a/seen", "b/seen", "a/loss"} <= set(output.metrics)
    default = Mixture([DPO(), DPO(beta=0.2), Spy()], [1.0, 1.0, 1.0])
    assert default.names == ["dpo", "dpo_2", "spy"]


def test_buffers_and_training_mode_reach_the_parts():
    mixture = Mixture([DPO(), BCOPair(beta=1.0)], [1.0, 0.5]).train()
    mixture(POLICY, REFERENCE)
    assert mixture.state_dict()["parts.1.running_count"].item() == 4
    mixture.eval()(POLICY, REFERENCE)
    assert mixture.parts[1].running_count.item() == 4


@pytest.mark.parametrize(
    ("losses", "weights", "names", "error"),
    [
        ([], [], None, ValueError),
        ([DPO()], [1.0, 2.0], None, ValueError),
        ([DPO(), SFT()], [1.0, float("nan")], None, ValueError),
        ([DPO(), SFT()], [1.0, 1.0], ["x", "x"], ValueError),
        ([DPO(), SFT()], [1.0, 1.0], ["x", "a/b"], ValueError),
        ([DPO(), "sft"], [1.0, 1.0], None, TypeError),
    ],
)
def test_arguments_are_validated(losses, weights, names, error):
    with pytest.raises(error):
        Mixture(losses, weights, names)


def test_builds_from_the_yaml_a_config_would_hold():
    """The LightningCLI form: class_path/init_args for the mixture and each of its parts."""
    config = """
loss:
  class_path: lightpref.losses.mixture.Mixture
  init_args:
    losses:
      - class_path: lightpref.losses.dpo.DPO
        init_args: {beta: 0.1}
      - class_path: lightpref.losses.sft.SFT
    weights: [1.0, 0.2]
"""
    parser = jsonargparse.ArgumentParser()
    parser.add_argument("--loss", type=PreferenceLoss)
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    loss = instantiate(parser.parse_string(config)).loss
    assert isinstance(loss, Mixture) and [type(part) for part in loss.parts] == [DPO, SFT]
    assert_close(loss(POLICY, REFERENCE).losses, torch.tensor([0.998139, 1.144397]), atol=1e-6, rtol=0)
