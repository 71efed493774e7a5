"""Completion log-probs: the chunked, completion-only computation equals a direct full log-softmax."""

import pytest
import torch

from lightpref.testing import tiny_model
from lightpref.training.forward import completion_logprobs


def direct(model, input_ids, attention_mask, completion_mask):
    """log π(x_t | x_<t) from the model's own full forward and a full-vocabulary log-softmax."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()  # (N, T, V)
    logps = torch.log_softmax(logits[:, :-1], -1)
    token = logps.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    out = torch.zeros(input_ids.shape)
    out[:, 1:] = token * completion_mask[:, 1:]
    collision = torch.zeros(input_ids.shape)
    collision[:, 1:] = torch.logsumexp(2 * logps, -1) * completion_mask[:, 1:]
    return out, collision, (logits[:, :-1] * completion_mask[:, 1:, None]).sum((1, 2))


def batch(lengths, prompt_lengths, width=None, seed=0):
    """Right-padded sequences of the given lengths; completion = positions after each prompt."""
    generator = torch.Generator().manual_seed(seed)
    width = width or max(lengths)
    input_ids = torch.randint(4, 320, (len(lengths), width), generator=generator)
    positions = torch.arange(width)
    attention_mask = (positions[None] < torch.tensor(lengths)[:, None]).long()
    completion_mask = (positions[None] >= torch.tensor(prompt_lengths)[:, None]) & attention_mask.bool()
    input_ids = input_ids * attention_mask  # pad id 0
    return input_ids, attention_mask, completion_mask


@pytest.mark.parametrize(
    "lengths, prompt_lengths",
    [([12, 9, 12, 6], [5, 5, 2, 5]), ([7], [3]), ([40, 4], [2, 3])],
    ids=["mixed", "batch-of-one", "very-unequal"],
)
@pytest.mark.parametrize("chunk_size", [1, 3, 1024, None])
def test_equals_direct_in_value_and_gradient(lengths, prompt_lengths, chunk_size):
    model = tiny_model()
    input_ids, attention_mask, completion_mask = batch(lengths, prompt_lengths)
    result = completion_logprobs(model, input_ids, attention_mask, completion_mask, chunk_size, with_collision=True)
    expected, collision, logits_sum = direct(model, input_ids, attention_mask, completion_mask)
    torch.testing.assert_close(result.logps, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result.log_collision, collision, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result.logits_sum, logits_sum, atol=1e-4, rtol=1e-5)
    weights = torch.randn(expected.shape)
    ours = torch.autograd.grad((result.logps * weights).sum(), list(model.parameters()))
    theirs = torch.autograd.grad((direct(model, input_ids, attention_mask, completion_mask)[0] * weights).sum(),
                                 list(model.parameters()))
    for mine, reference in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-5, rtol=1e-4)


def test_zero_outside_completion():
    model = tiny_model()
    input_ids, attention_mask, completion_mask = batch([10, 6], [4, 2])
    result = completion_logprobs(model, input_ids, attention_mask, completion_mask)
    assert (result.logps[~completion_mask] == 0).all()
    assert (result.logps[completion_mask] < 0).all()
