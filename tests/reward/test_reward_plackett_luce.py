"""Plackett–Luce over ranked groups' scores: hand-derived values (K = 2 is Bradley–Terry, ties do not depend on
their order), the group forward's scores equal the plain forward's in value and gradient, and RewardModule trains
on ranked data with it."""

import json
import math
import warnings

import pytest
import torch
from reward_support import tiny_reward_model

from lightpref.data.groups import TokenizedGroup, collate_groups
from lightpref.reward.losses import GroupScores, PairScores, build
from lightpref.reward.scoring import packed_scores, plain_scores


def group_scores(scores, ratings, groups=None):
    groups = [0] * len(scores) if groups is None else groups
    return GroupScores(torch.tensor(scores), torch.tensor(groups), torch.tensor(ratings, dtype=torch.float32))


def test_two_completions_are_bradley_terry():
    loss = build("plackett_luce")(group_scores([1.5, -0.25, 0.3, 0.9], [2.0, 1.0, 0.0, 4.0], [0, 0, 1, 1])).losses
    bradley_terry = build("bradley_terry")(PairScores(torch.tensor([1.5, 0.9]), torch.tensor([-0.25, 0.3]))).losses
    torch.testing.assert_close(loss, bradley_terry)
    torch.testing.assert_close(loss[0], torch.tensor(-math.log(1 / (1 + math.exp(-1.75)))))


def test_a_strict_ranking_of_three_by_hand():
    """Ratings 3 > 2 > 1 on scores (1, 0, 2): −[(1 − log(e + 1 + e²)) + (0 − log(1 + e²)) + 0]
    = (log 11.10734 − 1) + log 8.38906 = 1.40761 + 2.12693 = 3.53454."""
    loss = build("plackett_luce")(group_scores([1.0, 0.0, 2.0], [3.0, 2.0, 1.0])).losses
    torch.testing.assert_close(loss, torch.tensor([3.53454]), atol=1e-5, rtol=0)


def test_ties_share_their_stage_and_do_not_depend_on_order():
    """Ratings (2, 1, 1) on scores (0, 1, 2): stage 1 picks 0 from all, −log(1 + e + e²) = −2.40761; the tied two
    each pick among both, 1 − log(e + e²) = −1.31326 and 2 − log(e + e²) = −0.31326: loss 4.03413."""
    loss = build("plackett_luce")
    value = loss(group_scores([0.0, 1.0, 2.0], [2.0, 1.0, 1.0])).losses
    torch.testing.assert_close(value, torch.tensor([4.03413]), atol=1e-5, rtol=0)
    torch.testing.assert_close(loss(group_scores([0.0, 2.0, 1.0], [2.0, 1.0, 1.0])).losses, value)


def test_groups_of_a_batch_are_scored_apart():
    together = build("plackett_luce")(group_scores([1.0, 0.0, 2.0, 0.5, 0.2], [3, 2, 1, 0, 1], [0, 0, 0, 1, 1]))
    first = build("plackett_luce")(group_scores([1.0, 0.0, 2.0], [3, 2, 1])).losses
    second = build("plackett_luce")(group_scores([0.5, 0.2], [0, 1])).losses
    torch.testing.assert_close(together.losses, torch.cat([first, second]))


def ranked_batch(seed=0):
    generator = torch.Generator().manual_seed(seed)

    def ids(count):
        return torch.randint(4, 320, (count,), generator=generator).tolist()

    return collate_groups([TokenizedGroup(ids(6), [ids(3), ids(5), ids(2)], [1.0, 3.0, 2.0]),
                           TokenizedGroup(ids(2), [ids(4), ids(1)], [0.0, 1.0]),
                           TokenizedGroup(ids(9), [ids(2), ids(2), ids(7), ids(1)], [2.0, 2.0, 0.0, 1.0])],
                          pad_token_id=0)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "packed"])
def test_group_scores_equal_the_plain_forward_in_value_and_gradient(implementation, shared):
    model, batch = tiny_reward_model(), ranked_batch()
    model.config._attn_implementation = implementation
    weights = torch.randn(batch.input_ids.shape[0], generator=torch.Generator().manual_seed(1))
    parameters = list(model.parameters())
    plain = plain_scores(model, batch.input_ids, batch.attention_mask)
    plain_gradient = torch.autograd.grad((plain * weights).sum(), parameters)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to the plain forward
        scores = packed_scores(model, batch.input_ids, batch.attention_mask, batch.completion_mask,
                               shared_prompt=shared, max_packed_length=40, groups=batch.group_ids)
    gradient = torch.autograd.grad((scores * weights).sum(), parameters)
    torch.testing.assert_close(scores, plain, atol=1e-5, rtol=1e-5)
    for mine, reference in zip(gradient, plain_gradient, strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-5, rtol=1e-4)


def test_module_loss_and_metrics_on_ranked_groups(tiny_checkpoint):
    from lightpref.reward.module import RewardModule

    module = RewardModule(str(tiny_checkpoint), loss="plackett_luce")
    module.configure_model()
    batch = ranked_batch()
    with torch.no_grad():
        metrics, loss = module(batch)
        scores = plain_scores(module.reward_model, batch.input_ids, batch.attention_mask)
    expected = build("plackett_luce")(GroupScores(scores, batch.group_ids, batch.scores)).losses.mean()
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    # the ordered pairs inside the groups: (1>0, 1>2, 2>0), (4>3), (5>7, 5>8, 6>7, 6>8, 8>7)
    better = torch.tensor([1, 1, 2, 4, 5, 5, 6, 6, 8])
    worse = torch.tensor([0, 2, 0, 3, 7, 8, 7, 8, 7])
    torch.testing.assert_close(metrics["accuracy"], (scores[better] > scores[worse]).float())
    torch.testing.assert_close(metrics["margin"], scores[better] - scores[worse], atol=1e-5, rtol=1e-5)


def test_a_pair_loss_on_ranked_data_is_refused(tiny_checkpoint):
    from lightpref.reward.module import RewardModule

    module = RewardModule(str(tiny_checkpoint), loss="bradley_terry")
    module.configure_model()
    with pytest.raises(ValueError, match="the data are ranked groups, but the reward loss BradleyTerry takes pairs"):
        module(ranked_batch())


def test_fit_on_ranked_data_lowers_the_plackett_luce_loss(tiny_checkpoint, tmp_path):

    records = [{"prompt": f"Question {i}?", "completions": [f" The answer is {i}.", " Maybe.", " No idea."],
                "scores": [3.0, 2.0, 1.0]} for i in range(12)]
    data = tmp_path / "ranked.jsonl"
    data.write_text("".join(json.dumps(record) + "\n" for record in records))
    args = ["fit", "--model.class_path", "RewardModule", "--model.pretrained", str(tiny_checkpoint),
            "--model.loss", "plackett_luce", "--model.export_dir", "null", "--data.train_files", str(data),
            "--data.val_fraction", "0.25", "--data.max_length", "64", "--data.max_prompt_length", "32",
            "--data.batch_size", "3", "--trainer.max_steps", "12", "--trainer.accelerator", "cpu",
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(tmp_path / "run"),
            "--model.optimizer", "torch.optim.AdamW", "--model.optimizer.lr", "3e-3"]
    from lightpref.commands.trainer_cli import build_cli

    before = build_cli(["validate", *args[1:]]).trainer.callback_metrics
    after = build_cli(args).trainer.callback_metrics
    assert after["val/loss"] < 0.5 * before["val/loss"] and after["val/accuracy"] == 1.0
