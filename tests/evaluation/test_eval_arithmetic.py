"""The arithmetic task: questions deterministic from the seed with disjoint splits, answers by hand, and a
correctness reward that reads the first number of a completion."""

import pytest
import torch

from lightpref.evaluation.arithmetic import (
    ArithmeticCorrectness,
    answer,
    arithmetic_prompts,
    first_number,
    question_answer,
)
from lightpref.evaluation.build_dataset import make_pairs
from lightpref.evaluation.rewards import load_reward


@pytest.mark.parametrize(("kind", "questions"), [("sum", 5 * 5), ("larger", 5 * 5 - 5)])
def test_every_operand_pair_once_and_splits_disjoint(kind, questions):
    train = arithmetic_prompts(kind=kind, split="train", low=1, high=5)
    held_out = arithmetic_prompts(kind=kind, split="eval", low=1, high=5)
    assert len(train) + len(held_out) == questions and len(held_out) == questions // 5
    assert not set(train) & set(held_out)
    assert sorted(train + held_out) == sorted(arithmetic_prompts(kind=kind, split="all", low=1, high=5))
    words = [word.strip("?,") for prompt in train + held_out for word in prompt.split()]
    numbers = {int(word) for word in words if word.isdigit()}
    assert numbers == {1, 2, 3, 4, 5}  # the range is inclusive at both ends


def test_the_seed_fixes_the_order():
    assert arithmetic_prompts(10, seed=3) == arithmetic_prompts(10, seed=3)
    assert arithmetic_prompts(10, seed=3) != arithmetic_prompts(10, seed=4)
    assert set(arithmetic_prompts(seed=3, split="all")) == set(arithmetic_prompts(seed=4, split="all"))
    assert arithmetic_prompts(3, kind="larger", high=9) == arithmetic_prompts(kind="larger", high=9)[:3]


def test_answers_by_hand():
    assert (answer("sum", 7, 12), answer("larger", 7, 12), answer("larger", 12, 7)) == (19, 12, 12)
    assert question_answer("What is 30 + 12? Answer with the number only.") == 42
    assert question_answer("Which number is larger, 13 or 4? Answer with the number only.") == 13
    chat = [{"role": "user", "content": "What is 1 + 1?"}, {"role": "assistant", "content": "2"},
            {"role": "user", "content": "Be exact. What is 6 + 5?"}]
    assert question_answer(chat) == 11  # the last user turn; an instruction before it is ignored


def test_first_number_parsing():
    assert first_number("The answer is 19.") == 19.0  # the full stop is no decimal part
    assert first_number("x = -3, not 3") == -3.0
    assert first_number("about 2.50 or 7") == 2.5
    assert first_number("12 and 7") == 12.0 and first_number("1 9") == 1.0
    assert first_number("nineteen") is None and first_number("") is None


def test_correctness_reward_scores_the_first_number():
    reward = ArithmeticCorrectness()
    prompt = "What is 7 + 12? Answer with the number only."
    completions = ["19", "19.0", "It is 19.", "7 + 12 = 19", "nineteen", "18", "190", "-19", "19 or 20", ""]
    expected = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert reward([prompt] * len(completions), completions).tolist() == expected
    larger = reward(["Which number is larger, 4 or 11?"] * 3, ["11 is larger than 4.", "4 is smaller", "11"])
    assert larger.dtype == torch.float32 and larger.tolist() == [1.0, 0.0, 1.0]


def test_correctness_reward_errors():
    with pytest.raises(ValueError, match="asks no arithmetic question"):
        ArithmeticCorrectness()(["Write a review of Foxglove."], ["5"])
    with pytest.raises(ValueError, match="one prompt per completion"):
        ArithmeticCorrectness()(["What is 1 + 1?"], ["2", "2"])
    with pytest.raises(ValueError, match="there are 1 to 80"):
        arithmetic_prompts(81, high=9)
    with pytest.raises(ValueError, match="'sum' or 'larger'"):
        arithmetic_prompts(kind="product")
    with pytest.raises(ValueError, match="low` < `high"):
        arithmetic_prompts(low=5, high=5)


def test_usable_where_the_sentiment_reward_is():
    reward = load_reward("lightpref.evaluation.arithmetic:ArithmeticCorrectness")
    assert repr(reward) == "ArithmeticCorrectness()"
    prompt = "Which number is larger, 8 or 3? Answer with the number only."
    texts = ["3", "8 is larger.", "The larger is 8"]
    rewards = reward([prompt] * 3, texts).tolist()
    pairs = make_pairs(prompt, texts, rewards)  # best against worst, as the pair builder does
    assert rewards == [0.0, 1.0, 1.0] and [(p["chosen"], p["rejected"]) for p in pairs] == [("8 is larger.", "3")]
