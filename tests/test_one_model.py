"""One model in memory: LoRA with the base as reference, precomputed reference log-probs, TR-DPO, export."""

import logging
import math
import os
from functools import partial
from pathlib import Path

import pytest
import torch
from fit_support import fit as shared_fit
from pairs_support import write_pairs
from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM

from lightpref.batch import PairBatch
from lightpref.models.export import export_checkpoint
from lightpref.testing import save_tiny_checkpoint
from lightpref.training.callbacks import ReferenceUpdate
from lightpref.training.module import PreferenceModule
from lightpref.training.reference import FrozenCopy

fit = partial(shared_fit, steps=3, shuffle=False, sanity_steps=0, val_batches=1, validate_every=None)
"""The shared `fit` helper, three steps in order, validating once at the end."""


def lora(**kwargs):
    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], **kwargs)


def test_lora_trains_only_the_adapter_and_its_base_is_the_reference(tiny_checkpoint, pairs_file, tmp_path):
    base = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    module, _, _ = fit(tiny_checkpoint, pairs_file, tmp_path, peft=lora())
    assert module.reference.model is None  # one copy of the weights
    trained = dict(module.policy.named_parameters())
    adapters = {name for name in trained if "lora_" in name}
    assert adapters and all(trained[name].requires_grad for name in adapters)
    for name, value in base.named_parameters():
        wrapped = f"base_model.model.{name}"
        if wrapped not in trained:  # a layer LoRA wraps keeps its weight under base_layer
            wrapped = wrapped.replace(".weight", ".base_layer.weight")
        torch.testing.assert_close(trained[wrapped], value)
        assert not trained[wrapped].requires_grad
    assert any(trained[name].abs().sum() > 0 for name in adapters if "lora_B" in name)  # B starts at 0 and moved
    input_ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 10, 11, 12]])  # one pair: prompt [5, 6], two completions
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
             "completion_mask": torch.tensor([[False, False, True, True, True]] * 2)}
    reference = module.reference.token_logprobs(PairBatch.of(batch))
    expected = torch.log_softmax(base(input_ids).logits[:, 1:4], -1).gather(-1, input_ids[:, 2:, None]).squeeze(-1)
    torch.testing.assert_close(reference.logps[:, 2:], expected, rtol=1e-5, atol=1e-5)


def test_sft_adapter_is_the_frozen_reference_and_the_start_of_the_policy(tiny_checkpoint, pairs_file, tmp_path):
    first, _, _ = fit(tiny_checkpoint, pairs_file, tmp_path / "sft", peft=lora(init_lora_weights=False), steps=1)
    first.policy.save_pretrained(tmp_path / "adapter")
    sft_adapter = str(tmp_path / "adapter" / "policy")  # peft saves a named adapter in a subdirectory
    module, _, _ = fit(tiny_checkpoint, pairs_file, tmp_path / "dpo", sft_adapter=sft_adapter, steps=2)
    saved = {name: value for name, value in first.policy.named_parameters() if ".policy." in name}
    now = dict(module.policy.named_parameters())
    for name, value in saved.items():
        frozen = now[name.replace(".policy.", ".reference.")]
        torch.testing.assert_close(frozen, value)
        assert not frozen.requires_grad
    assert any(not torch.equal(now[name], value) for name, value in saved.items())


def test_precomputed_reference_matches_and_skips_the_reference(tiny_checkpoint, pairs_file, tmp_path, monkeypatch):
    _, _, plain = fit(tiny_checkpoint, pairs_file, tmp_path / "plain")
    module, _, cached = fit(tiny_checkpoint, pairs_file, tmp_path / "first", precompute_reference=True)
    assert module.reference.model is None and module.reference.cache is not None
    torch.testing.assert_close(torch.tensor(cached), torch.tensor(plain), rtol=1e-5, atol=1e-6)

    def refuse(self, *args, **kwargs):
        raise AssertionError("the reference was constructed although its log-probs are cached")

    monkeypatch.setattr(FrozenCopy, "setup", refuse)
    _, _, again = fit(tiny_checkpoint, pairs_file, tmp_path / "second", precompute_reference=True)
    torch.testing.assert_close(torch.tensor(again), torch.tensor(plain), rtol=1e-5, atol=1e-6)


def test_reference_cache_is_rebuilt_when_data_or_model_changes_or_breaks(tiny_checkpoint, tmp_path):
    model_dir = save_tiny_checkpoint(tmp_path / "model")
    data_file = write_pairs(tmp_path / "pairs.jsonl", count=16)
    first, _, _ = fit(model_dir, data_file, tmp_path / "a", steps=1, precompute_reference=True)
    key = first.reference.cache.key
    write_pairs(data_file, count=20)
    changed_data, _, _ = fit(model_dir, data_file, tmp_path / "b", steps=1, precompute_reference=True)
    assert changed_data.reference.cache.key != key
    save_tiny_checkpoint(model_dir, seed=1)  # new weights
    changed_model, _, _ = fit(model_dir, data_file, tmp_path / "c", steps=1, precompute_reference=True)
    assert changed_model.reference.cache.key not in (key, changed_data.reference.cache.key)
    stored = changed_model.reference.cache.directory / "train.pt"
    stored.write_bytes(stored.read_bytes()[: stored.stat().st_size // 2])  # truncated by a crash
    with pytest.warns(UserWarning, match="unusable"):
        rebuilt, _, _ = fit(model_dir, data_file, tmp_path / "d", steps=1, precompute_reference=True)
    assert rebuilt.reference.cache.key == changed_model.reference.cache.key and stored.stat().st_size > 0


@pytest.mark.parametrize("adapter", [False, True], ids=["full", "lora"])
def test_export_loads_with_transformers_and_gives_the_same_logits(adapter, tiny_checkpoint, pairs_file, tmp_path):
    module, trainer, _ = fit(tiny_checkpoint, pairs_file, tmp_path, **({"peft": lora()} if adapter else {}))
    checkpoint = Path(trainer.checkpoint_callback.best_model_path)
    export_checkpoint(checkpoint, tmp_path / "exported")
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "exported")
    input_ids = torch.tensor([[5, 6, 7, 8, 9]])
    module.policy.eval()
    torch.testing.assert_close(exported(input_ids).logits, module.policy(input_ids).logits, rtol=1e-4, atol=1e-5)
    end_of_fit = AutoModelForCausalLM.from_pretrained(Path(trainer.log_dir) / "huggingface")
    torch.testing.assert_close(end_of_fit(input_ids).logits, module.policy(input_ids).logits, rtol=1e-4, atol=1e-5)
    if adapter:
        export_checkpoint(checkpoint, tmp_path / "adapter", merge=False)
        on_base = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_checkpoint), tmp_path / "adapter")
        torch.testing.assert_close(on_base(input_ids).logits, module.policy(input_ids).logits, rtol=1e-4, atol=1e-5)


def test_tr_dpo_soft_update(tiny_checkpoint, pairs_file, tmp_path):
    """After step 2 with α = 0.5 the reference is the mean of its old weights and the policy's at that step."""
    seen = {}

    class Snapshot(ReferenceUpdate):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            before = {n: p.detach().clone() for n, p in pl_module.reference.model.named_parameters()}
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            if trainer.global_step == 2:
                seen["before"] = before
                seen["policy"] = {n: p.detach().clone() for n, p in pl_module.policy.named_parameters()}
                seen["after"] = {n: p.detach().clone() for n, p in pl_module.reference.model.named_parameters()}

    fit(tiny_checkpoint, pairs_file, tmp_path, steps=3, callbacks=[Snapshot(every_n_steps=2, alpha=0.5)])
    for name, after in seen["after"].items():
        torch.testing.assert_close(after, 0.5 * seen["before"][name] + 0.5 * seen["policy"][name])
    assert any(not torch.equal(seen["after"][n], seen["before"][n]) for n in seen["after"])


def test_tr_dpo_refuses_a_run_without_separate_reference(tiny_checkpoint, pairs_file, tmp_path):
    with pytest.raises(ValueError, match="separate reference"):
        fit(tiny_checkpoint, pairs_file, tmp_path, peft=lora(), callbacks=[ReferenceUpdate(every_n_steps=1)])


def test_gradient_checkpointing_gives_the_same_training(tiny_checkpoint, pairs_file, tmp_path):
    _, _, plain = fit(tiny_checkpoint, pairs_file, tmp_path / "plain")
    _, _, checkpointed = fit(tiny_checkpoint, pairs_file, tmp_path / "ckpt", gradient_checkpointing=True)
    torch.testing.assert_close(torch.tensor(checkpointed), torch.tensor(plain), rtol=1e-5, atol=1e-6)


def test_export_command(tiny_checkpoint, pairs_file, tmp_path):
    import subprocess
    import sys

    _, trainer, _ = fit(tiny_checkpoint, pairs_file, tmp_path, steps=1)
    result = subprocess.run([sys.executable, "-m", "lightpref", "export", trainer.checkpoint_callback.best_model_path,
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "out").config.num_hidden_layers == 2
    missing = subprocess.run([sys.executable, "-m", "lightpref", "export", str(tmp_path / "nope.ckpt"),
                              str(tmp_path / "x")], capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "no checkpoint at" in missing.stderr


def test_quantisation_needs_an_adapter_and_says_what_is_missing(tiny_checkpoint):
    with pytest.raises(ValueError, match="model.quantization_bits` needs an adapter"):
        PreferenceModule(str(tiny_checkpoint), quantization_bits=4)
    module = PreferenceModule(str(tiny_checkpoint), quantization_bits=4, peft=lora())
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs a CUDA GPU and the bitsandbytes package"):
            module.configure_model()


@pytest.mark.slow
def test_compiled_decoder_gives_the_same_loss_and_gradients(tiny_checkpoint):
    """`model.compile` runs the decoder through torch.compile (inductor, a C++ compiler on CPU); ~15 s to compile."""
    plain, compiled = PreferenceModule(str(tiny_checkpoint)), PreferenceModule(str(tiny_checkpoint), compile=True)
    plain.configure_model()
    compiled.configure_model()
    input_ids = torch.randint(4, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
             "completion_mask": torch.arange(12).expand(2, 12) >= 6}
    (_, plain_loss), (_, compiled_loss) = plain(batch), compiled(batch)
    plain_loss.backward()
    compiled_loss.backward()
    torch.testing.assert_close(compiled_loss, plain_loss)
    plain_grads = {name: p.grad for name, p in plain.policy.named_parameters()}
    for name, parameter in compiled.policy.named_parameters():
        torch.testing.assert_close(parameter.grad, plain_grads[name], rtol=1e-4, atol=1e-5)


def test_reference_cache_follows_the_weights_not_their_size_and_mtime(tmp_path, caplog):
    """Policy = reference gives DPO loss ln 2 at step 1. Weights rewritten in place with the same sizes and
    modification times must not reuse the cache of the old weights (which gave 0.748 here); an unchanged run
    reuses the cache and says so."""
    model_dir = save_tiny_checkpoint(tmp_path / "model")
    data_file = write_pairs(tmp_path / "pairs.jsonl", count=16)
    fit(model_dir, data_file, tmp_path / "a", steps=1, precompute_reference=True)
    stats = {path: path.stat() for path in model_dir.iterdir()}
    save_tiny_checkpoint(model_dir, seed=1)
    for path, stat in stats.items():
        assert path.stat().st_size == stat.st_size
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    _, _, losses = fit(model_dir, data_file, tmp_path / "b", steps=1, precompute_reference=True)
    assert losses[0] == pytest.approx(math.log(2), abs=1e-6)
    with caplog.at_level(logging.INFO):
        _, _, again = fit(model_dir, data_file, tmp_path / "c", steps=1, precompute_reference=True)
    assert "reusing the reference log-probs cached in" in caplog.text and again == losses
