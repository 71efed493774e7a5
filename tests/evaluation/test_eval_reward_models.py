"""Learned reward models and pairwise judges, on tiny random models: each value is checked against a direct forward
of the same model on the unpadded conversation, so padding, batching, templates and truncation cannot go wrong
silently."""

import logging

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from lightpref.evaluation import JudgeRanking, LanguageModelJudge, PairwiseJudge, SequenceClassifierReward
from lightpref.testing import tiny_tokenizer

PROMPTS = ["What is the capital of France?", [{"role": "user", "content": "How do I bake bread?"}], "Hello"]
COMPLETIONS = ["The capital of France is Paris.", "Mix flour, water and yeast.", "Sure, here is an answer"]


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory):
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=1, pad_token_id=0,
                         eos_token_id=tokenizer.eos_token_id)
    directory = tmp_path_factory.mktemp("tiny-reward-model")
    LlamaForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def direct_score(directory, ids):
    model = LlamaForSequenceClassification.from_pretrained(directory).eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, 0].item()


def test_reward_model_matches_a_direct_forward_of_each_templated_conversation(reward_model_dir):
    reward = SequenceClassifierReward(str(reward_model_dir), batch_size=2)  # 3 rows: a full and a partial batch
    scores = reward(PROMPTS, COMPLETIONS)
    assert scores.dtype == torch.float32 and scores.shape == (3,) and reward.dtype == "float32"
    tokenizer = tiny_tokenizer()
    for prompt, completion, score in zip(PROMPTS, COMPLETIONS, scores.tolist(), strict=True):
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        text = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": completion}], tokenize=False)
        assert text.endswith(f"<|im_start|>assistant\n{completion}<|im_end|>\n")  # the template was applied
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert score == pytest.approx(direct_score(reward_model_dir, ids), abs=1e-5)
    assert len(set(scores.tolist())) == 3


def test_reward_model_without_template_scores_prompt_plus_completion(reward_model_dir):
    reward = SequenceClassifierReward(str(reward_model_dir), chat_template=False)
    score = reward(["Q: hi. A:"], [" hello"]).item()
    ids = tiny_tokenizer()("Q: hi. A: hello")["input_ids"]
    assert score == pytest.approx(direct_score(reward_model_dir, ids), abs=1e-5)
    with pytest.raises(ValueError, match="no chat template"):
        reward([[{"role": "user", "content": "hi"}]], ["x"])


def test_truncation_keeps_the_end_and_is_logged(reward_model_dir, caplog):
    reward = SequenceClassifierReward(str(reward_model_dir), max_length=12)
    full = reward.encode(PROMPTS[0], COMPLETIONS[0])
    assert len(full) > 12
    with caplog.at_level(logging.WARNING, logger="lightpref.evaluation.reward_models"):
        score = reward(PROMPTS[:1], COMPLETIONS[:1]).item()
    assert "1 of 1 conversations were longer than max_length=12" in caplog.text and reward.truncated == 1
    assert score == pytest.approx(direct_score(reward_model_dir, full[-12:]), abs=1e-5)


def test_reward_model_rejects_bad_settings(reward_model_dir):
    with pytest.raises(ValueError, match="label_index"):
        SequenceClassifierReward(str(reward_model_dir), label_index=1)
    with pytest.raises(ValueError, match="max_length"):
        SequenceClassifierReward(str(reward_model_dir), max_length=0)


def test_language_model_judge_reads_a_and_b_from_a_direct_forward(tiny_checkpoint):
    from transformers import AutoModelForCausalLM

    judge = LanguageModelJudge(str(tiny_checkpoint), batch_size=3)
    first, second = ["Paris.", "Bake it.", "no"], ["Lyon, I think.", "I don't know.", "yes, sure"]
    probabilities = judge(PROMPTS, first, second)
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).eval()
    tokenizer = tiny_tokenizer()
    a, b = (tokenizer.encode(letter, add_special_tokens=False)[0] for letter in "AB")

    def p_first(ids):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
        return logits[[a, b]].softmax(-1)[0].item()

    for index, prompt in enumerate(PROMPTS):
        ids = judge.question_ids(prompt, first[index], second[index])
        assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n")
        swapped = judge.question_ids(prompt, second[index], first[index])
        expected = (p_first(ids) + 1 - p_first(swapped)) / 2  # both orders: position bias cancels
        assert probabilities[index].item() == pytest.approx(expected, abs=1e-5)
    # the order-averaged judge is antisymmetric: swapping the answers gives the complement
    torch.testing.assert_close(judge(PROMPTS, second, first), 1 - probabilities)


class LongerWins(PairwiseJudge):
    def __call__(self, prompts, first, second):
        return torch.tensor([1.0 if len(a) > len(b) else 0.0 if len(a) < len(b) else 0.5
                             for a, b in zip(first, second, strict=True)])


def test_judge_ranking_is_the_mean_win_rate_within_each_prompt():
    reward = JudgeRanking(LongerWins())
    prompts = ["p", "p", "p", "q", "q", "r"]
    texts = ["aa", "a", "aaa", "x", "xx", "alone"]
    # p: "aaa" beats both (1.0), "aa" beats one (0.5), "a" none (0.0); q: "xx" 1.0, "x" 0.0; r: no opponent, 0.5
    assert reward(prompts, texts).tolist() == [0.5, 0.0, 1.0, 0.0, 1.0, 0.5]
    with pytest.raises(TypeError, match="PairwiseJudge"):
        JudgeRanking(object())
