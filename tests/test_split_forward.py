"""The two-pass unpaired forward (lightpref.training.split_forward): the mismatched completions' log-probs, KTO's z₀
and the loss's gradients equal those of the plain forward and of the one-pass shared-prompt forward; the mismatched
rows carry no gradient; the cache is attached to each example's own prompt; the separate no-grad fallback is exact."""

import pytest
import torch

import lightpref.training.split_forward as split_forward
from lightpref.data.unpaired import collate_unpaired
from lightpref.losses.kto import KTO
from lightpref.losses.unpaired import kl_reference_point
from lightpref.testing import tiny_model
from lightpref.training.forward import completion_logprobs
from lightpref.training.packing import Scorer, packed_completion_logprobs
from lightpref.training.split_forward import score_unpaired, split_logprobs, split_unsupported
from lightpref.training.unpaired_step import unpaired_step

# The models run in float64 and the log-probs come out in float32, so the two forwards' float64 values (1e-15 apart)
# may round to neighbouring float32 values: equal means within one float32 step (2⁻²³ relative), no more.
EXACT = {"rtol": 2.0**-23, "atol": 1e-12}
SHAPES = [(6, 3, 5, True), (3, 4, 2, False), (5, 2, 6, True), (4, 5, 3, False)]  # prompt, own, mismatched, label


def batch_of(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)

    def ids(count: int) -> list[int]:
        return torch.randint(4, 300, (count,), generator=generator).tolist()

    rows = [{"prompt_ids": ids(p), "completion_ids": [ids(c), ids(m)], "label": label} for p, c, m, label in SHAPES]
    return collate_unpaired(rows, pad_token_id=0)


def model_of(implementation: str = "sdpa", seed: int = 0):
    model = tiny_model(seed=seed).double()
    model.config._attn_implementation = implementation
    return model


def sums(tokens):
    return (tokens.logps * tokens.mask).sum(-1)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("max_packed_length", [None, 0, 12])
def test_mismatched_logps_and_z0_equal_the_plain_forward(implementation, max_packed_length):
    """Every row's per-token log-probs (the mismatched ones above all) equal the plain padded forward's, packed in one
    row, a row per example, or rows of at most 12 tokens; so does z₀ = max(0, mean mismatched log-ratio)."""
    batch, policy, reference = batch_of(), model_of(implementation), model_of(implementation, seed=1)
    split = split_logprobs(policy, batch, 4, max_packed_length)
    plain = completion_logprobs(policy, batch.input_ids, batch.attention_mask, batch.completion_mask, 4)
    assert torch.equal(split.mask, plain.mask)
    torch.testing.assert_close(split.logps, plain.logps, **EXACT)
    torch.testing.assert_close(split.logits_sum, plain.logits_sum, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        reference_sums = sums(completion_logprobs(reference, batch.input_ids, batch.attention_mask,
                                                  batch.completion_mask, 4))
    mismatched = batch.rows_at(1)
    z0 = kl_reference_point(sums(split)[mismatched], reference_sums[mismatched])
    expected = (sums(plain)[mismatched] - reference_sums[mismatched]).mean().clamp(min=0)
    torch.testing.assert_close(z0, expected, **EXACT)


def test_cache_is_attached_to_each_examples_own_prompt():
    """Under another example's prompt the mismatched completions score far from their own-prompt values (so the
    EXACT check above fails if a mismatched completion attended to a neighbour's cached prompt); the two-pass values
    are the own-prompt ones."""
    batch, policy = batch_of(), model_of()
    own, mismatched = batch.rows_at(0), batch.rows_at(1)
    split = sums(split_logprobs(policy, batch, 4, None))[mismatched]
    with torch.no_grad():
        plain = sums(completion_logprobs(policy, batch.input_ids, batch.attention_mask, batch.completion_mask, 4))
        prompt_rows = []  # example b's mismatched completion under example b+1's prompt
        for b in range(len(own)):
            neighbour = int(own[(b + 1) % len(own)])
            prompt_length = int(batch.completion_mask[neighbour].int().argmax())
            mism = batch.input_ids[mismatched[b]][batch.completion_mask[mismatched[b]]]
            prompt_rows.append(torch.cat([batch.input_ids[neighbour][:prompt_length], mism]))
        width = max(len(row) for row in prompt_rows)
        ids = torch.zeros(len(prompt_rows), width, dtype=torch.long)
        completion = torch.zeros_like(ids, dtype=torch.bool)
        for b, row in enumerate(prompt_rows):
            ids[b, : len(row)] = row
            completion[b, len(row) - int(batch.completion_mask[mismatched[b]].sum()) : len(row)] = True
        wrong = sums(completion_logprobs(policy, ids, (ids > 0).long(), completion, 4))
    torch.testing.assert_close(split, plain[mismatched], **EXACT)
    assert (wrong - plain[mismatched]).abs().min() > 1e-3


def one_pass(model, rows):
    """The one-pass shared-prompt forward of every row (prompt ∥ completion ∥ mismatched completion)."""
    return packed_completion_logprobs(model, rows.input_ids, rows.attention_mask, rows.completion_mask, chunk_size=4,
                                      groups=rows.row_groups())


def kto_step(score_policy, batch, reference):
    with torch.no_grad():
        reference_tokens = Scorer(chunk_size=4)(reference, batch)
    return unpaired_step(KTO(beta=0.5), score_policy, lambda rows: reference_tokens, batch, None)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_loss_and_gradients_equal_the_one_pass_forward(implementation):
    """The KTO loss, its z₀ (``kl``) and the policy's gradients equal the one-pass shared-prompt forward's, which
    tracks gradients through the mismatched rows and detaches z₀ afterwards."""
    batch, reference = batch_of(), model_of(implementation, seed=1)
    results = []
    for score in (one_pass, lambda model, rows: Scorer(chunk_size=4)(model, rows)):
        policy = model_of(implementation)
        torch.manual_seed(2)  # a perturbation whose mismatched log-ratios average above 0 (z₀ ≈ 0.11, not clamped)
        with torch.no_grad():
            for parameter in policy.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
        metrics, loss = kto_step(lambda rows, policy=policy, score=score: score(policy, rows), batch, reference)
        loss.backward()
        results.append((loss.detach(), metrics["kl"], [parameter.grad for parameter in policy.parameters()]))
    (one_loss, one_kl, one_grads), (two_loss, two_kl, two_grads) = results
    assert one_kl.item() > 0  # z₀ is not clamped to zero here, so its value matters
    torch.testing.assert_close(two_loss, one_loss, **EXACT)
    torch.testing.assert_close(two_kl, one_kl, **EXACT)
    for two, one in zip(two_grads, one_grads, strict=True):
        torch.testing.assert_close(two, one, rtol=1e-6, atol=1e-9)


def test_mismatched_rows_carry_no_gradient():
    """Only the completion rows reach the parameters; the mismatched rows' log-probs are constants."""
    batch, policy = batch_of(), model_of()
    tokens = score_unpaired(Scorer(chunk_size=4), policy, batch)
    parameters = list(policy.parameters())
    grads = torch.autograd.grad(sums(tokens)[batch.rows_at(1)].sum(), parameters, allow_unused=True,
                                retain_graph=True)
    assert all(grad is None or not grad.any() for grad in grads)
    grads = torch.autograd.grad(sums(tokens)[batch.rows_at(0)].sum(), parameters, allow_unused=True)
    assert any(grad is not None and grad.abs().sum() > 0 for grad in grads)


@pytest.mark.parametrize("case", ["checkpointing", "no_shared_prompt", "no_chunks", "flex", "different_prompt"])
def test_fallback_is_a_separate_no_grad_forward_with_the_same_result(case, monkeypatch):
    """Where the two passes cannot run, split_unsupported names why and the mismatched rows get a separate forward
    under no_grad: the same values as the plain forward, still no gradient through them."""
    batch, policy, scorer = batch_of(), model_of(), Scorer(chunk_size=4)
    if case == "checkpointing":
        (getattr(policy, "activation_checkpointing_enable", None) or policy.gradient_checkpointing_enable)()
        policy.train()
    elif case == "no_shared_prompt":
        scorer = Scorer(chunk_size=4, shared_prompt=False)
    elif case == "no_chunks":
        scorer = Scorer(chunk_size=None)
    elif case == "flex":
        policy.config._attn_implementation = "flex_attention"
    else:  # the mismatched row of example 0 loses its prompt's first token
        batch.input_ids[1, 0] = batch.input_ids[1, 0] + 1
    assert split_unsupported(policy, scorer, batch)
    if case == "flex":
        return  # FlexAttention on CPU float64 is not exercised here; the reason is what routes it
    monkeypatch.setattr(split_forward, "split_logprobs", lambda *args: pytest.fail("the two passes ran"))
    tokens = score_unpaired(scorer, policy, batch)
    with torch.no_grad():
        plain = completion_logprobs(policy, batch.input_ids, batch.attention_mask, batch.completion_mask, 4)
    torch.testing.assert_close(tokens.logps.detach(), plain.logps, **EXACT)
    parameters = list(policy.parameters())
    grads = torch.autograd.grad(sums(tokens)[batch.rows_at(1)].sum(), parameters, allow_unused=True)
    assert all(grad is None or not grad.any() for grad in grads)


def test_scorer_routes_unpaired_batches_with_mismatched_rows_through_the_two_passes(monkeypatch):
    """The Scorer (policy and reference alike, with or without gradient) sends an unpaired batch with mismatched rows
    to the two passes, and a batch of completions only to the one-pass forward; at policy = reference the mismatched
    log-ratios are then exactly 0, so KTO's first-step loss is exactly 1/2 (λ = 1)."""
    batch, policy, reference = batch_of(), model_of(), model_of()
    calls = []
    original = split_forward.split_logprobs
    monkeypatch.setattr(split_forward, "split_logprobs", lambda *args: calls.append(1) or original(*args))
    metrics, loss = kto_step(lambda rows: Scorer(chunk_size=4)(policy, rows), batch, reference)
    assert len(calls) == 2  # the reference (no gradient), then the policy
    assert metrics["kl"].item() == 0.0 and loss.item() == 0.5
    only = batch.completions_only()
    assert Scorer(chunk_size=4)(policy, only).logps.shape == only.input_ids.shape
    assert len(calls) == 2
