"""The dataset builder on a tiny model: chosen beats rejected under the reward, the DataModule reads the pairs,
and an interrupted run resumes where it stopped."""

import json
from pathlib import Path

import pytest
from eval_support import PROMPTS

from lightpref.commands.build_dataset_options import main
from lightpref.data import PreferenceDataModule
from lightpref.evaluation import CompletionLength, SamplingSettings
from lightpref.evaluation.build_dataset import build_dataset, done_prompts
from lightpref.testing import tiny_model, tiny_tokenizer

SETTINGS = SamplingSettings(max_new_tokens=10, batch_size=8, seed=1)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture
def model(tokenizer):
    return tiny_model(vocab_size=len(tokenizer))


def read(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def build(model, tokenizer, prompts, output, settings=SETTINGS, **kwargs):
    return build_dataset(model, tokenizer, prompts, CompletionLength(), output, settings, progress_bar=False, **kwargs)


def test_pairs_prefer_the_higher_reward_and_load(model, tokenizer, tmp_path):
    output = tmp_path / "pairs.jsonl"
    stats = build(model, tokenizer, PROMPTS, output, samples_per_prompt=4)
    pairs = read(output)
    assert stats.prompts_sampled == len(PROMPTS) and stats.pairs_written == len(pairs) > 0
    for pair in pairs:
        assert len(pair["chosen"]) == pair["chosen_reward"] > pair["rejected_reward"] == len(pair["rejected"])
        assert pair["prompt"] in PROMPTS
    progress = read(tmp_path / "pairs.jsonl.progress")
    assert [row["prompt"] for row in progress] == PROMPTS and all(len(row["rewards"]) == 4 for row in progress)
    for row in progress:  # best vs worst: the pair's rewards are the extremes of the prompt's samples
        pair = next((pair for pair in pairs if pair["prompt"] == row["prompt"]), None)
        if pair is not None:
            assert (pair["chosen_reward"], pair["rejected_reward"]) == (max(row["rewards"]), min(row["rewards"]))
    data = PreferenceDataModule(tokenizer=tokenizer, train_files=str(output), max_length=64, max_prompt_length=32)
    data.prepare_data()
    data.setup("fit")
    assert len(data.train_dataset) == len(pairs)


def test_all_pairs_above_a_gap(model, tokenizer, tmp_path):
    build(model, tokenizer, PROMPTS, tmp_path / "all.jsonl", samples_per_prompt=4, pairing="all", min_gap=3)
    pairs = read(tmp_path / "all.jsonl")
    assert len(pairs) > len(PROMPTS)  # up to six pairs per prompt
    assert all(pair["chosen_reward"] - pair["rejected_reward"] > 3 for pair in pairs)


def test_ranked_groups_keep_every_sample_with_its_reward_and_load(model, tokenizer, tmp_path):
    output = tmp_path / "groups.jsonl"
    stats = build(model, tokenizer, PROMPTS, output, samples_per_prompt=4, pairing="ranked")
    groups, progress = read(output), read(tmp_path / "groups.jsonl.progress")
    assert stats.pairs_written == len(groups) > 0
    rewards = {row["prompt"]: row["rewards"] for row in progress}
    for group in groups:
        assert len(group["completions"]) == 4 and group["scores"] == rewards[group["prompt"]]
        assert group["scores"] == [len(text) for text in group["completions"]]  # CompletionLength scores each sample
    tied = [row for row in progress if len(set(row["rewards"])) == 1]
    assert len(groups) == len(PROMPTS) - len(tied)  # a group of equal scores states no preference: not written
    data = PreferenceDataModule(tokenizer=tokenizer, train_files=str(output), max_length=64, max_prompt_length=32)
    data.prepare_data()
    data.setup("fit")
    assert data.shape == "ranked" and len(data.train_dataset) == len(groups)


def test_chat_records_are_conversational_and_load(model, tokenizer, tmp_path):
    settings = SamplingSettings(max_new_tokens=10, batch_size=8, chat_template=True)
    build(model, tokenizer, PROMPTS[:2], tmp_path / "chat.jsonl", settings)
    pairs = read(tmp_path / "chat.jsonl")
    assert pairs[0]["prompt"] == [{"role": "user", "content": PROMPTS[0]}]
    assert pairs[0]["chosen"][0]["role"] == "assistant"
    data = PreferenceDataModule(tokenizer=tokenizer, train_files=str(tmp_path / "chat.jsonl"), max_length=64,
                                max_prompt_length=32)
    data.prepare_data()
    data.setup("fit")
    assert len(data.train_dataset) == len(pairs)


def test_an_interrupted_run_resumes_and_writes_what_an_uninterrupted_one_does(model, tokenizer, tmp_path):
    whole = tmp_path / "whole.jsonl"
    build(model, tokenizer, PROMPTS, whole)
    resumed = tmp_path / "resumed.jsonl"
    first = build(model, tokenizer, PROMPTS[:2], resumed)  # the first chunk (8 // 4 = 2 prompts) finished
    with resumed.open("a") as file:
        file.write('{"prompt": "Human: hel')  # a line cut off by the interruption
    second = build(model, tokenizer, PROMPTS, resumed)
    assert first.prompts_sampled == 2 and (second.prompts_skipped, second.prompts_sampled) == (2, len(PROMPTS) - 2)
    assert read(resumed) == read(whole)
    assert done_prompts(resumed, tmp_path / "resumed.jsonl.progress") == {json.dumps(p) for p in PROMPTS}
    third = build(model, tokenizer, PROMPTS, resumed)
    assert (third.prompts_skipped, third.prompts_sampled, third.pairs_written) == (len(PROMPTS), 0, 0)


def test_too_few_samples_is_an_error(model, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="`samples_per_prompt` must be at least 2"):
        build(model, tokenizer, PROMPTS, tmp_path / "x.jsonl", samples_per_prompt=1)


def test_the_script_reads_a_prompt_file(tiny_checkpoint, tmp_path, capsys):
    """``lightpref build-dataset …`` (run in-process: a subprocess would cost an import)."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Human: hello\n\nThe quick brown fox\n")
    output = tmp_path / "cli.jsonl"
    assert main(["--model", str(tiny_checkpoint), "--prompts", str(prompts), "--reward",
                 "lightpref.evaluation.CompletionLength", "--reward-args", '{"unit": "words"}', "--output", str(output),
                 "--max-new-tokens", "6", "--samples-per-prompt", "3", "--no-chat-template"]) == 0
    assert "from 2 prompts written to" in capsys.readouterr().out
    assert read(output)
    for pair in read(output):  # --reward-args reached the reward: words, not characters
        assert (pair["chosen_reward"], pair["rejected_reward"]) == (len(pair["chosen"].split()),
                                                                    len(pair["rejected"].split()))
    with pytest.raises(ValueError, match="--reward-args must be a JSON object"):
        main(["--model", str(tiny_checkpoint), "--output", str(output), "--reward-args", "unit=words"])
    assert {row["prompt"] for row in read(output.with_name("cli.jsonl.progress"))} == {"Human: hello",
                                                                                       "The quick brown fox"}
