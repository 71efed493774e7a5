"""The reference: its cache on disk detects any damage to what it stores; the mode is chosen once, from settings."""

import pytest
import torch
from peft import LoraConfig

from lightpref.batch import PairBatch
from lightpref.data.collate import collate_pairs
from lightpref.data.tokenize import TokenizedPair
from lightpref.losses import build
from lightpref.models.pretrained import ModelSource
from lightpref.training.forward import TokenLogProbs
from lightpref.training.packing import Scorer
from lightpref.training.reference import AdapterBase, FrozenCopy, NoReference, Precomputed, build_reference
from lightpref.training.reference_cache import ReferenceCache

PAIRS = [TokenizedPair([5, 6], [7, 8, 9], [10]), TokenizedPair([5], [11], [12, 13]),
         TokenizedPair([4, 4, 4], [14, 15], [16, 17, 18])]


def batches(indices):
    """The pairs at ``indices``, one per batch, as the ordered loader gives them."""
    for index in indices:
        batch = collate_pairs([PAIRS[index]], pad_token_id=0)
        batch.index, batch.split = torch.tensor([index]), "train"
        yield batch


def fake_reference(sequences):
    """Per-token 'log-probs' that identify their token: −token id / 100."""
    logps = torch.where(sequences.completion_mask, -sequences.input_ids / 100, 0.0)
    return TokenLogProbs(logps=logps, mask=sequences.completion_mask, logits_sum=torch.zeros(len(logps)))


@pytest.fixture
def cache_file(tmp_path):
    cache = ReferenceCache("key", tmp_path / "key")
    cache.build("train", len(PAIRS), batches, fake_reference)
    return tmp_path / "key" / "train.pt"


def test_cache_gives_back_each_pairs_values_by_index(cache_file):
    cache = ReferenceCache("key", cache_file.parent)
    assert cache.load("train")
    batch = collate_pairs([PAIRS[2], PAIRS[0]], pad_token_id=0)
    batch.index, batch.split = torch.tensor([2, 0]), "train"
    expected = fake_reference(batch).logps
    torch.testing.assert_close(cache.tokens(batch).logps, expected)


@pytest.mark.parametrize("stored", ["counts", "offsets", "values"])
def test_a_flipped_bit_in_any_stored_tensor_rebuilds_with_the_path_named(cache_file, stored):
    payload = torch.load(cache_file, weights_only=True)
    payload["views"][""][stored].view(torch.uint8)[0] ^= 1  # one bit of the first element
    torch.save(payload, cache_file)
    cache = ReferenceCache("key", cache_file.parent)
    with pytest.warns(UserWarning, match=f"reference cache {cache_file} is unusable.*checksum"):
        assert not cache.load("train")
    assert not cache_file.exists()  # removed, so the run computes it again


def test_offsets_that_do_not_tile_the_values_are_refused_even_with_a_matching_checksum(cache_file):
    from lightpref.training.reference_cache import checksum

    payload = torch.load(cache_file, weights_only=True)
    stored = payload["views"][""]
    stored["offsets"][1, 0] += 1
    stored["checksum"] = checksum(stored)
    torch.save(payload, cache_file)
    with pytest.warns(UserWarning, match="offsets do not match"):
        assert not ReferenceCache("key", cache_file.parent).load("train")


def test_stale_cache_message_names_an_option_that_exists(cache_file):
    import inspect

    from lightpref.training.module import PreferenceModule

    cache = ReferenceCache("key", cache_file.parent)
    cache.load("train")
    batch = collate_pairs([PAIRS[1]], pad_token_id=0)
    batch.index, batch.split = torch.tensor([0]), "train"  # pair 1's tokens, pair 0's position
    with pytest.raises(RuntimeError, match="model.reference_cache_dir") as error:
        cache.tokens(batch)
    assert str(cache_file) in str(error.value)
    assert "reference_cache_dir" in inspect.signature(PreferenceModule).parameters


def test_mode_is_chosen_from_the_settings_once():
    scorer, plain = Scorer(), ModelSource("some/model")
    lora = ModelSource("some/model", peft={"peft_type": "LORA", "r": 4})
    assert type(build_reference(False, plain, None, scorer)) is NoReference
    assert type(build_reference(True, plain, None, scorer)) is FrozenCopy
    assert type(build_reference(True, lora, None, scorer)) is AdapterBase
    other = build_reference(True, plain, ModelSource("other/model"), scorer)
    assert type(other) is FrozenCopy and other.source.name == "other/model" and not other.copy_policy
    precomputed = build_reference(True, lora, None, scorer, precompute=True)
    assert type(precomputed) is Precomputed and type(precomputed.inner) is AdapterBase
    assert precomputed.source.peft is None  # the adapter-free base is what its cache is keyed by


def test_no_reference_refuses_to_score():
    reference = build_reference(build("simpo").requires_reference, ModelSource("m"), None, Scorer())
    with pytest.raises(RuntimeError, match="requires_reference = False"):
        reference.token_logprobs(PairBatch.of(collate_pairs(PAIRS[:1], pad_token_id=0)))


def test_batch_docstring_examples():
    import doctest

    import lightpref.batch

    failures, attempted = doctest.testmod(lightpref.batch)
    assert attempted > 0 and failures == 0


def test_contradictory_reference_settings_are_refused_naming_the_keys(tiny_checkpoint):
    from lightpref.training.module import PreferenceModule

    lora = LoraConfig(r=4, target_modules=["q_proj"])
    with pytest.raises(ValueError, match="`model.reference` cannot be combined with `model.peft`"):
        PreferenceModule(str(tiny_checkpoint), peft=lora, reference=str(tiny_checkpoint))
    with pytest.raises(ValueError, match="either `model.peft` .* or `model.sft_adapter`"):
        PreferenceModule(str(tiny_checkpoint), peft=lora, sft_adapter=str(tiny_checkpoint))
