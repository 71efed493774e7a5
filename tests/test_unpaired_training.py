"""Unpaired losses through the module: the packed forward of completions and mismatched completions equals the plain
padded forward and KTO's equation on it, apo_zero_unpaired scores no mismatched rows, the precomputed and LoRA
references score unpaired batches exactly, losses and data of different shapes are refused early, and the
label-balance warning reaches the user."""

import math

import pytest
import torch
from lightning.pytorch import Trainer
from transformers import AutoModelForCausalLM

from lightpref.batch import UnpairedBatch
from lightpref.data import PreferenceDataModule
from lightpref.data.unpaired import collate_unpaired
from lightpref.testing import save_tiny_checkpoint
from lightpref.training.forward import completion_logprobs
from lightpref.training.module import PreferenceModule

RECORDS = [{"prompt": f"Human: question {i}? Assistant:", "completion": f" The answer is {i}." + " Sure." * (i % 3),
            "label": i % 3 != 2} for i in range(8)]


@pytest.fixture(scope="module")
def other_checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("other"), seed=1)


def rows(seed=0):
    generator = torch.Generator().manual_seed(seed)

    def ids(count):
        return torch.randint(4, 300, (count,), generator=generator).tolist()

    shapes = [(6, 3, 5, True), (3, 4, 2, False), (5, 2, 6, True), (4, 5, 3, False)]
    return [{"prompt_ids": ids(p), "completion_ids": [ids(c), ids(m)], "label": label} for p, c, m, label in shapes]


def plain_sums(model, batch):
    with torch.no_grad():
        tokens = completion_logprobs(model, batch.input_ids, batch.attention_mask, batch.completion_mask)
    return (tokens.logps * tokens.mask).sum(-1).double()


def test_kto_step_equals_the_plain_forward_and_the_equation(tiny_checkpoint, other_checkpoint):
    """Policy = the tiny model, reference = another one, so ρ ≠ 0. From the plain padded forward of every row:
    ρ_b = own-row sums, z₀ = max(0, mean of the mismatched rows' log-ratios), loss_b = 1 − σ(β(ρ_b − z₀)) for a
    desirable b, 1 − σ(β(z₀ − ρ_b)) otherwise; the module's packed shared-prompt forward gives the same loss, kl and
    rewards; its gradient is that of the plain computation."""
    batch = collate_unpaired(rows(), pad_token_id=0)
    module = PreferenceModule(str(tiny_checkpoint), loss="kto", reference=str(other_checkpoint), logits_chunk_size=4)
    module.configure_model()
    metrics, loss = module(batch)
    policy = plain_sums(AutoModelForCausalLM.from_pretrained(tiny_checkpoint), batch)
    reference = plain_sums(AutoModelForCausalLM.from_pretrained(other_checkpoint), batch)
    ratios = policy - reference  # (2B,)
    own, mismatched = ratios[0::2], ratios[1::2]
    z0 = max(0.0, mismatched.mean().item())
    labels = [True, False, True, False]
    expected = [1 - 1 / (1 + math.exp(-0.1 * ((rho - z0) if label else (z0 - rho))))
                for rho, label in zip(own.tolist(), labels, strict=True)]
    assert metrics["kl"].item() == pytest.approx(z0, abs=1e-5)
    assert metrics["loss"].tolist() == pytest.approx(expected, abs=1e-6)
    assert loss.item() == pytest.approx(sum(expected) / 4, abs=1e-6)
    assert metrics["rewards/chosen"].tolist() == pytest.approx((0.1 * own[0::2]).tolist(), abs=1e-6)
    assert metrics["rewards/rejected"].tolist() == pytest.approx((0.1 * own[1::2]).tolist(), abs=1e-6)
    assert metrics["logps/chosen"].tolist() == pytest.approx(policy[0::2][0::2].tolist(), abs=1e-4)
    assert metrics["rewards/margins"].item() == pytest.approx(0.1 * (own[0::2].mean() - own[1::2].mean()).item(),
                                                              abs=1e-6)


def test_apo_zero_unpaired_scores_no_mismatched_rows(tiny_checkpoint, monkeypatch):
    """The loss needs no KL estimate: the models see B rows, not 2B; KTO's see 2B (the policy's through the two-pass
    forward of lightpref.training.split_forward)."""
    import lightpref.training.packing
    import lightpref.training.split_forward

    batch = collate_unpaired(rows(), pad_token_id=0)
    seen = {}
    original = lightpref.training.packing.packed_completion_logprobs
    original_split = lightpref.training.split_forward.split_logprobs

    def counting(model, input_ids, *rest, **options):
        seen[name].append(input_ids.shape[0])
        return original(model, input_ids, *rest, **options)

    def counting_split(model, batch, *rest):
        seen[name].append(batch.input_ids.shape[0])
        return original_split(model, batch, *rest)

    monkeypatch.setattr(lightpref.training.packing, "packed_completion_logprobs", counting)
    monkeypatch.setattr(lightpref.training.split_forward, "split_logprobs", counting_split)
    for name in ("apo_zero_unpaired", "kto"):
        module = PreferenceModule(str(tiny_checkpoint), loss=name, logits_chunk_size=4)
        module.configure_model()
        seen[name] = []
        metrics, _ = module(batch)
        assert metrics["loss"].shape == (4,)
    assert seen == {"apo_zero_unpaired": [4, 4], "kto": [8, 8]}


@pytest.mark.parametrize("reference", ["precomputed", "lora"])
def test_precomputed_and_adapter_references_score_unpaired_batches_exactly(tiny_checkpoint, other_checkpoint,
                                                                           tmp_path, reference):
    """The reference's per-token log-probs of every row of unpaired batches — completions and mismatched ones —
    precomputed and read back by example index (from another model), or the LoRA base with the adapter off, equal
    the plain padded forward of that model; and a loss that needs no mismatched rows reads the completions' only."""
    from peft import LoraConfig

    options = {"precompute_reference": True, "reference_cache_dir": str(tmp_path / "reference"),
               "reference": str(other_checkpoint)} if reference == "precomputed" else {
        "peft": LoraConfig(r=4, target_modules=["q_proj", "v_proj"])}
    data = PreferenceDataModule(tokenizer=str(tiny_checkpoint), records=RECORDS, batch_size=3, shuffle=False,
                                cache_dir=str(tmp_path / "cache"), val_fraction=0.5)
    model = PreferenceModule(str(tiny_checkpoint), loss="kto", logits_chunk_size=4, **options)
    trainer = Trainer(accelerator="cpu", enable_progress_bar=False, logger=False, enable_checkpointing=False,
                      default_root_dir=tmp_path, enable_model_summary=False)
    trainer.validate(model, data)
    plain_model = AutoModelForCausalLM.from_pretrained(other_checkpoint if reference == "precomputed"
                                                       else tiny_checkpoint)
    batches = list(data.val_dataloader())
    assert batches and all(isinstance(batch, UnpairedBatch) for batch in batches)
    for batch in batches:
        with torch.no_grad():
            expected = completion_logprobs(plain_model, batch.input_ids, batch.attention_mask, batch.completion_mask)
            found = model.reference.token_logprobs(batch)
            completions = model.reference.token_logprobs(batch.completions_only())
        torch.testing.assert_close(found.logps, expected.logps, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(completions.logps, expected.logps[0::2], atol=1e-5, rtol=1e-5)
        assert (found.logps[batch.completion_mask] != 0).all()
    if reference == "precomputed":
        assert model.reference.model is None and any((tmp_path / "reference").rglob("val.pt"))


@pytest.mark.parametrize(("loss", "records", "message"), [
    ("kto", [{"prompt": "q", "chosen": " a", "rejected": " b"}] * 4,
     "consumes 'unpaired' records, which cannot be formed from the data's shape 'pairs'"),
    ("dpo", RECORDS, "consumes 'pairs' records, which cannot be formed from the data's shape 'unpaired'"),
])
def test_a_loss_and_data_of_different_shapes_stop_before_loading(tiny_checkpoint, tmp_path, loss, records, message):
    model = PreferenceModule(str(tiny_checkpoint), loss=loss)
    data = PreferenceDataModule(tokenizer=str(tiny_checkpoint), records=records, cache_dir=str(tmp_path))
    trainer = Trainer(max_steps=1, accelerator="cpu", enable_progress_bar=False, logger=False,
                      enable_checkpointing=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match=message):
        trainer.fit(model, data)
    assert model.policy is None and not any(tmp_path.iterdir())


def test_kto_trains_through_the_trainer_and_warns_about_the_label_balance(tiny_checkpoint, tmp_path):
    """6 desirable and 2 undesirable examples at λ_D = λ_U = 1: λ_D·n_D / (λ_U·n_U) = 3, outside [1, 4/3], so a
    warning names the weights that would suit; training logs TRL's names and moves the policy, not the reference."""
    model = PreferenceModule(str(tiny_checkpoint), loss="kto", export_dir=None,
                             optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2))
    data = PreferenceDataModule(tokenizer=str(tiny_checkpoint), records=RECORDS, batch_size=4,
                                cache_dir=str(tmp_path / "cache"))
    trainer = Trainer(max_steps=2, accelerator="cpu", enable_progress_bar=False, logger=False,
                      enable_checkpointing=False, default_root_dir=tmp_path, log_every_n_steps=1)
    with pytest.warns(UserWarning, match=r"6 desirable and 2 undesirable examples give λ_D·n_D / \(λ_U·n_U\) = 3\.00"):
        trainer.fit(model, data)
    metrics = trainer.callback_metrics
    assert {"loss", "kl", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected"} <= set(metrics)
    before = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).state_dict()
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(model.policy.state_dict()[name], before[name])
    torch.testing.assert_close(model.reference.model.state_dict()[name], before[name])


@pytest.mark.slow
def test_shipped_kto_config_trains_on_the_shipped_unpaired_examples(tiny_checkpoint, tmp_path):
    """configs/kto.yaml as shipped (the tiny model in place of SmolLM2, two steps): the shipped unpaired examples,
    960 = 480 pairs unpaired, 10% held out; half of them desirable; KTO's metrics logged in training and validation."""
    from pathlib import Path

    from lightpref.cli import build_cli

    repo = Path(__file__).resolve().parents[1]
    cli = build_cli(["fit", "--config", str(repo / "configs" / "kto.yaml"), "--model.pretrained", str(tiny_checkpoint),
                     "--model.gguf_file", "null", "--trainer.max_steps", "2", "--trainer.val_check_interval", "1",
                     "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
                     "--model.export_dir", "null", "--data.cache_dir", str(tmp_path / "cache")])
    data = cli.datamodule
    assert data.shape == "unpaired" and len(data.train_dataset) + len(data.val_dataset) == 960
    assert sum(data.train_dataset["label"]) + sum(data.val_dataset["label"]) == 480
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["loss"]) and {"kl", "val/kl", "val/rewards/chosen"} <= set(metrics)
