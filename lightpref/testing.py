"""Tiny offline models and tokenizers for tests: no download, built in milliseconds.

Used by lightpref's own tests and usable by plugin authors' tests.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "Human: What is the capital of France? Assistant: The capital of France is Paris.",
    "Human: How do I bake bread? Assistant: Mix flour, water, salt and yeast, then bake it.",
    "I don't know. Please ask someone else. That is a rude question.",
    "The quick brown fox jumps over the lazy dog. 0123456789 !?.,:;'\"()",
    "user assistant system hello thanks sure here is an answer with some words",
]


def tiny_tokenizer(vocab_size: int = 320, bos: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with a ChatML chat template, ``<|im_end|>`` as EOS and a pad token.

    With ``bos=True`` it also prepends ``<s>`` to every encoded text, as Llama-style tokenizers do.
    """
    special = ["<pad>", "<s>", "<|im_start|>", "<|im_end|>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(_CORPUS, trainer=trainer)
    if bos:
        from tokenizers.processors import TemplateProcessing

        backend.post_processor = TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", backend.token_to_id("<s>"))]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def tiny_model(vocab_size: int = 320, seed: int = 0) -> LlamaForCausalLM:
    """A randomly initialised two-layer Llama small enough to train on a CPU in tests."""
    import torch

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=3,
    )
    return LlamaForCausalLM(config)


def save_tiny_checkpoint(directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny model and its tokenizer to ``directory`` so that ``from_pretrained(directory)`` loads both."""
    directory = Path(directory)
    tokenizer = tiny_tokenizer()
    tiny_model(vocab_size=len(tokenizer), seed=seed).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
