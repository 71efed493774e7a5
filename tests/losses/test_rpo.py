"""RPO: DPO + α·SFT, the hand sum."""

import pytest
import torch
from torch.testing import assert_close

from lightpref.losses import LogProbs, build
from lightpref.losses.mixture import Mixture
from lightpref.losses.rpo import RPO

LENGTHS = torch.tensor([3, 2]), torch.tensor([3, 1])
POLICY = LogProbs.from_sums(torch.tensor([-6.0, -4.0]), torch.tensor([-9.0, -3.0]), *LENGTHS)
REFERENCE = LogProbs.from_sums(torch.tensor([-7.0, -4.0]), torch.tensor([-8.0, -4.0]), *LENGTHS)


def test_golden():
    """h = [2, −1] (ρc = [1, 0], ρr = [−1, 1]), β = 0.1: DPO = [0.598139, 0.744397]; NLL = −p̄c = [2, 2];
    α = 1: L = [2.598139, 2.744397]; α = 0.5: [1.598139, 1.744397].
    """
    rpo = build("rpo")
    assert isinstance(rpo, Mixture) and rpo.requires_reference and not rpo.length_normalized
    output = rpo(POLICY, REFERENCE)
    assert_close(output.losses, torch.tensor([2.598139, 2.744397]), atol=1e-6, rtol=0)
    assert set(output.metrics) == {"dpo/loss", "sft/loss"}
    assert_close(RPO(alpha=0.5)(POLICY, REFERENCE).losses, torch.tensor([1.598139, 1.744397]), atol=1e-6, rtol=0)
    assert_close(output.chosen_rewards, torch.tensor([0.1, 0.0]))


@pytest.mark.parametrize("bad", [-1.0, float("inf")])
def test_alpha_is_validated(bad):
    with pytest.raises(ValueError, match="alpha"):
        RPO(alpha=bad)
