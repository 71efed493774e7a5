"""Exact resume on unpaired feedback: a KTO run, crashed after step 7 and resumed from its step-6 checkpoint,
continues with the batches, losses and weights of the run that never stopped."""

import json

import pytest
import torch
from scaling_probe import Probe, fit_tiny


@pytest.mark.slow
def test_crash_then_resume_on_unpaired_feedback_matches_the_uninterrupted_run(tiny_checkpoint, tmp_path):
    feedback = tmp_path / "feedback.jsonl"
    feedback.write_text("".join(json.dumps({
        "prompt": f"Human: question {i}? Assistant:",
        "completion": [f" The answer is {i}.", " I don't know.", " Maybe.", " No."][i % 4],
        "label": i % 4 == 0 or i % 3 == 0,
    }) + "\n" for i in range(12)))
    options = {"loss": "kto", "steps": 8, "batch_size": 2}  # 6 batches an epoch: resumes inside epoch 1
    _, _, full = fit_tiny(tiny_checkpoint, feedback, tmp_path / "full", **options)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit_tiny(tiny_checkpoint, feedback, tmp_path / "run", probe=Probe(crash_at_step=7), every_n_train_steps=2,
                 **options)
    saved = tmp_path / "run" / "checkpoints" / "step=6.ckpt"
    _, trainer, resumed = fit_tiny(tiny_checkpoint, feedback, tmp_path / "run", ckpt_path=str(saved), **options)
    assert trainer.global_step == 8 and resumed.batches == full.batches[6:]
    for step in (7, 8):
        torch.testing.assert_close(resumed.losses[step], full.losses[step], rtol=1e-6, atol=1e-7)
    for name, value in full.record["policy"].items():
        torch.testing.assert_close(resumed.record["policy"][name], value, rtol=1e-6, atol=1e-7, msg=name)
