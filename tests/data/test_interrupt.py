"""Stopping while tokenising, with real processes: workers end with their parent, SIGTERM says so and leaves no
temporary directory, and a temporary directory left by a killed process is removed by the next write."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lightpref.data import cache
from lightpref.data.datamodule import PreferenceDataModule
from lightpref.testing import tiny_tokenizer

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]

# prepare_data() with two workers, each chunk slowed down and announced by a file named after the worker's pid
TOKENISING = """
import json, os, sys, time
from pathlib import Path
import lightpref.data.chunk_pool as chunk_pool
import lightpref.data.pipeline as pipeline
from lightpref.data.datamodule import PreferenceDataModule
from lightpref.testing import tiny_tokenizer

out, original = Path(sys.argv[1]), chunk_pool.tokenize_chunk

def slow(job, chunk):
    (out / f"worker-{os.getpid()}").touch()
    time.sleep(0.5)
    return original(job, chunk)

chunk_pool.tokenize_chunk, pipeline.CHUNK_PAIRS = slow, 2
records = [{"prompt": f"q{i}", "chosen": " a", "rejected": " b"} for i in range(400)]
if len(sys.argv) == 2:
    PreferenceDataModule(tiny_tokenizer(), records=records, num_proc=2, cache_dir=str(out / "cache")).prepare_data()
else:  # the whole command: lightpref fit
    from lightpref.cli import main

    (out / "data.jsonl").write_text("".join(json.dumps(record) + "\\n" for record in records))
    sys.exit(main(["fit", "--trainer.max_steps", "1", "--trainer.accelerator", "cpu", "--model.pretrained",
                   sys.argv[2], "--trainer.default_root_dir", str(out / "runs"), "--data.train_files",
                   str(out / "data.jsonl"), "--data.num_proc", "2", "--data.cache_dir", str(out / "cache")]))
"""

# a process writing a cache directory, then sleeping: a live writer
WRITING = """
import sys, time
from pathlib import Path
from lightpref.data import cache
with cache.writing(Path(sys.argv[1]) / "cache" / "live") as temporary:
    print(temporary, flush=True)
    time.sleep(600)
"""


def start(script: str, out: Path, *args: str) -> subprocess.Popen:
    """The script in a new process, its stderr to ``out/stderr`` (a file: workers left running cannot hold it)."""
    environment = {**os.environ, "TQDM_DISABLE": "1"}
    with (out / "stderr").open("w") as stderr:
        return subprocess.Popen([sys.executable, "-c", script, str(out), *args], stdout=subprocess.PIPE,
                                stderr=stderr, text=True, env=environment)


def kill_left(pids: list[int]) -> None:
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def running_workers(out: Path, parent: subprocess.Popen) -> list[int]:
    """The pids of the two workers once both tokenise (each has announced a chunk)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        pids = [int(path.name.split("-")[1]) for path in out.glob("worker-*")]
        if len(pids) >= 2:
            assert all(alive(pid) for pid in pids)
            return pids
        assert parent.poll() is None, (out / "stderr").read_text()
        time.sleep(0.2)
    raise AssertionError("the workers did not start")


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(alive(pid) for pid in pids)


def temporaries(out: Path) -> list[Path]:
    return sorted((out / "cache").glob(".*.tmp-*"))


def test_workers_die_when_the_parent_is_killed_and_the_next_write_removes_its_directory(tmp_path):
    parent = start(TOKENISING, tmp_path)
    workers = running_workers(tmp_path, parent)
    try:
        parent.kill()
        parent.wait(30)
        assert gone_within(workers, 5)
    finally:
        kill_left(workers)
    [left] = temporaries(tmp_path)  # a killed process cleans nothing up itself
    module = PreferenceDataModule(tiny_tokenizer(), records=[{"prompt": "q", "chosen": " a", "rejected": " b"}],
                                  num_proc=1, cache_dir=str(tmp_path / "cache"))
    module.prepare_data()
    assert not left.exists() and temporaries(tmp_path) == []


def test_sigterm_while_fit_tokenises_says_so_and_leaves_nothing(tmp_path, tiny_checkpoint):
    parent = start(TOKENISING, tmp_path, str(tiny_checkpoint))
    workers = running_workers(tmp_path, parent)
    try:
        parent.send_signal(signal.SIGTERM)
        parent.wait(60)
        assert gone_within(workers, 5)
    finally:
        kill_left([parent.pid, *workers])
    error = (tmp_path / "stderr").read_text()
    assert parent.returncode == 128 + signal.SIGTERM
    [stopped] = [line for line in error.splitlines() if "tokenising was stopped" in line]
    assert "nothing was cached" in stopped and "rerun the same command" in stopped and "Traceback" not in error
    assert temporaries(tmp_path) == [] and not any((tmp_path / "cache").iterdir())


def test_a_directory_a_live_process_writes_is_kept(tmp_path):
    writer = start(WRITING, tmp_path)
    try:
        temporary = Path(writer.stdout.readline().strip())
        assert temporary.is_dir() and cache.remove_stale(tmp_path / "cache") == []
        assert temporary.is_dir()
    finally:
        writer.kill()
        writer.wait(30)
    assert cache.remove_stale(tmp_path / "cache") == [temporary] and not temporary.exists()


def test_a_start_that_reuses_the_cache_removes_a_killed_runs_folder(tmp_path):
    """The cache is complete, so nothing is written: the folder a killed run left is removed all the same."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(f'{{"prompt": "Q{i}:", "chosen": " yes", "rejected": " no"}}\n' for i in range(4)))
    data = PreferenceDataModule(tokenizer=tiny_tokenizer(), train_files=str(pairs), cache_dir=str(tmp_path / "cache"))
    data.prepare_data()
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = finished.stdout.strip()
    left = tmp_path / "cache" / f".{data.cache_directory().name}{cache.TEMPORARY_MARK}{dead}-0f0f0f0f"
    left.mkdir()
    data.prepare_data()
    assert not left.exists() and cache.is_complete(data.cache_directory())
