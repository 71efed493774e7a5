"""BCO (pair): the running mean δ, its buffer, its detachment, and its all-reduce across processes."""

import math

import pytest
import torch
import torch.multiprocessing as mp
from torch import distributed
from torch.testing import assert_close

from lightpref.losses import LogProbs, build
from lightpref.losses.bco import BCOPair


def ratios(chosen, rejected):
    """Records with ρc = chosen and ρr = rejected (the reference is 0)."""
    chosen, rejected = torch.as_tensor(chosen), torch.as_tensor(rejected)
    zeros = torch.zeros_like(chosen)
    return LogProbs.from_sums(chosen, rejected), LogProbs.from_sums(zeros, zeros)


def softplus(x):
    return math.log1p(math.exp(x))


def test_golden_and_running_mean():
    """β = 1, training mode.

    Batch 1: ρc = [1, 3], ρr = [−1, 2]; rewards {1, 3, −1, 2}, S = 5, n = 4: count 0 → 4, δ = 0 + (5 − 0)/4 = 1.25.
      L = −logσ(r⁺ − δ) − logσ(δ − r⁻) = softplus(δ − r⁺) + softplus(r⁻ − δ):
      pair 0: softplus(0.25) + softplus(−2.25) = 0.825939 + 0.100207 = 0.926146
      pair 1: softplus(−1.75) + softplus(0.75) = 0.160224 + 1.136871 = 1.297095
    Batch 2: ρc = [5], ρr = [3.75]; S = 8.75, n = 2: count 6, δ = 1.25 + (8.75 − 2·1.25)/6 = 2.291667
      (= (5 + 8.75)/6, the mean of all six rewards).
    """
    loss = build("bco_pair", beta=1.0).train()
    output = loss(*ratios([1.0, 3.0], [-1.0, 2.0]))
    assert loss.running_mean.item() == pytest.approx(1.25) and loss.running_count.item() == 4
    assert_close(output.losses, torch.tensor([0.926146, 1.297095]), atol=1e-6, rtol=0)
    assert_close(output.metrics["bco_pair/delta"], torch.tensor(1.25))
    loss(*ratios([5.0], [3.75]))
    assert loss.running_mean.item() == pytest.approx(13.75 / 6) and loss.running_count.item() == 6


def test_evaluation_mode_reads_but_does_not_update():
    """Eval mode on a fresh loss: δ = 0, so L = softplus(−1) + softplus(−1) = 2·0.313262 for ρc = 1, ρr = −1."""
    loss = BCOPair(beta=1.0).eval()
    output = loss(*ratios([1.0], [-1.0]))
    assert loss.running_count.item() == 0 and loss.running_mean.item() == 0
    assert output.losses.item() == pytest.approx(2 * softplus(-1.0), rel=1e-6)


def test_delta_is_in_the_state_dict():
    trained = BCOPair(beta=1.0).train()
    trained(*ratios([1.0, 3.0], [-1.0, 2.0]))
    state = trained.state_dict()
    assert set(state) == {"running_mean", "running_count"}
    restored = BCOPair(beta=1.0)
    restored.load_state_dict(state)
    assert restored.running_mean.item() == pytest.approx(1.25) and restored.running_count.item() == 4


def test_delta_is_detached():
    """First training batch, β = 1, ρc = [1, 3], ρr = [−1, 2], δ = 1.25 (depends on ρc, but must act as a constant):
    dL/dρc = −σ(δ − r⁺) = −σ(0.25), −σ(−1.75) = [−0.562177, −0.148047]; a δ carrying gradient would add
    ∂L/∂δ·∂δ/∂ρc = ∂L/∂δ/4 to each.
    """
    chosen = torch.tensor([1.0, 3.0], requires_grad=True)
    BCOPair(beta=1.0).train()(*ratios(chosen, torch.tensor([-1.0, 2.0]))).losses.sum().backward()
    assert_close(chosen.grad, -torch.sigmoid(torch.tensor([0.25, -1.75])))


def _reduce_worker(rank: int, world_size: int, init_file: str, results: str) -> None:
    distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        loss = BCOPair(beta=1.0).train()
        if rank == 0:
            loss(*ratios([1.0, 3.0], [-1.0, 2.0]))  # S = 5, n = 4
        else:
            loss(*ratios([5.0], [3.75]))  # S = 8.75, n = 2
        torch.save({"mean": loss.running_mean.clone(), "count": loss.running_count.clone()}, f"{results}.{rank}")
    finally:
        distributed.destroy_process_group()


def test_delta_is_reduced_across_processes(tmp_path):
    """Two gloo processes with batches of 2 and 1 pairs: both end with the global mean (5 + 8.75)/6 and count 6."""
    results = str(tmp_path / "result")
    mp.spawn(_reduce_worker, args=(2, str(tmp_path / "init"), results), nprocs=2, join=True)
    for rank in range(2):
        state = torch.load(f"{results}.{rank}")
        assert state["mean"].item() == pytest.approx(13.75 / 6) and state["count"].item() == 6


def test_arguments():
    with pytest.raises(ValueError, match="beta"):
        BCOPair(beta=float("inf"))
