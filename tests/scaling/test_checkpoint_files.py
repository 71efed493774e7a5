"""Checkpoint files: written atomically (a crash mid-save keeps the previous checkpoint), and a truncated or
damaged one — file or sharded directory — is refused with an error that names it and the way out."""

import shutil

import pytest
import torch
import torch.distributed.checkpoint as dcp
from scaling_probe import fit_tiny

from lightpref.run import checkpointing
from lightpref.run.checkpointing import (
    AtomicCheckpointIO,
    CorruptCheckpointError,
    replace_atomically,
    validate_checkpoint,
)


@pytest.fixture(scope="module")
def saved_checkpoint(tiny_checkpoint, pairs_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    fit_tiny(tiny_checkpoint, pairs_file, root, loss="dpo", steps=1, every_n_train_steps=1)
    return root / "checkpoints" / "step=1.ckpt"


def test_truncated_checkpoint_is_refused_by_fit(saved_checkpoint, tiny_checkpoint, pairs_file, tmp_path):
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(saved_checkpoint.read_bytes()[: saved_checkpoint.stat().st_size // 2])
    with pytest.raises(CorruptCheckpointError, match="zip directory is missing") as error:
        fit_tiny(tiny_checkpoint, pairs_file, tmp_path, loss="dpo", steps=2, ckpt_path=str(truncated))
    assert str(truncated) in str(error.value) and "resume from an earlier checkpoint" in str(error.value)


def test_damaged_byte_fails_the_crc_check(saved_checkpoint, tmp_path):
    """torch.load would read this file without complaint; the weights would silently be wrong."""
    data = bytearray(saved_checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="fails its CRC check"):
        AtomicCheckpointIO().load_checkpoint(damaged)
    assert set(AtomicCheckpointIO().load_checkpoint(saved_checkpoint)) >= {"state_dict", "optimizer_states"}


def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "weights": torch.ones(3)}, target)

    def dies_half_way(obj, file):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpointing.torch, "save", dies_half_way)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"step": 2, "weights": torch.zeros(3)}, target)
    monkeypatch.undo()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["last.ckpt"]  # nothing partial left behind
    assert io.load_checkpoint(target)["step"] == 1


def test_sharded_directory_checks_and_atomic_replacement(tmp_path):
    def write_sharded(path, value):
        dcp.save({"state_dict": {"weight": torch.full((64,), value)}}, checkpoint_id=path)
        torch.save({"global_step": int(value)}, path / "meta.pt")

    good = tmp_path / "last.ckpt"
    write_sharded(good, 1.0)
    validate_checkpoint(good)

    staging = tmp_path / ".last.ckpt.partial"
    write_sharded(staging, 2.0)
    replace_atomically(staging, good)  # a directory onto a directory: the old one goes aside, then away
    assert sorted(path.name for path in tmp_path.iterdir()) == ["last.ckpt"]
    assert torch.load(good / "meta.pt")["global_step"] == 2

    broken = tmp_path / "broken.ckpt"
    shutil.copytree(good, broken)
    shard = next(broken.glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:10])
    with pytest.raises(CorruptCheckpointError, match=f"the shard {shard.name} should hold"):
        validate_checkpoint(broken)
    (broken / "meta.pt").unlink()
    with pytest.raises(CorruptCheckpointError, match="has no meta.pt"):
        validate_checkpoint(broken)
    with pytest.raises(FileNotFoundError, match="check `--ckpt_path`"):
        validate_checkpoint(tmp_path / "absent.ckpt")
