"""Exact resume on one process: a run stopped part-way and resumed continues with the same losses, learning rates,
batches, loss state and weights as the run that was never stopped.

The tiny model trains on 24 pairs in batches of 4 (6 batches an epoch) for 9 steps, so the interruption after
step 7 falls inside the second epoch: the resumed run must reshuffle as epoch 1 (not replay epoch 0's order) and
skip the one batch of it already trained on.
"""

import pytest
import torch
from scaling_probe import Probe, fit_tiny

from lightpref.checkpointing import SafeCheckpoints
from lightpref.guards import NonFiniteGuard

STEPS = 9


def assert_same_run(uninterrupted: Probe, resumed: Probe, steps: range) -> None:
    for step in steps:
        torch.testing.assert_close(resumed.losses[step], uninterrupted.losses[step], rtol=1e-6, atol=1e-7)
        assert resumed.learning_rates[step] == pytest.approx(uninterrupted.learning_rates[step], rel=1e-12)
    assert set(resumed.losses) == set(steps)


def assert_same_weights(left: dict, right: dict) -> None:
    assert left.keys() == right.keys()
    for name in left:
        torch.testing.assert_close(left[name], right[name], rtol=1e-6, atol=1e-7, msg=name)


def test_sigterm_checkpoint_then_resume_matches_the_uninterrupted_sgdpo_run(tiny_checkpoint, pairs_file, tmp_path):
    """SGDPO draws token subsets from its own generator: the resumed run must continue the same draws."""
    full_module, _, full = fit_tiny(tiny_checkpoint, pairs_file, tmp_path / "full", loss="sgdpo", steps=STEPS)
    first_epoch, second_epoch = full.batches[:6], full.batches[6:]
    assert second_epoch != first_epoch[:3], "epoch 1 must be shuffled differently from epoch 0"

    stopped = Probe(sigterm_at_step=7)
    with pytest.raises(SystemExit) as exit_info:  # SIGTERM: a checkpoint, then a clean exit
        fit_tiny(tiny_checkpoint, pairs_file, tmp_path / "run", loss="sgdpo", steps=STEPS, probe=stopped)
    assert exit_info.value.code in (None, 0)
    assert max(stopped.losses) == 7 and stopped.batches == full.batches[:7]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert last.is_file() and not list(last.parent.glob(".*"))  # no partial file left beside it

    module, trainer, resumed = fit_tiny(tiny_checkpoint, pairs_file, tmp_path / "run", loss="sgdpo", steps=STEPS,
                                        ckpt_path=str(last))
    assert trainer.global_step == STEPS
    assert resumed.batches == full.batches[7:]  # the rest of epoch 1, in the uninterrupted order
    assert_same_run(full, resumed, range(8, STEPS + 1))
    assert_same_weights(full.record["policy"], resumed.record["policy"])
    assert torch.equal(module.loss.generator.get_state(), full_module.loss.generator.get_state())


def test_crash_then_resume_from_a_periodic_checkpoint_keeps_bco_running_mean(tiny_checkpoint, pairs_file, tmp_path):
    """A crash after step 5 loses step 5: the run resumes from the step-4 checkpoint, with BCO's running mean δ
    (a buffer) and two micro-batches per optimiser step."""
    options = {"loss": "bco_pair", "steps": 6, "batch_size": 2, "accumulate": 2}
    full_module, _, full = fit_tiny(tiny_checkpoint, pairs_file, tmp_path / "full", **options)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit_tiny(tiny_checkpoint, pairs_file, tmp_path / "run", probe=Probe(crash_at_step=5), every_n_train_steps=2,
                 **options)
    saved = tmp_path / "run" / "checkpoints" / "step=4.ckpt"
    assert saved.is_file()
    module, _, resumed = fit_tiny(tiny_checkpoint, pairs_file, tmp_path / "run", ckpt_path=str(saved), **options)
    assert resumed.batches == full.batches[8:]  # two micro-batches a step: steps 5 and 6
    assert_same_run(full, resumed, range(5, 7))
    assert_same_weights(full.record["policy"], resumed.record["policy"])
    assert full_module.loss.running_count.item() == 6 * 2 * 2 * 2  # steps × micro-batches × pairs × 2 rewards
    assert torch.equal(module.loss.running_count, full_module.loss.running_count)
    torch.testing.assert_close(module.loss.running_mean, full_module.loss.running_mean, rtol=1e-6, atol=1e-7)


def test_module_adds_its_safety_callbacks_unless_given(tiny_checkpoint, pairs_file, tmp_path):
    _, trainer, _ = fit_tiny(tiny_checkpoint, pairs_file, tmp_path / "defaults", loss="dpo", steps=1)
    assert sum(isinstance(c, NonFiniteGuard) for c in trainer.callbacks) == 1
    assert sum(isinstance(c, SafeCheckpoints) for c in trainer.callbacks) == 1
    own = SafeCheckpoints(dirpath=str(tmp_path / "elsewhere"))
    _, trainer, _ = fit_tiny(tiny_checkpoint, pairs_file, tmp_path / "own", loss="dpo", steps=1, callbacks=(own,))
    assert [c for c in trainer.callbacks if isinstance(c, SafeCheckpoints)] == [own]
