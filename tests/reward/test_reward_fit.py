"""Reward-model training through the command line: validate, fit, export, load with SequenceClassifierReward;
LoRA trains the adapter and the score head only."""

import json

import pytest
import torch
from reward_support import fit_reward

from lightpref.cli import main
from lightpref.commands.trainer_cli import build_cli
from lightpref.data.collate import collate_pairs
from lightpref.data.tokenize import tokenize_pair
from lightpref.models.pretrained import load_tokenizer
from lightpref.reward.scoring import plain_scores


def run(command, checkpoint, pairs, root, *extra):
    from lightpref.reward.module import RewardModule

    args = [command, "--model.pretrained", str(checkpoint), "--data.train_files", str(pairs),
            "--data.val_fraction", "0.25", "--data.max_length", "64", "--data.max_prompt_length", "32",
            "--trainer.default_root_dir", str(root), "--trainer.accelerator", "cpu", "--trainer.max_steps", "24",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--model.optimizer", "torch.optim.AdamW", "--model.optimizer.lr", "3e-3", *extra]
    return build_cli(args, model_class=RewardModule)


def test_fit_learns_to_rank_and_exports_a_model_sequence_classifier_reward_loads(tiny_checkpoint, pairs_file,
                                                                                 tmp_path):
    before = run("validate", tiny_checkpoint, pairs_file, tmp_path / "before").trainer.callback_metrics
    cli = run("fit", tiny_checkpoint, pairs_file, tmp_path / "run")
    after = cli.trainer.callback_metrics
    assert after["val/accuracy"] == 1.0 and after["accuracy"] > 0.9
    assert after["val/loss"] < 0.5 * before["val/loss"]
    assert after["val/margin"] > before["val/margin"] + 1.0
    mean = (after["val/rewards/chosen"] + after["val/rewards/rejected"]) / 2
    torch.testing.assert_close(after["val/mean_reward"], mean)

    export = tmp_path / "run" / "lightning_logs" / "version_0" / "huggingface"
    config = json.loads((export / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and len(config["id2label"]) == 1
    from transformers import AutoModelForSequenceClassification

    exported = AutoModelForSequenceClassification.from_pretrained(export)
    tokenizer = load_tokenizer(str(tiny_checkpoint))
    records = [json.loads(line) for line in pairs_file.read_text().splitlines()[:4]]
    from lightpref.data.formats import PreferenceExample

    batch = collate_pairs([tokenize_pair(PreferenceExample(r["prompt"], r["chosen"], r["rejected"]), tokenizer, 64, 32)
                           for r in records], tokenizer.pad_token_id)
    module = cli.model
    with torch.no_grad():
        trained = plain_scores(module.reward_model, batch.input_ids, batch.attention_mask)
        torch.testing.assert_close(plain_scores(exported, batch.input_ids, batch.attention_mask), trained)
        logits = exported(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits  # (N, 1)
        torch.testing.assert_close(logits[:, 0], trained, atol=1e-5, rtol=1e-5)

    from lightpref.evaluation import SequenceClassifierReward

    reward = SequenceClassifierReward(str(export), chat_template=False, device="cpu")
    prompts = [r["prompt"] for r in records]
    chosen = reward(prompts, [r["chosen"] for r in records])
    rejected = reward(prompts, [r["rejected"] for r in records])
    assert (chosen > rejected).all()


def test_reward_losses_are_listed(capsys):
    assert main(["reward", "losses"]) == 0
    assert "bradley_terry" in capsys.readouterr().out


def test_lora_trains_the_adapter_and_the_score_head_only(tiny_checkpoint, pairs_file, tmp_path):
    from peft import LoraConfig

    peft = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    module, _ = fit_reward(tiny_checkpoint, pairs_file, tmp_path, steps=3, peft=peft, export_dir=str(tmp_path / "hf"))
    start, _ = fit_reward(tiny_checkpoint, pairs_file, tmp_path / "zero", steps=0, peft=peft)
    initial = dict(start.reward_model.named_parameters())
    changed = {name for name, value in module.reward_model.named_parameters()
               if not torch.equal(value, initial[name])}
    trainable = {name for name, value in module.reward_model.named_parameters() if value.requires_grad}
    assert changed == trainable
    assert any("lora_B" in name for name in changed)
    assert {name for name in changed if "lora_" not in name} == {"base_model.model.score.modules_to_save.policy.weight"}
    from transformers import AutoModelForSequenceClassification

    exported = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf")
    torch.testing.assert_close(exported.score.weight,
                               dict(module.reward_model.named_parameters())[
                                   "base_model.model.score.modules_to_save.policy.weight"])


def test_a_classifier_with_two_labels_is_refused(tmp_path):
    from transformers import LlamaForSequenceClassification

    from lightpref.models.pretrained import ModelSource
    from lightpref.reward.model import load_reward_model
    from lightpref.testing import tiny_model

    config = tiny_model().config
    config.num_labels = 2
    LlamaForSequenceClassification(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="classifier with 2 labels; a reward model has one"):
        load_reward_model(ModelSource(str(tmp_path)))


def test_module_loss_is_bradley_terry_of_its_scores_with_the_batch_margin(tiny_checkpoint):
    """The module's loss is the mean of −logσ(r⁺ − r⁻ − m) over the packed scores, with m from the batch."""
    from torch.nn import functional

    from lightpref.data.tokenize import TokenizedPair
    from lightpref.reward.module import RewardModule

    module = RewardModule(str(tiny_checkpoint))
    module.configure_model()
    batch = collate_pairs([TokenizedPair([5, 6, 7], [8, 9, 3], [11, 3]), TokenizedPair([5, 12], [13, 3], [14, 15, 3])],
                          pad_token_id=0)
    margin = torch.tensor([0.5, -1.0])
    mapping = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
               "completion_mask": batch.completion_mask, "margin": margin}
    with torch.no_grad():
        metrics, loss = module(mapping)
        scores = plain_scores(module.reward_model, batch.input_ids, batch.attention_mask)
    chosen, rejected = scores[:2], scores[2:]
    torch.testing.assert_close(loss, -functional.logsigmoid(chosen - rejected - margin).mean())
    torch.testing.assert_close(metrics["margin"], chosen - rejected)
    torch.testing.assert_close(metrics["accuracy"], (chosen > rejected).float())
