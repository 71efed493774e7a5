"""The batch contract: layout, right padding, masks; views; and storing pairs as Arrow rows."""

import pytest
import torch

from lightpref.data.cache import rows_to_dataset
from lightpref.data.collate import collate_pairs, collate_rows, pair_from_row, pair_to_row
from lightpref.data.formats import PreferenceExample
from lightpref.data.tokenize import TokenizedPair, tokenize_pair
from lightpref.testing import tiny_tokenizer
from lightpref.views import InstructionPrefix

PAD = 0
FIRST = TokenizedPair(prompt_ids=[11, 12], chosen_ids=[21, 3], rejected_ids=[31, 32, 33, 3])
SECOND = TokenizedPair(prompt_ids=[13, 14, 15], chosen_ids=[3], rejected_ids=[34, 3])


def test_rows_are_chosen_then_rejected_right_padded_with_exact_masks():
    batch = collate_pairs([FIRST, SECOND], pad_token_id=PAD)
    assert batch.views == {} and batch.index is None and batch.split is None  # no views, no split position
    assert batch.input_ids.tolist() == [
        [11, 12, 21, 3, PAD, PAD],  # pair 1, prompt + chosen
        [13, 14, 15, 3, PAD, PAD],  # pair 2, prompt + chosen
        [11, 12, 31, 32, 33, 3],  # pair 1, prompt + rejected
        [13, 14, 15, 34, 3, PAD],  # pair 2, prompt + rejected
    ]
    assert batch.attention_mask.tolist() == [
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 0],
    ]
    assert batch.completion_mask.long().tolist() == [
        [0, 0, 1, 1, 0, 0],
        [0, 0, 0, 1, 0, 0],
        [0, 0, 1, 1, 1, 1],
        [0, 0, 0, 1, 1, 0],
    ]
    assert batch.input_ids.dtype == torch.long
    assert batch.attention_mask.dtype == torch.long
    assert batch.completion_mask.dtype == torch.bool


def test_pad_to_multiple_of_rounds_the_length_up():
    batch = collate_pairs([FIRST, SECOND], pad_token_id=PAD, pad_to_multiple_of=4)
    assert batch.input_ids.shape == (4, 8)
    assert batch.input_ids[:, 6:].eq(PAD).all() and not batch.attention_mask[:, 6:].any()


def test_view_batches_score_the_same_completion_tokens():
    tokenizer = tiny_tokenizer()
    views = {"brief": InstructionPrefix("Answer in one word, please.")}
    examples = [
        PreferenceExample([{"role": "user", "content": "Capital of France?"}], "Paris.", "I don't know."),
        PreferenceExample([{"role": "user", "content": "2+2?"}], "4", "5, or maybe 6."),
    ]
    pairs = [tokenize_pair(example, tokenizer, 128, 64, views=views) for example in examples]
    batch = collate_pairs(pairs, pad_token_id=tokenizer.pad_token_id)
    view = batch.views["brief"]
    assert view.input_ids.shape[0] == 4 and view.input_ids.shape[1] > batch.input_ids.shape[1]
    for row in range(4):
        plain = batch.input_ids[row][batch.completion_mask[row]]
        viewed = view.input_ids[row][view.completion_mask[row]]
        assert plain.tolist() == viewed.tolist()
    prompt = tokenizer.decode(view.input_ids[2][view.attention_mask[2].bool() & ~view.completion_mask[2]])
    user_turn = "<|im_start|>user\nAnswer in one word, please. Capital of France?<|im_end|>\n"
    assert prompt == user_turn + "<|im_start|>assistant\n"
    assert tokenizer.decode(view.input_ids[2][view.completion_mask[2]]) == "I don't know.<|im_end|>"


def test_pairs_with_different_views_cannot_share_a_batch():
    other = TokenizedPair([1], [2], [3], {"v": [1]})
    with pytest.raises(ValueError, match="same views"):
        collate_pairs([FIRST, other], pad_token_id=PAD)
    with pytest.raises(ValueError, match="empty list"):
        collate_pairs([], pad_token_id=PAD)


def test_pairs_survive_an_arrow_round_trip():
    pairs = [TokenizedPair([1, 2], [3], [4, 5], {"v": [9, 1, 2]}), TokenizedPair([6], [7, 8], [3], {"v": [9, 6]})]
    dataset = rows_to_dataset([pair_to_row(pair) for pair in pairs])
    assert [pair_from_row(row) for row in dataset] == pairs
    batch = collate_rows([dataset[0], dataset[1]], pad_token_id=PAD, split="val")
    assert batch.split == "val" and batch.index is None  # Arrow rows without a position
    assert torch.equal(batch.views["v"].input_ids, collate_pairs(pairs, PAD).views["v"].input_ids)
