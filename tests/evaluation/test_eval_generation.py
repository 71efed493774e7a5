"""Sampling and the KL estimate on a tiny model: batching, scoring, seeding, and KL = 0 for the reference itself."""

import copy

import pytest
import torch
from eval_support import PROMPTS, fit
from transformers import GenerationConfig

from lightpref.evaluation import CompletionLength, SamplingSettings, evaluate_policy, sample_completions
from lightpref.evaluation.generation import NEUTRAL_SAMPLING, left_pad, prompt_token_ids, sequence_logprobs
from lightpref.testing import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture
def model(tokenizer):
    return tiny_model(vocab_size=len(tokenizer))


def test_batched_left_padded_generation_matches_one_prompt_at_a_time(model, tokenizer):
    greedy = SamplingSettings(max_new_tokens=6, temperature=0, batch_size=len(PROMPTS))
    batched = sample_completions(model, tokenizer, PROMPTS, greedy)
    single = sample_completions(model, tokenizer, PROMPTS, SamplingSettings(max_new_tokens=6, temperature=0,
                                                                            batch_size=1))
    assert batched.completion_ids == single.completion_ids
    assert batched.texts == [tokenizer.decode(ids, skip_special_tokens=True) for ids in batched.completion_ids]


def test_sequence_logprobs_are_those_of_the_sampler(model, tokenizer):
    """Re-scoring the samples right-padded gives Σ log-softmax of the (unprocessed, T = 1) generation scores."""
    settings = SamplingSettings(max_new_tokens=5, batch_size=len(PROMPTS), seed=3)
    samples = sample_completions(model, tokenizer, PROMPTS, settings)
    scored = sequence_logprobs(model, samples, tokenizer.pad_token_id, batch_size=2)
    input_ids, attention_mask = left_pad(prompt_token_ids(PROMPTS, tokenizer, False), tokenizer.pad_token_id)
    config = GenerationConfig(max_new_tokens=5, do_sample=True, temperature=1.0, top_p=1.0, **NEUTRAL_SAMPLING,
                              pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                              output_scores=True, return_dict_in_generate=True)
    model.eval()
    with torch.random.fork_rng():
        torch.manual_seed(3)
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
    generated = output.sequences[:, input_ids.shape[1]:]
    logps = torch.stack(output.scores, 1).log_softmax(-1).gather(-1, generated[..., None]).squeeze(-1)  # (N, new)
    expected = torch.stack([row[: len(ids)].sum() for row, ids in zip(logps, samples.completion_ids, strict=True)])
    assert [row[: len(ids)].tolist() for row, ids in zip(generated, samples.completion_ids, strict=True)] == \
        samples.completion_ids
    torch.testing.assert_close(scored, expected, atol=1e-4, rtol=1e-5)


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(model, tokenizer):
    settings = SamplingSettings(max_new_tokens=8, batch_size=2, seed=7)
    torch.manual_seed(123)
    first = sample_completions(model, tokenizer, PROMPTS, settings)
    after_sampling = torch.rand(3)
    torch.manual_seed(123)
    untouched = torch.rand(3)
    second = sample_completions(model, tokenizer, PROMPTS, settings)
    other = sample_completions(model, tokenizer, PROMPTS, SamplingSettings(max_new_tokens=8, batch_size=2, seed=8))
    torch.testing.assert_close(after_sampling, untouched)
    assert first.completion_ids == second.completion_ids != other.completion_ids
    assert model.training  # sampling ran in eval mode and restored the mode it found


def test_several_samples_per_prompt_are_consecutive(model, tokenizer):
    samples = sample_completions(model, tokenizer, PROMPTS[:2], SamplingSettings(max_new_tokens=4), num_samples=3)
    assert samples.prompts == [PROMPTS[0]] * 3 + [PROMPTS[1]] * 3
    assert len(set(map(tuple, samples.completion_ids[:3]))) > 1  # independent draws


def test_chat_template_wraps_string_prompts_as_a_user_turn(tokenizer):
    (ids,) = prompt_token_ids(["hello"], tokenizer, chat_template=True)
    assert tokenizer.decode(ids) == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"


def test_kl_is_zero_when_the_policy_is_the_reference(model, tokenizer):
    settings = SamplingSettings(max_new_tokens=8, batch_size=4)
    result = evaluate_policy(model, copy.deepcopy(model), tokenizer, PROMPTS, CompletionLength(), settings)
    assert result.kl is not None and result.kl.shape == (len(PROMPTS),)
    torch.testing.assert_close(result.kl, torch.zeros(len(PROMPTS)), atol=1e-5, rtol=0)
    lengths = torch.tensor([len(text) for text in result.samples.texts], dtype=torch.float32)
    torch.testing.assert_close(result.rewards, lengths)
    assert evaluate_policy(model, None, tokenizer, PROMPTS, CompletionLength(), settings).kl is None


def test_kl_is_positive_after_training(tiny_checkpoint, pairs_file, tmp_path, tokenizer):
    module, _, _ = fit(tiny_checkpoint, pairs_file, tmp_path, steps=6, lr=3e-2, logger=False)
    settings = SamplingSettings(max_new_tokens=12, batch_size=16)
    prompts = [f"Human: question {index}? Assistant:" for index in range(32)]
    result = evaluate_policy(module.policy, module.reference.scope(), tokenizer, prompts, CompletionLength(), settings)
    standard_error = result.kl.std() / len(prompts) ** 0.5
    assert result.mean_kl > 1.0 and result.mean_kl > 5 * standard_error, result.kl


@pytest.mark.parametrize("field, value", [("max_new_tokens", 0), ("temperature", -1.0), ("top_p", 0.0),
                                          ("batch_size", 0)])
def test_invalid_settings_name_the_key(field, value):
    with pytest.raises(ValueError, match=f"`{field}`"):
        SamplingSettings(**{field: value})
