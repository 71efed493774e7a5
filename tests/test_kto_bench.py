"""bench/kto.py's TRL side runs KTOTrainer under lightpref's settings: on a tiny model, the same token ids, mismatched
completions and AdamW, lightpref's ``kto`` losses equal TRL's at every one of three optimiser steps (not only at the
first, where π = π_ref makes both 0.5 whatever the settings), and the trained weights agree."""

import argparse
import importlib
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
BATCH, STEPS, LR = 4, 3, 1e-2  # a large learning rate, so the losses of steps 2 and 3 move away from 0.5


@pytest.fixture(scope="module")
def bench():
    pytest.importorskip("trl", reason="TRL (a development dependency) is needed for the comparison")
    sys.path.insert(0, str(BENCH))
    try:
        yield {name: importlib.import_module(name) for name in ("harness", "kto", "ranked")}
    finally:
        sys.path.remove(str(BENCH))


def unpaired_rows() -> list[dict]:
    """Per step, BATCH labelled examples, each with its own completion and the previous example's (in the batch)."""
    generator = torch.Generator().manual_seed(0)

    def ids(count: int) -> list[int]:
        return torch.randint(4, 300, (count,), generator=generator).tolist()

    rows = []
    for _ in range(STEPS):
        block = [(ids(3 + i), ids(2 + (3 * i) % 5), i % 2 == 0) for i in range(BATCH)]
        rows += [{"prompt_ids": prompt, "completion_ids": [completion, block[i - 1][1]], "label": label}
                 for i, (prompt, completion, label) in enumerate(block)]
    return rows


@pytest.mark.slow
def test_lightpref_kto_matches_the_bench_trl_side_over_three_steps(bench, tiny_checkpoint):
    from transformers import AutoModelForCausalLM

    from lightpref.testing import tiny_tokenizer
    from lightpref.training.module import PreferenceModule

    harness, kto, ranked = bench["harness"], bench["kto"], bench["ranked"]
    rows = unpaired_rows()
    args = argparse.Namespace(examples_per_batch=BATCH, lr=LR, warmup=0, steps=STEPS)
    theirs = harness.new_record()
    policy, reference = (AutoModelForCausalLM.from_pretrained(tiny_checkpoint) for _ in range(2))
    trl_model = kto.run_trl_kto(policy, reference, tiny_tokenizer(), rows, theirs, args)
    mine = harness.new_record()
    module = PreferenceModule(str(tiny_checkpoint), loss="kto", export_dir=None,
                              optimizer=lambda params: torch.optim.AdamW(params, lr=LR, weight_decay=0.0))
    lightpref_model = harness.run_lightpref(module, ranked.Fixed(rows, BATCH, 0), STEPS, mine)
    assert len(mine["losses"]) == len(theirs["losses"]) == STEPS
    assert mine["losses"][0] == pytest.approx(0.5, abs=1e-7)
    assert abs(mine["losses"][1] - 0.5) > 1e-4  # the later steps measure something
    assert mine["losses"] == pytest.approx(theirs["losses"], abs=1e-6)
    pairs = zip(trl_model.parameters(), lightpref_model.parameters(), strict=True)
    drift = max((a - b).abs().max().item() for a, b in pairs)
    assert drift < 1e-4  # three Adam steps of 1e-2 each: a sign flip anywhere would show as ≥ 1e-2
