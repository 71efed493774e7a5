"""Shared-prompt and packed forwards equal the plain forward; fallbacks; the token-budget batch sampler."""

import warnings

import pytest
import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

import lightpref.training.packing as packing
from lightpref.batch import PairBatch
from lightpref.data import PreferenceDataModule
from lightpref.data.collate import collate_pairs
from lightpref.data.sampling import ResumableSampler
from lightpref.data.token_budget import TokenBudgetBatchSampler, pair_tokens, token_lengths
from lightpref.data.tokenize import TokenizedPair
from lightpref.testing import tiny_model, tiny_tokenizer
from lightpref.training.forward import completion_logprobs
from lightpref.training.module import PreferenceModule
from lightpref.training.packing import attention_mask_4d, pack_batch, packed_completion_logprobs

MODES = {"shared+packed": (True, True), "shared": (True, False), "packed": (False, True)}


@pytest.fixture(autouse=True)
def fresh_warnings():
    packing._warned.clear()
    yield
    packing._warned.clear()


def pairs_batch(lengths: list[tuple[int, int, int]], seed: int = 0) -> PairBatch:
    """A collated batch of random pairs with (prompt, chosen, rejected) token counts ``lengths``."""
    generator = torch.Generator().manual_seed(seed)

    def ids(count: int) -> list[int]:
        return torch.randint(4, 320, (count,), generator=generator).tolist()

    return collate_pairs([TokenizedPair(ids(p), ids(c), ids(r)) for p, c, r in lengths], pad_token_id=0)


BATCHES = {
    "mixed": [(5, 3, 7), (1, 9, 2), (12, 1, 1), (4, 4, 4)],
    "batch-of-one": [(6, 2, 5)],
    "very-unequal": [(40, 1, 30), (1, 2, 1)],
}


def value_and_gradient(model, batch, forward, weights, **options):
    args = (model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    result = forward(*args, **options)
    gradient = torch.autograd.grad((result.logps * weights).sum(), list(model.parameters()))
    return result, gradient


@pytest.mark.parametrize("shape", BATCHES.values(), ids=BATCHES.keys())
@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
@pytest.mark.parametrize("chunk_size", [3, None])
def test_equals_the_plain_forward_in_value_and_gradient(shape, mode, chunk_size):
    model, batch = tiny_model(), pairs_batch(shape)
    weights = torch.randn(batch["input_ids"].shape, generator=torch.Generator().manual_seed(1))
    options = {"chunk_size": chunk_size, "with_collision": True}
    plain, plain_gradient = value_and_gradient(model, batch, completion_logprobs, weights, **options)
    shared, pack = mode
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        result, gradient = value_and_gradient(
            model, batch, packed_completion_logprobs, weights, **options, shared_prompt=shared, pack=pack
        )
    assert torch.equal(result.mask, plain.mask)
    assert (result.logps[~plain.mask] == 0).all()
    torch.testing.assert_close(result.logps, plain.logps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result.log_collision, plain.log_collision, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result.logits_sum, plain.logits_sum, atol=1e-4, rtol=1e-5)
    for mine, reference in zip(gradient, plain_gradient, strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_rows_capped_by_length_and_eager_attention(implementation):
    """Packed rows of at most 30 tokens (a longer pair alone in its row), under eager and SDPA attention."""
    model, batch = tiny_model(), pairs_batch(BATCHES["mixed"] + [(20, 6, 3)])
    model.config._attn_implementation = implementation
    args = (model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    plain = completion_logprobs(*args)
    packed = pack_batch(*args[1:], max_packed_length=30)
    assert packed.input_ids.shape == (3, 29)  # pairs of 15, 12, 14, 12 and 29 tokens: [15 12] [14 12] [29]
    assert packed.segment_ids[:, 0].tolist() == [0, 2, 4] and packed.segment_ids[0, 15].item() == 1
    result = packed_completion_logprobs(*args, max_packed_length=30)
    torch.testing.assert_close(result.logps, plain.logps, atol=1e-5, rtol=1e-5)


def test_layout_and_mask_of_a_shared_prompt_pair():
    """Pair 0: prompt [5, 6], chosen [7], rejected [8, 9]; pair 1: prompt [4], chosen [3], rejected [2].

    Packed: 5 6 7 8 9 | 4 3 2 at positions 0 1 2 2 3 | 0 1 1; rejected 8 attends to 5, 6 and itself, not to 7.
    """
    batch = collate_pairs([TokenizedPair([5, 6], [7], [8, 9]), TokenizedPair([4], [3], [2])], pad_token_id=0)
    packed = pack_batch(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    assert packed.input_ids.tolist() == [[5, 6, 7, 8, 9, 4, 3, 2]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 2, 3, 0, 1, 1]]
    assert packed.segment_ids.tolist() == [[0, 0, 0, 0, 0, 1, 1, 1]]
    # rows: [5 6 7], [4 3 0], [5 6 8 9], [4 2 0 0]; the rejected rows' prompt tokens point at the chosen rows'
    assert packed.source.tolist() == [[0, 1, 2, -1], [5, 6, -1, -1], [0, 1, 3, 4], [5, 7, -1, -1]]
    mask = attention_mask_4d(packed)[0, 0].int()
    assert mask[3].tolist() == [1, 1, 0, 1, 0, 0, 0, 0]  # 8: prompt and itself
    assert mask[4].tolist() == [1, 1, 0, 1, 1, 0, 0, 0]  # 9: prompt, 8, itself
    assert mask[2].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]  # 7: prompt and itself
    assert mask[7].tolist() == [0, 0, 0, 0, 0, 1, 0, 1]  # 2: its own prompt 4, never pair 0 or the chosen 3


def test_per_pair_rows_are_padded_and_padding_attends_only_to_itself():
    batch = collate_pairs([TokenizedPair([5, 6], [7], [8, 9]), TokenizedPair([4], [3], [2])], pad_token_id=0)
    packed = pack_batch(batch["input_ids"], batch["attention_mask"], batch["completion_mask"], pack=False)
    assert packed.input_ids.tolist() == [[5, 6, 7, 8, 9], [4, 3, 2, 0, 0]]
    assert packed.branch.tolist() == [[0, 0, 1, 2, 2], [0, 1, 2, -1, -1]]
    assert attention_mask_4d(packed)[1, 0, 3].int().tolist() == [0, 0, 0, 1, 0]


def test_prompt_is_shared_only_as_far_as_the_rows_agree():
    """Rows whose completions start at different places share only the common part before both."""
    input_ids = torch.tensor([[5, 6, 7, 8], [5, 6, 9, 0]])
    attention_mask = (input_ids > 0).long()
    completion_mask = torch.tensor([[0, 0, 0, 1], [0, 1, 1, 0]]).bool()
    packed = pack_batch(input_ids, attention_mask, completion_mask)
    assert packed.input_ids.tolist() == [[5, 6, 7, 8, 6, 9]]  # shared: [5] only
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 1, 2]]
    model = tiny_model()
    plain = completion_logprobs(model, input_ids, attention_mask, completion_mask)
    result = packed_completion_logprobs(model, input_ids, attention_mask, completion_mask)
    torch.testing.assert_close(result.logps, plain.logps, atol=1e-5, rtol=1e-5)


def test_left_padded_batch_falls_back_to_the_plain_forward_with_one_warning():
    model, batch = tiny_model(), pairs_batch(BATCHES["mixed"])
    flipped = {key: batch[key].flip(1) for key in ("input_ids", "attention_mask", "completion_mask")}  # left padding
    args = (model, flipped["input_ids"], flipped["attention_mask"], flipped["completion_mask"])
    with pytest.warns(UserWarning, match="not right-padded.*plain forward"):
        result = packed_completion_logprobs(*args)
    torch.testing.assert_close(result.logps, completion_logprobs(*args).logps, atol=0, rtol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        packed_completion_logprobs(*args)  # warned once only


def test_sliding_window_longer_than_a_row_falls_back():
    model, batch = tiny_model(), pairs_batch(BATCHES["mixed"])
    model.config.sliding_window = 8
    with pytest.warns(UserWarning, match="sliding-window"):
        packed_completion_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])


def test_attention_without_custom_masks_falls_back():
    AttentionInterface.register("opaque_sdpa", sdpa_attention_forward)
    AttentionMaskInterface.register("opaque_sdpa", sdpa_mask)
    model, batch = tiny_model(), pairs_batch(BATCHES["mixed"])
    model.config._attn_implementation = "opaque_sdpa"
    args = (model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    with pytest.warns(UserWarning, match="'opaque_sdpa' takes no custom mask"):
        result = packed_completion_logprobs(*args)
    torch.testing.assert_close(result.logps, completion_logprobs(*args).logps, atol=0, rtol=0)


def test_flash_attention_packs_without_sharing_the_prompt(monkeypatch):
    """FlashAttention takes no custom mask: sequences are packed, their boundaries read from the restarting position
    ids. (Run here by SDPA, for which transformers builds the same block-causal mask from the position ids.)"""
    calls = []

    def decoder_forward(input_ids, attention_mask, position_ids, use_cache):
        calls.append((input_ids, attention_mask, position_ids))
        monkeypatch.setattr(model.config, "_attn_implementation_internal", "sdpa")
        try:
            return original(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=use_cache
            )
        finally:
            monkeypatch.setattr(model.config, "_attn_implementation_internal", "flash_attention_2")

    model, batch = tiny_model(), pairs_batch([(3, 2, 1), (2, 1, 2)])
    args = (model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    plain = completion_logprobs(*args)
    decoder = model.get_decoder()
    original = decoder.forward
    monkeypatch.setattr(decoder, "forward", decoder_forward)
    monkeypatch.setattr(model.config, "_attn_implementation_internal", "flash_attention_2")
    with pytest.warns(UserWarning, match="prompts are not shared"):
        result = packed_completion_logprobs(*args)
    ((input_ids, attention_mask, position_ids),) = calls
    assert attention_mask is None and input_ids.shape == (1, 16)  # 5 + 3 + 4 + 4 tokens, unshared, one row
    assert position_ids.tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3]]
    torch.testing.assert_close(result.logps, plain.logps, atol=1e-5, rtol=1e-5)


def test_module_switches_route_to_the_same_result(tiny_checkpoint):
    """`shared_prompt` and `packing` change what the decoder runs on (one packed row with each prompt once, or the
    padded (2B, T) batch) and not the loss."""
    batch = pairs_batch(BATCHES["mixed"])
    losses, decoder_inputs = [], []
    for shared, pack in [(True, True), (False, False)]:
        module = PreferenceModule(str(tiny_checkpoint), shared_prompt=shared, packing=pack)
        module.configure_model()
        hook = module.policy.get_decoder().register_forward_pre_hook(
            lambda _, args, kwargs: decoder_inputs.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
        )
        losses.append(module(batch)[1])
        hook.remove()
    unique_tokens = sum(p + c + r for p, c, r in BATCHES["mixed"])  # each prompt once, no padding
    assert decoder_inputs == [(1, unique_tokens), tuple(batch.input_ids.shape)]
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=1e-5)


# --- token-budget batches ----------------------------------------------------------------------------------------

LENGTHS = [7, 3, 12, 5, 5, 9, 1, 11, 4, 6, 8, 2, 10, 3, 7]


@pytest.mark.parametrize("budget", [12, 17, 100])
def test_budget_batches_hold_every_pair_once_within_budget(budget):
    sampler = TokenBudgetBatchSampler(ResumableSampler(LENGTHS, seed=3), LENGTHS, budget)
    batches = list(sampler)
    assert sorted(index for batch in batches for index in batch) == list(range(len(LENGTHS)))
    assert all(sum(LENGTHS[index] for index in batch) <= budget for batch in batches)
    assert len(sampler) == len(batches)
    # greedy: a batch closes only when the next pair would not fit
    for batch, following in zip(batches, batches[1:], strict=False):
        assert sum(LENGTHS[index] for index in batch) + LENGTHS[following[0]] > budget


def test_budget_batches_are_deterministic_per_seed_and_epoch():
    def batches(seed: int, epoch: int) -> list[list[int]]:
        sampler = TokenBudgetBatchSampler(ResumableSampler(LENGTHS, seed=seed), LENGTHS, 15)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert batches(0, 0) == batches(0, 0)
    assert batches(0, 0) != batches(1, 0)
    assert batches(0, 0) != batches(0, 1)
    assert list(TokenBudgetBatchSampler(range(4), [3, 3, 3, 3], 6)) == [[0, 1], [2, 3]]


def test_budget_batches_shared_evenly_between_processes():
    ranks = [
        list(TokenBudgetBatchSampler(ResumableSampler(LENGTHS, seed=0), LENGTHS, 12, num_replicas=3, rank=rank))
        for rank in range(3)
    ]
    alone = list(TokenBudgetBatchSampler(ResumableSampler(LENGTHS, seed=0), LENGTHS, 12))
    assert len({len(batches) for batches in ranks}) == 1  # every process steps the same number of times
    assert [batch for step in zip(*ranks, strict=True) for batch in step][: len(alone)] == alone


def test_budget_smaller_than_a_pair_is_an_error_naming_the_fix():
    with pytest.raises(ValueError, match="smaller than pair 2, which has 12 tokens.*at least 12"):
        TokenBudgetBatchSampler(range(len(LENGTHS)), LENGTHS, 11)


def test_datamodule_forms_training_batches_by_tokens(tmp_path):
    records = [{"prompt": f"Question {i}?" * (1 + i % 3), "chosen": " Yes.", "rejected": " No."} for i in range(12)]
    data = PreferenceDataModule(tiny_tokenizer(), records=records, cache_dir=str(tmp_path), max_length=64,
                                max_prompt_length=48, max_tokens_per_batch=90)
    data.prepare_data()
    data.setup("fit")
    loader = data.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader)
    assert sorted(int(index) for batch in batches for index in batch["index"]) == list(range(12))
    for batch in batches:
        rows = [data.train_dataset[int(index)] for index in batch["index"]]
        assert sum(pair_tokens(row) for row in rows) <= 90
    assert loader.state_dict() == {"epoch": 0, "batches": len(batches)}


def test_token_lengths_read_from_arrow_follow_a_selection(tmp_path):
    """The budget's lengths come from the cache's list offsets; with ``val_fraction`` the training split is a
    selection of the cached rows, and each length must still be its own pair's."""
    records = [{"prompt": "Question?" * (1 + i % 4), "chosen": " Yes" * (1 + i % 3), "rejected": " No."}
               for i in range(20)]
    data = PreferenceDataModule(tiny_tokenizer(), records=records, cache_dir=str(tmp_path), max_length=64,
                                max_prompt_length=48, val_fraction=0.25)
    data.prepare_data()
    data.setup("fit")
    expected = [pair_tokens(data.train_dataset[index]) for index in range(len(data.train_dataset))]
    assert token_lengths(data.train_dataset) == expected and len(set(expected)) > 3


@pytest.mark.slow
def test_flex_attention_block_mask_equals_the_plain_forward():
    """FlexAttention gets the mask as a BlockMask. (Forward only: FlexAttention has no backward pass on CPU; it
    compiles, which takes ~20 s.)"""
    model, batch = tiny_model(), pairs_batch(BATCHES["mixed"])
    args = (model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    with torch.no_grad():
        plain = completion_logprobs(*args)
        model.config._attn_implementation = "flex_attention"
        result = packed_completion_logprobs(*args)
    torch.testing.assert_close(result.logps, plain.logps, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("implementation", ["sdpa", "flex_attention"])
def test_equals_the_plain_forward_on_gpu(implementation):
    model, batch = tiny_model().cuda(), {key: value.cuda() for key, value in pairs_batch(BATCHES["mixed"]).items()}
    weights = torch.randn(batch["input_ids"].shape, device="cuda")
    plain, plain_gradient = value_and_gradient(model, batch, completion_logprobs, weights)
    model.config._attn_implementation = implementation
    result, gradient = value_and_gradient(model, batch, packed_completion_logprobs, weights)
    torch.testing.assert_close(result.logps, plain.logps, atol=1e-4, rtol=1e-4)
    for mine, reference in zip(gradient, plain_gradient, strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-4, rtol=1e-3)
