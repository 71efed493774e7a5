"""The group forward: a prompt with K completions as one sequence prompt ∥ c1 ∥ … ∥ cK equals the plain padded
forward of the K rows, in value and gradient; its layout and mask; the pair batch is its K = 2 case."""

import warnings

import pytest
import torch

import lightpref.training.packing as packing
from lightpref.batch import pair_groups
from lightpref.data.groups import TokenizedGroup, collate_groups
from lightpref.testing import tiny_model
from lightpref.training.forward import completion_logprobs
from lightpref.training.packing import Scorer, attention_mask_4d, pack_batch, packed_completion_logprobs

MODES = {"shared+packed": (True, True), "shared": (True, False), "packed": (False, True)}
GROUPS = {
    "k-varies": [(5, [3, 7, 2, 4]), (1, [9, 2]), (12, [1, 1, 3]), (4, [4, 4, 4, 4, 4, 4, 4])],
    "one-group": [(6, [2, 5, 1, 3])],
    "very-unequal": [(40, [1, 30, 2]), (1, [2, 1])],
}


@pytest.fixture(autouse=True)
def fresh_warnings():
    packing._warned.clear()
    yield
    packing._warned.clear()


def groups_batch(shape: list[tuple[int, list[int]]], seed: int = 0):
    """A collated batch of random groups with (prompt, [completion, …]) token counts ``shape``."""
    generator = torch.Generator().manual_seed(seed)

    def ids(count: int) -> list[int]:
        return torch.randint(4, 320, (count,), generator=generator).tolist()

    groups = [TokenizedGroup(ids(p), [ids(c) for c in cs], [float(-k) for k in range(len(cs))]) for p, cs in shape]
    return collate_groups(groups, pad_token_id=0)


def value_and_gradient(model, batch, weights, **options):
    result = packed_completion_logprobs(model, batch.input_ids, batch.attention_mask, batch.completion_mask,
                                        **options) if options.pop("packed", True) else completion_logprobs(
        model, batch.input_ids, batch.attention_mask, batch.completion_mask, **options)
    gradient = torch.autograd.grad((result.logps * weights).sum(), list(model.parameters()))
    return result, gradient


CASES = [("sdpa", shape, mode, chunk) for shape in GROUPS for mode in MODES for chunk in (3, None)]
CASES += [("eager", "k-varies", mode, 3) for mode in MODES]


@pytest.mark.parametrize(("implementation", "shape", "mode", "chunk_size"), CASES)
def test_group_forward_equals_the_plain_forward_in_value_and_gradient(implementation, shape, mode, chunk_size):
    model, batch = tiny_model(), groups_batch(GROUPS[shape])
    model.config._attn_implementation = implementation
    weights = torch.randn(batch.input_ids.shape, generator=torch.Generator().manual_seed(1))
    options = {"chunk_size": chunk_size, "with_collision": True}
    plain, plain_gradient = value_and_gradient(model, batch, weights, packed=False, **options)
    shared, pack = MODES[mode]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to the plain forward
        result, gradient = value_and_gradient(model, batch, weights, shared_prompt=shared, pack=pack,
                                              groups=batch.row_groups(), **options)
    assert torch.equal(result.mask, plain.mask)
    torch.testing.assert_close(result.logps, plain.logps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result.log_collision, plain.log_collision, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result.logits_sum, plain.logits_sum, atol=1e-4, rtol=1e-5)
    for mine, reference in zip(gradient, plain_gradient, strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-5, rtol=1e-4)


def test_group_forward_computes_the_prompt_once_and_packs_without_padding():
    """Groups of 40+1+30+2 and 1+2+1 tokens: one packed row of 73 + 4 = 77 tokens, no padding, against 5 plain rows
    of 70 — the prompt of 40 tokens is run once, not three times."""
    batch = groups_batch(GROUPS["very-unequal"])
    packed = pack_batch(batch.input_ids, batch.attention_mask, batch.completion_mask, groups=batch.row_groups())
    assert packed.input_ids.shape == (1, 77)
    assert (packed.segment_ids >= 0).all()


def test_layout_and_mask_of_a_group_of_three():
    """Prompt [5, 6], completions [7], [8, 9], [3]: packed 5 6 7 8 9 3 at positions 0 1 2 2 3 2; each completion
    attends to the prompt and to itself only."""
    batch = collate_groups([TokenizedGroup([5, 6], [[7], [8, 9], [3]], [2.0, 1.0, 0.0])], pad_token_id=0)
    packed = pack_batch(batch.input_ids, batch.attention_mask, batch.completion_mask, groups=batch.row_groups())
    assert packed.input_ids.tolist() == [[5, 6, 7, 8, 9, 3]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 2, 3, 2]]
    assert packed.branch.tolist() == [[0, 0, 1, 2, 2, 3]]
    # rows [5 6 7], [5 6 8 9], [5 6 3]: every row's prompt points at the first row's copy
    assert packed.source.tolist() == [[0, 1, 2, -1], [0, 1, 3, 4], [0, 1, 5, -1]]
    mask = attention_mask_4d(packed)[0, 0].int()
    assert mask[2].tolist() == [1, 1, 1, 0, 0, 0]  # 7
    assert mask[4].tolist() == [1, 1, 0, 1, 1, 0]  # 9: prompt, 8, itself
    assert mask[5].tolist() == [1, 1, 0, 0, 0, 1]  # 3: prompt and itself, never 7, 8 or 9


def test_pair_layout_is_the_k2_case_of_the_group_layout():
    """A (2B, T) pair batch packed with explicit pair groups is the default pair packing, field for field."""
    batch = groups_batch([(5, [3, 7]), (1, [9, 2]), (12, [1, 1])])
    # reorder the group batch's rows (g0c0, g0c1, g1c0, …) into the pair layout (chosen rows, then rejected rows)
    rows = torch.tensor([0, 2, 4, 1, 3, 5])
    ids, attention, completion = batch.input_ids[rows], batch.attention_mask[rows], batch.completion_mask[rows]
    default = pack_batch(ids, attention, completion)
    explicit = pack_batch(ids, attention, completion, groups=pair_groups(6))
    grouped = pack_batch(batch.input_ids, batch.attention_mask, batch.completion_mask, groups=batch.row_groups())
    for name in ("input_ids", "position_ids", "segment_ids", "branch", "source"):
        assert torch.equal(getattr(default, name), getattr(explicit, name)), name
    for name in ("input_ids", "position_ids", "segment_ids", "branch"):  # the same packing, whatever the row order
        assert torch.equal(getattr(default, name), getattr(grouped, name)), name
    assert torch.equal(default.source, grouped.source[rows])


def test_scorer_reads_the_groups_of_a_group_batch():
    """The module's Scorer packs a GroupBatch by its groups: equal to the plain forward (a pair reading of these rows
    would share a prompt between rows of different groups, and differ)."""
    model, batch = tiny_model(), groups_batch(GROUPS["k-varies"])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = completion_logprobs(model, batch.input_ids, batch.attention_mask, batch.completion_mask)
        result = Scorer(chunk_size=4)(model, batch)
    torch.testing.assert_close(result.logps, plain.logps, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_group_forward_with_flex_attention_equals_the_plain_forward():
    """FlexAttention's BlockMask for groups (forward only: no FlexAttention backward on CPU; compiles, ~20 s)."""
    model, batch = tiny_model(), groups_batch(GROUPS["k-varies"])
    with torch.no_grad():
        plain = completion_logprobs(model, batch.input_ids, batch.attention_mask, batch.completion_mask)
        model.config._attn_implementation = "flex_attention"
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="lightpref:")  # no fallback (torch's own deprecations aside)
            result = packed_completion_logprobs(model, batch.input_ids, batch.attention_mask, batch.completion_mask,
                                                groups=batch.row_groups())
    torch.testing.assert_close(result.logps, plain.logps, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("implementation", ["sdpa", "flex_attention"])
def test_group_forward_equals_the_plain_forward_on_gpu(implementation):
    model, batch = tiny_model().cuda(), groups_batch(GROUPS["k-varies"])
    ids, attention, completion = (batch.input_ids.cuda(), batch.attention_mask.cuda(), batch.completion_mask.cuda())
    weights = torch.randn(ids.shape, device="cuda")
    plain = completion_logprobs(model, ids, attention, completion)
    plain_gradient = torch.autograd.grad((plain.logps * weights).sum(), list(model.parameters()))
    model.config._attn_implementation = implementation
    result = packed_completion_logprobs(model, ids, attention, completion, groups=batch.group_ids.cuda())
    gradient = torch.autograd.grad((result.logps * weights).sum(), list(model.parameters()))
    torch.testing.assert_close(result.logps, plain.logps, atol=1e-4, rtol=1e-4)
    for mine, reference in zip(gradient, plain_gradient, strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-4, rtol=1e-3)
