"""The packed, shared-prompt score forward equals the plain forward in value and gradient; both equal the score
transformers' own sequence-classification forward reads; fallbacks warn once."""

import warnings

import pytest
import torch
from reward_support import tiny_reward_model

import lightpref.reward.scoring as scoring
from lightpref.data.collate import collate_pairs
from lightpref.data.tokenize import TokenizedPair
from lightpref.reward.scoring import packed_scores, plain_scores

MODES = {"shared+packed": (True, True), "shared": (True, False), "packed": (False, True)}
BATCHES = {
    "mixed": [(5, 3, 7), (1, 9, 2), (12, 1, 1), (4, 4, 4)],
    "batch-of-one": [(6, 2, 5)],
    "very-unequal": [(40, 1, 30), (1, 2, 1)],
}


@pytest.fixture(autouse=True)
def fresh_warnings():
    scoring._warned.clear()
    yield
    scoring._warned.clear()


def pairs_batch(lengths, seed=0):
    """Random pairs with (prompt, chosen, rejected) token counts; ids ≥ 4, so no row contains the pad id 0."""
    generator = torch.Generator().manual_seed(seed)

    def ids(count):
        return torch.randint(4, 320, (count,), generator=generator).tolist()

    return collate_pairs([TokenizedPair(ids(p), ids(c), ids(r)) for p, c, r in lengths], pad_token_id=0)


def value_and_gradient(model, scores, weights):
    return scores, torch.autograd.grad((scores * weights).sum(), list(model.parameters()))


def test_plain_scores_are_what_transformers_reads_at_the_last_token():
    model, batch = tiny_reward_model(), pairs_batch(BATCHES["mixed"])
    with torch.no_grad():
        ours = plain_scores(model, batch.input_ids, batch.attention_mask)
        theirs = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.squeeze(-1)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)
    assert ours.std() > 0.1  # the scores differ from row to row, so a wrong row would show


@pytest.mark.parametrize("shape", BATCHES.values(), ids=BATCHES.keys())
@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_packed_scores_equal_the_plain_forward_in_value_and_gradient(shape, mode, implementation):
    model, batch = tiny_reward_model(), pairs_batch(shape)
    model.config._attn_implementation = implementation
    weights = torch.randn(batch.input_ids.shape[0], generator=torch.Generator().manual_seed(1))
    plain, plain_gradient = value_and_gradient(model, plain_scores(model, batch.input_ids, batch.attention_mask),
                                               weights)
    shared, pack = mode
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        scores = packed_scores(model, batch.input_ids, batch.attention_mask, batch.completion_mask,
                               shared_prompt=shared, pack=pack, max_packed_length=24)
        result, gradient = value_and_gradient(model, scores, weights)
    torch.testing.assert_close(result, plain, atol=1e-5, rtol=1e-5)
    for mine, reference in zip(gradient, plain_gradient, strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-5, rtol=1e-4)


def test_a_rejected_score_never_sees_the_chosen_completion():
    """Changing a chosen completion changes its own score only; the rejected row's score stays the same."""
    model = tiny_reward_model()
    first = collate_pairs([TokenizedPair([5, 6, 7], [8, 9, 10], [11, 12])], pad_token_id=0)
    second = collate_pairs([TokenizedPair([5, 6, 7], [40, 41, 42], [11, 12])], pad_token_id=0)
    with torch.no_grad():
        a = packed_scores(model, first.input_ids, first.attention_mask, first.completion_mask)
        b = packed_scores(model, second.input_ids, second.attention_mask, second.completion_mask)
    assert not torch.allclose(a[0], b[0])
    torch.testing.assert_close(a[1], b[1], atol=1e-6, rtol=1e-6)


def test_left_padded_rows_fall_back_to_the_plain_forward_with_one_warning():
    model, batch = tiny_reward_model(), pairs_batch(BATCHES["mixed"])
    input_ids, attention_mask = batch.input_ids.flip(1), batch.attention_mask.flip(1)
    with pytest.warns(UserWarning, match="not right-padded; scoring with the plain forward"):
        packed_scores(model, input_ids, attention_mask, batch.completion_mask.flip(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        packed_scores(model, input_ids, attention_mask, batch.completion_mask.flip(1))


def test_an_architecture_without_a_score_head_is_a_clear_error():
    from lightpref.testing import tiny_model

    with pytest.raises(TypeError, match="sequence-classification model with a `score` head"):
        plain_scores(tiny_model(), torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long))


@pytest.mark.slow
def test_flex_attention_block_mask_equals_the_plain_forward():
    """Forward only: FlexAttention has no backward pass on CPU; it compiles, which takes ~20 s."""
    model, batch = tiny_reward_model(), pairs_batch(BATCHES["mixed"])
    with torch.no_grad():
        plain = plain_scores(model, batch.input_ids, batch.attention_mask)
        model.config._attn_implementation = "flex_attention"
        with warnings.catch_warnings():
            warnings.simplefilter("error", category=UserWarning)
            result = packed_scores(model, batch.input_ids, batch.attention_mask, batch.completion_mask)
    torch.testing.assert_close(result, plain, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("implementation", ["sdpa", "flex_attention"])
def test_packed_scores_equal_the_plain_forward_on_gpu(implementation):
    model, batch = tiny_reward_model().cuda(), pairs_batch(BATCHES["mixed"])
    ids, mask, completion = (t.cuda() for t in (batch.input_ids, batch.attention_mask, batch.completion_mask))
    weights = torch.randn(ids.shape[0], device="cuda")
    plain, plain_gradient = value_and_gradient(model, plain_scores(model, ids, mask), weights)
    model.config._attn_implementation = implementation
    result, gradient = value_and_gradient(model, packed_scores(model, ids, mask, completion), weights)
    torch.testing.assert_close(result, plain, atol=1e-4, rtol=1e-4)
    for mine, reference in zip(gradient, plain_gradient, strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-4, rtol=1e-3)


def test_rows_are_filled_evenly_and_the_scores_stay_exact():
    """Five pairs of 6 tokens each (prompt 2, chosen 2, rejected 2) under a 24-token cap: taking pairs while they fit
    gives rows of 24 and 6 tokens; filled evenly, 18 and 12 (two rows either way), with the plain forward's scores."""
    model, batch = tiny_reward_model(), pairs_batch([(2, 2, 2)] * 5)
    packed = scoring.pack_batch(batch.input_ids, batch.attention_mask, batch.completion_mask.bool(),
                                max_packed_length=24)
    assert packed.input_ids.shape == (2, 18)
    assert (packed.segment_ids >= 0).sum(1).tolist() == [18, 12]
    with torch.no_grad():
        plain = plain_scores(model, batch.input_ids, batch.attention_mask)
        scores = packed_scores(model, batch.input_ids, batch.attention_mask, batch.completion_mask,
                               max_packed_length=24)
    torch.testing.assert_close(scores, plain, atol=1e-5, rtol=1e-5)
