"""A run whose steps are mostly non-finite stops with an error instead of passing for a trained one."""

import pytest
from faults import AlwaysNaNDPO
from scaling_probe import fit_tiny

from lightpref.run.guards import NonFiniteGuard, NonFiniteRunError


def test_every_step_non_finite_stops_once_the_minimum_count_is_reached(tiny_checkpoint, pairs_file, tmp_path):
    with pytest.raises(NonFiniteRunError, match=r"8 of the 8 optimiser steps so far \(100%\)"):
        fit_tiny(tiny_checkpoint, pairs_file, tmp_path, loss=AlwaysNaNDPO(), steps=12)


def test_a_short_run_is_judged_at_its_end(tiny_checkpoint, pairs_file, tmp_path):
    """Three steps, all skipped: fewer than ``min_steps``, but the end of training always checks the share."""
    with pytest.raises(NonFiniteRunError, match="3 of the 3 optimiser steps") as error:
        fit_tiny(tiny_checkpoint, pairs_file, tmp_path, loss=AlwaysNaNDPO(), steps=3)
    assert "max_skipped_share" in str(error.value)


def test_a_guard_given_to_the_trainer_sets_the_tolerated_share(tiny_checkpoint, pairs_file, tmp_path):
    guard = NonFiniteGuard(max_skipped_share=1.0)
    _, trainer, _ = fit_tiny(tiny_checkpoint, pairs_file, tmp_path, loss=AlwaysNaNDPO(), steps=3, callbacks=(guard,))
    assert trainer.global_step == 3 and guard.skipped_steps == guard.steps == 3


@pytest.mark.parametrize("arguments", [{"max_skipped_share": 1.5}, {"min_steps": 0}])
def test_bad_guard_arguments_are_refused(arguments):
    with pytest.raises(ValueError, match=next(iter(arguments))):
        NonFiniteGuard(**arguments)
