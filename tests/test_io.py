"""The shared io helpers: cache root, fingerprints, atomic writes, eval mode."""

import os
import stat

import pytest
import torch

from lightpref.io import atomic_path, atomic_write_text, cache_root, eval_mode, file_sha256, fingerprint


def test_cache_root_expands_home_and_joins_parts(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("LIGHTPREF_CACHE", "~/elsewhere")
    assert cache_root("data") == tmp_path / "elsewhere" / "data"
    monkeypatch.delenv("LIGHTPREF_CACHE")
    assert cache_root() == tmp_path / ".cache" / "lightpref"


def test_fingerprint_ignores_key_order_and_sees_values():
    assert fingerprint({"a": 1, "b": [2]}) == fingerprint({"b": [2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    assert len(fingerprint({"a": 1}, length=8)) == 8


def test_file_sha256_is_the_hash_of_the_bytes(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"abc")
    assert file_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_atomic_path_keeps_the_old_file_on_error_and_uses_normal_permissions(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]  # no temporary left behind
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_eval_mode_restores_the_previous_mode():
    model = torch.nn.Dropout(0.5)
    with eval_mode(model):
        assert not model.training
    assert model.training
    model.eval()
    with eval_mode(model):
        pass
    assert not model.training
