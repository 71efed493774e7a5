"""Gradient accumulation is invisible: batch 1 × accumulation 8 trains exactly like batch 8 × accumulation 1.

DPO's batch loss is the mean of per-pair losses and Lightning divides each micro-batch's loss by the accumulation
count, so the accumulated gradient is the same mean over the same 8 pairs (the order is shared: one permutation
per epoch, cut into batches of either size); only float rounding and per-batch padding differ.
"""

import torch
from scaling_probe import fit_tiny


def test_batch_1_accumulate_8_equals_batch_8_accumulate_1(tiny_checkpoint, pairs_file, tmp_path):
    def sgd(params):
        return torch.optim.SGD(params, lr=0.5)  # linear in the gradient, so the comparison is not amplified

    _, _, accumulated = fit_tiny(tiny_checkpoint, pairs_file, tmp_path / "a", loss="dpo", steps=2, batch_size=1,
                                 accumulate=8, optimizer=sgd)
    _, _, batched = fit_tiny(tiny_checkpoint, pairs_file, tmp_path / "b", loss="dpo", steps=2, batch_size=8,
                             accumulate=1, optimizer=sgd)
    assert len(accumulated.batches) == 16 and len(batched.batches) == 2
    moved = 0.0
    for name, weight in batched.record["policy"].items():
        torch.testing.assert_close(accumulated.record["policy"][name], weight, rtol=1e-5, atol=1e-6, msg=name)
        moved = max(moved, (weight - accumulated.record["reference"][name]).abs().max().item())
    assert moved > 1e-3, "the policy must have moved for the comparison to mean anything"
    for probe in (accumulated, batched):  # before the first update the policy is the reference: loss log 2
        assert abs(probe.losses[1] - 0.6931471805599453) < 1e-6
