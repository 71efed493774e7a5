"""Losses on ranked groups through the module: pairs formed inside a group share its forward exactly, K = 2 groups
train exactly as pairs, listwise losses see whole groups, and a loss that cannot use the data stops the run early."""

import pytest
import torch
from lightning.pytorch import Trainer

from lightpref.batch import GroupBatch
from lightpref.data import PreferenceDataModule
from lightpref.data.collate import collate_pairs
from lightpref.data.groups import TokenizedGroup, collate_groups
from lightpref.data.tokenize import TokenizedPair
from lightpref.losses import PreferenceLoss
from lightpref.training.group_pairs import AllPairs, BestVsRest, BestVsWorst
from lightpref.training.module import PreferenceModule
from lightpref.views import InstructionPrefix


def random_groups(shape, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def ids(count):
        return torch.randint(4, 300, (count,), generator=generator).tolist()

    return [TokenizedGroup(ids(p), [ids(c) for c in cs], scores) for p, cs, scores in shape]


GROUPS = [(6, [3, 5, 2, 4], [0.5, 2.0, 1.0, 2.0]), (3, [4, 2, 6], [1.0, 3.0, 2.0])]


def module(checkpoint, loss="dpo", **options):
    built = PreferenceModule(str(checkpoint), loss=loss, logits_chunk_size=4, **options)
    built.configure_model()
    return built


def expanded_pairs(groups, rule):
    """The pairs the rule forms, written out as a plain pair batch (the prompt repeated per pair)."""
    rows = [(group, completion) for group in groups for completion in group.completion_ids]
    batch = collate_groups(groups, pad_token_id=0)
    better, worse = rule(batch.group_ids, batch.scores)
    pairs = [TokenizedPair(rows[b][0].prompt_ids, rows[b][1], rows[w][1]) for b, w in zip(better.tolist(),
                                                                                          worse.tolist(), strict=True)]
    return collate_pairs(pairs, pad_token_id=0), len(pairs)


@pytest.mark.parametrize("rule", [AllPairs(), AllPairs(min_gap=1.0), BestVsRest(), BestVsWorst()], ids=repr)
def test_pairs_of_a_group_equal_the_expanded_pairs_in_value_and_gradient(tiny_checkpoint, rule):
    """DPO on the pairs a rule forms inside two groups (K = 4 with a tie, K = 3), from one group forward, equals DPO
    on the same pairs expanded into a pair batch, loss and gradient. Scores (0.5, 2, 1, 2) and (1, 3, 2). AllPairs:
    5 + 3 pairs; min_gap 1: 4 + 3 (the gap 0.5 falls out); BestVsRest: 2 + 2 (the first of the tied best against the
    two below it; never its tie); BestVsWorst: 1 + 1."""
    groups = random_groups(GROUPS)
    model = module(tiny_checkpoint, group_pairs=rule)
    metrics, loss = model(collate_groups(groups, pad_token_id=0))
    gradient = torch.autograd.grad(loss, list(model.policy.parameters()))
    pairs, count = expanded_pairs(groups, rule)
    assert count == {"AllPairs(min_gap=None)": 8, "AllPairs(min_gap=1.0)": 7, "BestVsRest()": 4,
                     "BestVsWorst()": 2}[repr(rule)]
    expected_metrics, expected = model(pairs)
    expected_gradient = torch.autograd.grad(expected, list(model.policy.parameters()))
    assert metrics["loss"].shape == (count,)
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(metrics["rewards/margins"], expected_metrics["rewards/margins"], atol=1e-6, rtol=1e-5)
    for mine, theirs in zip(gradient, expected_gradient, strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=1e-4)


def test_groups_of_two_train_exactly_as_pairs_step_by_step(tiny_checkpoint):
    """Three optimiser steps of DPO on K = 2 groups (one pair each) and on the same data as pairs: the same losses
    and the same weights after every step."""
    shape = [(5, [3, 4], [1.0, 0.0]), (2, [6, 1], [0.0, 1.0]), (7, [2, 2], [2.0, -1.0])]
    groups = random_groups(shape, seed=3)
    pairs = [TokenizedPair(g.prompt_ids, *(g.completion_ids if g.scores[0] > g.scores[1] else g.completion_ids[::-1]))
             for g in groups]
    losses = {}
    for name, batch in (("groups", collate_groups(groups, 0)), ("pairs", collate_pairs(pairs, 0))):
        trained = module(tiny_checkpoint)
        optimizer = torch.optim.SGD(trained.policy.parameters(), lr=0.5)  # Adam would magnify float noise
        losses[name] = []
        for _ in range(3):
            _, loss = trained(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses[name].append(loss.item())
        losses[name + " weights"] = [parameter.detach().clone() for parameter in trained.policy.parameters()]
    assert losses["groups"] == pytest.approx(losses["pairs"], abs=1e-6)
    assert losses["groups"][0] != pytest.approx(losses["groups"][2], abs=1e-4)  # it trained
    for mine, theirs in zip(losses["groups weights"], losses["pairs weights"], strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=1e-5)


def test_plackett_luce_sees_whole_groups_and_a_pair_as_a_group_of_two(tiny_checkpoint):
    """On a group batch it gets (G, K) records (one loss per group); on a pair batch each pair is a group of two and
    the loss equals DPO's."""
    model = module(tiny_checkpoint, loss="plackett_luce")
    metrics, _ = model(collate_groups(random_groups(GROUPS), 0))
    assert metrics["loss"].shape == (2,)
    assert (metrics["rewards/accuracies"] >= 0).all()
    pairs = collate_pairs([TokenizedPair([5, 6], [7, 8], [9]), TokenizedPair([4], [3, 2], [2, 3, 1])], 0)
    listwise_metrics, listwise = model(pairs)
    dpo_metrics, dpo = module(tiny_checkpoint, loss="dpo")(pairs)
    torch.testing.assert_close(listwise, dpo)
    torch.testing.assert_close(listwise_metrics["logps/rejected"], dpo_metrics["logps/rejected"])


class Unpaired(PreferenceLoss):
    """A loss of a shape no data of lightpref has."""

    consumes = "unpaired"


class WithView(PreferenceLoss):
    views = {"kind": InstructionPrefix("Be kind.")}


RANKED_RECORDS = [{"prompt": f"q{i}?", "completions": [" yes", " no", " maybe"], "scores": [2, 0, 1]}
                  for i in range(4)]


@pytest.mark.parametrize(("loss", "options", "message"), [
    (Unpaired(), {}, "consumes 'unpaired' records, which cannot be formed from the data's shape 'ranked'"),
    (WithView(), {}, "extra prompt views"),
])
def test_a_loss_that_cannot_use_the_data_stops_before_tokenising_or_loading(tiny_checkpoint, tmp_path, loss, options,
                                                                          message):
    model = PreferenceModule(str(tiny_checkpoint), loss=loss, **options)
    data = PreferenceDataModule(tokenizer=str(tiny_checkpoint), records=RANKED_RECORDS, cache_dir=str(tmp_path))
    trainer = Trainer(max_steps=1, accelerator="cpu", enable_progress_bar=False, logger=False,
                      enable_checkpointing=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match=message):
        trainer.fit(model, data)
    assert model.policy is None  # no model loaded
    assert not any(tmp_path.iterdir())  # nothing tokenised


def test_ranked_records_train_through_the_trainer(tiny_checkpoint, tmp_path):
    model = PreferenceModule(str(tiny_checkpoint), optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2))
    data = PreferenceDataModule(tokenizer=str(tiny_checkpoint), records=RANKED_RECORDS * 2, batch_size=2,
                                cache_dir=str(tmp_path / "cache"), max_tokens_per_batch=40)
    trainer = Trainer(max_steps=2, accelerator="cpu", enable_progress_bar=False, logger=False,
                      enable_checkpointing=False, default_root_dir=tmp_path, log_every_n_steps=1)
    trainer.fit(model, data)
    assert data.shape == "ranked" and isinstance(next(iter(data.train_dataloader())), GroupBatch)
    assert torch.isfinite(trainer.callback_metrics["loss"])


@pytest.mark.slow
@pytest.mark.parametrize("config", ["ranked.yaml", "plackett_luce.yaml"])
def test_shipped_ranked_configs_train_on_the_shipped_ranked_examples(config, tiny_checkpoint, tmp_path):
    """The configs as shipped (the tiny model in place of SmolLM2, two steps): ranked data, groups of four, the
    config's loss and pairing rule."""
    from pathlib import Path

    from lightpref.cli import build_cli

    repo = Path(__file__).resolve().parents[1]
    cli = build_cli(["fit", "--config", str(repo / "configs" / config), "--model.pretrained", str(tiny_checkpoint),
                     "--model.gguf_file", "null", "--trainer.max_steps", "2", "--trainer.val_check_interval", "1",
                     "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
                     "--model.export_dir", "null", "--data.cache_dir", str(tmp_path / "cache"),
                     "--data.train_files", str(repo / "lightpref" / "examples" / "ranked.jsonl")])
    assert cli.datamodule.shape == "ranked" and len(cli.datamodule.train_dataset) == 216
    assert isinstance(cli.model.group_pairs, AllPairs)
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["loss"]) and "val/rewards/accuracies" in metrics


@pytest.mark.parametrize("reference", ["precomputed", "lora"])
def test_precomputed_and_adapter_references_score_groups_exactly(tiny_checkpoint, tmp_path, reference):
    """The reference's per-token log-probs of ranked groups — precomputed over the data and read back by group index
    (from another model, so they differ from the policy's), or the LoRA base with the adapter off — equal the plain
    padded forward of that model on every validation batch."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from lightpref.testing import save_tiny_checkpoint
    from lightpref.training.forward import completion_logprobs

    other = save_tiny_checkpoint(tmp_path / "other", seed=1)
    options = {"precompute_reference": True, "reference_cache_dir": str(tmp_path / "reference"),
               "reference": str(other)} if reference == "precomputed" else {
        "peft": LoraConfig(r=4, target_modules=["q_proj", "v_proj"])}
    data = PreferenceDataModule(tokenizer=str(tiny_checkpoint), records=RANKED_RECORDS, batch_size=2, shuffle=False,
                                cache_dir=str(tmp_path / "cache"), val_fraction=0.5)
    model = PreferenceModule(str(tiny_checkpoint), logits_chunk_size=4, **options)
    trainer = Trainer(accelerator="cpu", enable_progress_bar=False, logger=False, enable_checkpointing=False,
                      default_root_dir=tmp_path, enable_model_summary=False)
    trainer.validate(model, data)
    plain_model = AutoModelForCausalLM.from_pretrained(other if reference == "precomputed" else tiny_checkpoint)
    batches = list(data.val_dataloader())
    assert batches and all(isinstance(batch, GroupBatch) for batch in batches)
    for batch in batches:
        with torch.no_grad():
            expected = completion_logprobs(plain_model, batch.input_ids, batch.attention_mask, batch.completion_mask)
            found = model.reference.token_logprobs(batch)
        torch.testing.assert_close(found.logps, expected.logps, atol=1e-5, rtol=1e-5)
        assert (found.logps[batch.completion_mask] != 0).all()
    if reference == "precomputed":
        assert model.reference.model is None and any((tmp_path / "reference").rglob("val.pt"))
