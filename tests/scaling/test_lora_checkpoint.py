"""A LoRA run's checkpoint holds what the run trains — the adapter, its optimiser state, the loop state and the run
record — and none of the frozen base weights, which are loaded from the model source the checkpoint records. It
still resumes exactly (`lightpref export` merging such an adapter into its base: tests/test_one_model.py)."""

import pytest
import torch
from peft import LoraConfig
from scaling_probe import Probe, fit_tiny

from lightpref.run.resume import RECORD_KEY

OPTIONS = {"loss": "dpo", "steps": 6, "batch_size": 4}


def lora() -> LoraConfig:
    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)


@pytest.fixture(scope="module")
def lora_runs(tiny_checkpoint, pairs_file, tmp_path_factory):
    """An unbroken 6-step LoRA run, and the same run crashed after step 5 with a checkpoint every 2 steps."""
    root = tmp_path_factory.mktemp("lora")
    full_module, _, full = fit_tiny(tiny_checkpoint, pairs_file, root / "full", peft=lora(), **OPTIONS)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit_tiny(tiny_checkpoint, pairs_file, root / "run", peft=lora(), probe=Probe(crash_at_step=5),
                 every_n_train_steps=2, **OPTIONS)
    return full_module, full, root / "run" / "checkpoints" / "step=4.ckpt"


def test_the_checkpoint_holds_the_adapter_and_its_optimiser_state_but_no_frozen_base_weight(lora_runs):
    full_module, _, saved = lora_runs
    state = torch.load(saved, weights_only=True)
    frozen = {f"policy.{name}" for name, p in full_module.policy.named_parameters(remove_duplicate=False)
              if not p.requires_grad}
    trained = {f"policy.{name}" for name, p in full_module.policy.named_parameters() if p.requires_grad}
    assert len(frozen) > 10 and len(trained) == 2 * 2 * 2  # 2 layers × (q, v) × (A, B)
    policy_keys = {key for key in state["state_dict"] if key.startswith("policy.")}
    assert policy_keys == trained
    adam = state["optimizer_states"][0]["state"]
    assert len(adam) == len(trained) and all(set(entry) >= {"exp_avg", "exp_avg_sq"} for entry in adam.values())
    assert state["global_step"] == 4 and state[RECORD_KEY]["model"]
    base_bytes = sum(full_module.policy.get_parameter(key.removeprefix("policy.")).numel() * 4 for key in frozen)
    assert saved.stat().st_size < base_bytes / 2  # the tiny base is 156 kB in float32


def test_resume_from_the_adapter_checkpoint_matches_the_unbroken_run(lora_runs, tiny_checkpoint, pairs_file):
    full_module, full, saved = lora_runs
    module, trainer, resumed = fit_tiny(tiny_checkpoint, pairs_file, saved.parents[1], peft=lora(),
                                        ckpt_path=str(saved), **OPTIONS)
    assert trainer.global_step == 6 and resumed.batches == full.batches[4:]
    for step in (5, 6):
        torch.testing.assert_close(resumed.losses[step], full.losses[step], rtol=1e-6, atol=1e-7)
    assert resumed.record["policy"].keys() == full.record["policy"].keys()
    for name, value in full.record["policy"].items():  # base weights (reloaded) and adapter (trained) alike
        torch.testing.assert_close(resumed.record["policy"][name], value, rtol=1e-6, atol=1e-7, msg=name)
    assert any(not torch.equal(value, 0 * value) for name, value in full.record["policy"].items() if "lora_B" in name)


def test_a_checkpoint_missing_an_adapter_weight_is_refused(lora_runs, tiny_checkpoint, pairs_file, tmp_path):
    _, _, saved = lora_runs
    state = torch.load(saved, weights_only=True)
    dropped = next(key for key in state["state_dict"] if "lora_A" in key)
    del state["state_dict"][dropped]
    torch.save(state, tmp_path / "broken.ckpt")
    with pytest.raises(RuntimeError, match="Missing key") as error:
        fit_tiny(tiny_checkpoint, pairs_file, tmp_path / "run", peft=lora(), ckpt_path=str(tmp_path / "broken.ckpt"),
                 **OPTIONS)
    assert dropped in str(error.value) and "base_layer" not in str(error.value)
