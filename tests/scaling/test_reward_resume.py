"""Exact resume of reward-model training: a run stopped by SIGTERM part-way and resumed continues with the same
losses, learning rates, batches and weights as the run that was never stopped (the run machinery of preference
training, unchanged). 24 pairs in batches of 4 for 9 steps: the stop after step 7 falls inside the second epoch."""

import pytest
import torch
from reward_support import fit_reward
from scaling_probe import Probe
from test_resume import assert_same_run, assert_same_weights

STEPS = 9


class RewardProbe(Probe):
    """The scaling tests' probe, recording the reward model's weights at the end."""

    def on_train_end(self, trainer, pl_module):
        weights = pl_module.reward_model.state_dict()
        self.record = {"model": {key: value.detach().clone() for key, value in weights.items()}}


def test_sigterm_then_resume_matches_the_uninterrupted_reward_run(tiny_checkpoint, pairs_file, tmp_path):
    full = RewardProbe()
    fit_reward(tiny_checkpoint, pairs_file, tmp_path / "full", steps=STEPS, callbacks=(full,))
    stopped = RewardProbe(sigterm_at_step=7)
    with pytest.raises(SystemExit) as exit_info:
        fit_reward(tiny_checkpoint, pairs_file, tmp_path / "run", steps=STEPS, callbacks=(stopped,))
    assert exit_info.value.code in (None, 0)
    assert max(stopped.losses) == 7 and stopped.batches == full.batches[:7]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["lightpref_reward_model"] and all(key.startswith("reward_model.")
                                                        for key in checkpoint["state_dict"])

    resumed = RewardProbe()
    _, trainer = fit_reward(tiny_checkpoint, pairs_file, tmp_path / "run", steps=STEPS, ckpt_path=str(last),
                            callbacks=(resumed,))
    assert trainer.global_step == STEPS
    assert resumed.batches == full.batches[7:]
    assert_same_run(full, resumed, range(8, STEPS + 1))
    assert_same_weights(full.record["model"], resumed.record["model"])
    assert full.losses[STEPS] < full.losses[1]  # it trained: the comparison is between moving weights
