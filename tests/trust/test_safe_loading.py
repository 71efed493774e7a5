"""No checkpoint lightpref reads can run code: each path is handed a file whose unpickling would create a file,
and the file must not exist afterwards (and the error must name the checkpoint)."""

import pickle

import pytest
import torch
import torch.distributed.checkpoint as dcp
from faults import Payload
from scaling_probe import fit_tiny

from lightpref.run.checkpointing import AtomicCheckpointIO, validate_checkpoint
from lightpref.run.safe_load import UnsafeCheckpointError, torch_load


@pytest.fixture
def evil_file(saved_run, tmp_path):
    """A real checkpoint with one extra entry whose unpickling runs ``touch``; CRCs intact."""
    marker = tmp_path / "pwned"
    state = torch.load(saved_run / "checkpoints" / "step=1.ckpt", weights_only=True)
    state["extra"] = Payload(marker)
    path = tmp_path / "evil.ckpt"
    torch.save(state, path)
    return path, marker


@pytest.fixture
def evil_directory(tmp_path):
    """A sharded checkpoint directory whose distributed-checkpoint ``.metadata`` runs ``touch`` when unpickled."""
    marker = tmp_path / "pwned"
    path = tmp_path / "sharded.ckpt"
    dcp.save({"state_dict": {"weight": torch.ones(4)}}, checkpoint_id=path)
    torch.save({"global_step": 1}, path / "meta.pt")
    validate_checkpoint(path)  # a genuine one passes
    (path / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    return path, marker


def test_single_file_checkpoint_given_to_fit(evil_file, tiny_checkpoint, pairs_file, tmp_path, monkeypatch):
    """Even where the environment asks torch to unpickle freely by default, lightpref asks for weights only."""
    path, marker = evil_file
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(UnsafeCheckpointError, match=r"GLOBAL posix\.system") as error:
        fit_tiny(tiny_checkpoint, pairs_file, tmp_path / "run", loss="dpo", steps=2, ckpt_path=str(path))
    assert str(path) in str(error.value)
    assert not marker.exists()


def test_single_file_checkpoint_io_and_meta_file_reader(evil_file, monkeypatch):
    path, marker = evil_file
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(UnsafeCheckpointError):
        AtomicCheckpointIO().load_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError):  # how a sharded checkpoint's meta.pt is read
        torch_load(path)
    assert not marker.exists()


def test_sharded_metadata_is_validated_without_unpickling(evil_directory):
    path, marker = evil_directory
    with pytest.raises(UnsafeCheckpointError, match=r"posix\.system"):
        validate_checkpoint(path)
    assert not marker.exists()


def test_sharded_directory_given_to_fit_on_one_process(evil_directory, tiny_checkpoint, pairs_file, tmp_path):
    path, marker = evil_directory
    with pytest.raises(UnsafeCheckpointError, match=str(path)):
        fit_tiny(tiny_checkpoint, pairs_file, tmp_path / "run", loss="dpo", steps=2, ckpt_path=str(path))
    assert not marker.exists()


def test_lightprefs_own_checkpoints_load_weights_only(saved_run):
    """Everything lightpref stores (loop and callback state, RNG states, the policy source) is plain data."""
    state = torch.load(saved_run / "checkpoints" / "step=2.ckpt", weights_only=True)
    assert state["global_step"] == 2 and "lightpref" in state


def test_docstring_example_refuses_a_payload():
    import doctest

    from lightpref.run import safe_load

    failures, attempted = doctest.testmod(safe_load)
    assert attempted > 0 and failures == 0


def test_a_checkpoint_never_sets_config_values(saved_run, tiny_checkpoint, pairs_file, tmp_path):
    """Plain LightningCLI reads ``hyper_parameters`` from ``--ckpt_path`` into the configuration, so a file could
    switch on ``trust_remote_code`` or move the export; lightpref's CLI does not."""
    from lightpref.cli import main

    state = torch.load(saved_run / "checkpoints" / "step=2.ckpt", weights_only=True)
    state["hyper_parameters"] = {"trust_remote_code": True, "export_dir": str(tmp_path / "chosen-by-the-file")}
    crafted = tmp_path / "crafted.ckpt"
    torch.save(state, crafted)
    chosen = tmp_path / "chosen-by-the-user"
    code = main(["fit", "--model.pretrained", str(tiny_checkpoint), "--data.train_files", str(pairs_file),
                 "--data.batch_size", "4", "--data.max_length", "64", "--data.max_prompt_length", "32",
                 "--trainer.max_steps", "3", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                 "--trainer.default_root_dir", str(tmp_path / "run"), "--model.export_dir", str(chosen),
                 "--ckpt_path", str(crafted)])
    assert code == 0 and (chosen / "config.json").is_file()
    assert not (tmp_path / "chosen-by-the-file").exists()
