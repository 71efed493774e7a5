"""Exact resume on one process: a run stopped part-way and resumed continues with the same losses, learning rates,
batches, loss state and weights as the run that was never stopped.

The tiny model trains on 24 pairs in batches of 4 (6 batches an epoch) for 9 steps, so the interruption after
step 7 falls inside the second epoch: the resumed run must reshuffle as epoch 1 (not replay epoch 0's order) and
skip the one batch of it already trained on.
"""

import pytest
import torch
from scaling_probe import Probe, fit_tiny

from lightpref.run.callbacks import FinalCheckpoint
from lightpref.run.checkpointing import SafeCheckpoints
from lightpref.run.guards import NonFiniteGuard

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


def test_resume_from_end_of_training_and_end_of_epoch_checkpoints_matches_the_uninterrupted_run(
        tiny_checkpoint, pairs_file, tmp_path):
    """``last.ckpt`` as ``lightpref fit`` writes it with no validation: at each epoch's end and at the end of training.

    The run stops at step 4 (end of training inside epoch 0), is resumed to step 6 (end of training on an epoch
    boundary), resumed to step 9 and killed after step 8 (inside epoch 1, so ``last.ckpt`` is still the one from the
    end of epoch 0), then resumed to step 9. Every segment must train the uninterrupted run's batches in its order,
    with its losses, and end with its weights. A constant learning rate keeps runs of different lengths comparable.
    """
    options = {"loss": "dpo", "schedule": False}
    _, full_trainer, full = fit_tiny(tiny_checkpoint, pairs_file, tmp_path / "full", steps=STEPS, **options)
    root = tmp_path / "run"
    last = root / "checkpoints" / "last.ckpt"

    def run(steps: int, probe: Probe | None = None, resume: bool = True) -> tuple:
        final = FinalCheckpoint(dirpath=str(root / "checkpoints"))
        return fit_tiny(tiny_checkpoint, pairs_file, root, steps=steps, probe=probe, callbacks=(final,),
                        ckpt_path=str(last) if resume else None, **options)

    _, _, first = run(4, resume=False)
    _, _, to_boundary = run(6)
    killed = Probe(crash_at_step=8)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(STEPS, probe=killed)
    _, trainer, resumed = run(STEPS)

    assert first.batches == full.batches[:4]
    assert to_boundary.batches == full.batches[4:6]  # the rest of epoch 0, not epoch 1's order
    assert killed.batches == full.batches[6:8]  # epoch 1 from its first batch
    assert resumed.batches == full.batches[6:]
    assert full.batches[6:] != full.batches[:3], "epoch 1 must be shuffled differently from epoch 0"
    for segment, steps in ((first, range(1, 5)), (to_boundary, range(5, 7)), (killed, range(7, 9)),
                           (resumed, range(7, STEPS + 1))):
        assert_same_run(full, segment, steps)
    assert trainer.global_step == STEPS and trainer.current_epoch == full_trainer.current_epoch
    assert_same_weights(full.record["policy"], resumed.record["policy"])
