"""Two processes on CPU (gloo): DDP and FSDP2 train exactly like one process on the same global batch, the FSDP2
reference is sharded, frozen and unchanged, and an FSDP2 run stopped by SIGTERM resumes from its sharded checkpoint
with the same losses and weights as the run that was never stopped.

Each multi-process run goes through ``python -m lightpref fit`` in a subprocess, so Lightning's launcher starts the
second rank by re-running the CLI. The global batch is 4 pairs: 4 on one process, 2 on each of two. The loss is
NaN on one training call on one rank only (:class:`scaling_probe.NaNOnceDPO`, gradient finite), so a run matches
the single process only if every rank skips that step together.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from lightpref.cli import build_cli
from lightpref.run.checkpointing import validate_checkpoint

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
STEPS = 6
NAN_STEP = 2  # the step whose loss is NaN (on rank 0 of the single process, on rank 1 of two processes)
FSDP2 = {"class_path": "lightpref.run.strategies.FSDP2Strategy"}  # also registered by the CLI as "fsdp2"


def write_job(path: Path, checkpoint: Path, pairs: Path, root: Path, loss: dict, batch_size: int, export: bool = False,
              **probe) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_steps": STEPS, "accelerator": "cpu", "default_root_dir": str(root), "logger": False,
            "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
            "limit_val_batches": 0,
            "callbacks": [
                {"class_path": "scaling_probe.Probe", "init_args": {"path": str(root / "record"), **probe}},
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "init_args": {"dirpath": str(root / "checkpoints"), "every_n_train_steps": 2, "save_last": True}},
            ],
        },
        "model": {
            "pretrained": str(checkpoint), "loss": loss, "export_dir": str(root / "hf") if export else None,
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-2}},
            "lr_scheduler": {"class_path": "lightpref.training.schedules.WarmupCosineLR",
                             "init_args": {"warmup_steps": 2}},
        },
        "data": {"train_files": str(pairs), "batch_size": batch_size, "max_length": 64, "max_prompt_length": 32},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def nan_dpo(rank: int) -> dict:
    return {"class_path": "scaling_probe.NaNOnceDPO", "init_args": {"at_call": NAN_STEP, "on_rank": rank}}


def run_two_processes(config: Path, *args: str, strategy: dict | str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    flag = ["--trainer.strategy", strategy] if isinstance(strategy, str) else [
        "--trainer.strategy.class_path", strategy["class_path"]]
    command = [sys.executable, "-m", "lightpref", "fit", "--config", str(config), "--trainer.devices", "2",
               *flag, *args]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def record(root: Path) -> dict:
    return torch.load(root / "record" / "record.pt", weights_only=False)


def assert_same_weights(left: dict, right: dict, atol: float = 1e-5) -> None:
    assert left.keys() == right.keys()
    for name in left:
        torch.testing.assert_close(left[name], right[name], rtol=1e-4, atol=atol, msg=name)


def assert_same_losses(expected: dict, actual: dict, steps) -> None:
    for step in steps:
        assert actual["losses"][step] == pytest.approx(expected["losses"][step], rel=1e-5, abs=1e-6), step
        assert actual["learning_rates"][step] == pytest.approx(expected["learning_rates"][step], rel=1e-9)


@pytest.fixture(scope="module")
def one_process(tiny_checkpoint, pairs_file, tmp_path_factory) -> dict:
    """The reference run, in this process: batch 4, the NaN step on its only rank."""
    root = tmp_path_factory.mktemp("one-process")
    config = write_job(root / "job.yaml", tiny_checkpoint, pairs_file, root, nan_dpo(0), batch_size=4)
    build_cli(["fit", "--config", str(config), "--trainer.devices", "1"])
    return record(root)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_processes_train_like_one(strategy, one_process, tiny_checkpoint, pairs_file, tmp_path):
    config = write_job(tmp_path / "job.yaml", tiny_checkpoint, pairs_file, tmp_path, nan_dpo(1), batch_size=2,
                       export=True)
    run_two_processes(config, strategy=strategy)
    two = record(tmp_path)
    assert two["world_size"] == 2 and one_process["world_size"] == 1
    assert two["nonfinite_steps"] == one_process["nonfinite_steps"] == 1  # both ranks skipped the same step
    assert_same_losses(one_process, two, [step for step in range(1, STEPS + 1) if step != NAN_STEP])
    assert_same_weights(one_process["policy"], two["policy"])
    original = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).state_dict()
    assert_same_weights(original, two["reference"], atol=0)  # the reference never moved
    assert two["reference_frozen"] and not two["reference_in_optimizer"]
    sharded = strategy == "fsdp2"
    assert two["reference_dtensor"] is sharded and two["policy_dtensor"] is sharded
    saved = next((tmp_path / "checkpoints").glob("*step=6.ckpt"))
    assert saved.is_dir() is sharded  # FSDP2: a directory of shards
    validate_checkpoint(saved)
    assert not list((tmp_path / "checkpoints").glob(".*"))  # written atomically: nothing partial left
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").state_dict()  # gathered from shards
    assert_same_weights(two["policy"], exported, atol=0)


@pytest.fixture(scope="module")
def ragged_pairs(tmp_path_factory) -> Path:
    """Answers of many lengths, so the two ranks' batches differ in shape and SGDPO's generators (which draw one
    number per token position) drift apart: a resumed rank 1 needs its own generator state, not rank 0's."""
    path = tmp_path_factory.mktemp("ragged") / "pairs.jsonl"
    rows = [{"prompt": f"Human: question {index}? Assistant:", "chosen": " The answer is" + " very" * (index % 7)
             + f" {index}.", "rejected": " I don't know" + " at all" * (index % 3) + "."} for index in range(24)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_fsdp2_sigterm_then_resume_from_sharded_checkpoint(tiny_checkpoint, ragged_pairs, tmp_path):
    """SGDPO under FSDP2: each rank's sampling generator, the sharded weights and optimiser state, the schedule and
    the data position must all come back for the resumed run to match."""
    pairs_file = ragged_pairs
    sgdpo = {"class_path": "lightpref.losses.sgdpo.SGDPO"}
    full = write_job(tmp_path / "full.yaml", tiny_checkpoint, pairs_file, tmp_path / "full", sgdpo, batch_size=2)
    run_two_processes(full, strategy=FSDP2)
    uninterrupted = record(tmp_path / "full")

    root = tmp_path / "run"
    stopped = write_job(tmp_path / "stop.yaml", tiny_checkpoint, pairs_file, root, sgdpo, batch_size=2,
                        sigterm_at_step=3)
    result = run_two_processes(stopped, strategy=FSDP2)  # exit status 0: a clean exit
    assert "SIGTERM: saved" in result.stdout + result.stderr
    last = root / "checkpoints" / "last.ckpt"
    assert last.is_dir() and len(list(last.glob("*.distcp"))) == 2
    validate_checkpoint(last)
    assert not (root / "record" / "record.pt").exists()  # it never reached the end of training

    resume = write_job(tmp_path / "resume.yaml", tiny_checkpoint, pairs_file, root, sgdpo, batch_size=2)
    run_two_processes(resume, "--ckpt_path", "last", strategy=FSDP2)
    resumed = record(root)
    assert sorted(resumed["losses"]) == list(range(4, STEPS + 1))
    assert resumed["batches"] == uninterrupted["batches"][3:]
    assert_same_losses(uninterrupted, resumed, range(4, STEPS + 1))
    assert_same_weights(uninterrupted["policy"], resumed["policy"], atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="FSDP1 (torch FullyShardedDataParallel) needs CUDA")
def test_fsdp1_on_gpus_trains_like_one_process(one_process, tiny_checkpoint, pairs_file, tmp_path):
    devices = min(2, torch.cuda.device_count())
    config = write_job(tmp_path / "job.yaml", tiny_checkpoint, pairs_file, tmp_path, nan_dpo(devices - 1),
                       batch_size=4 // devices)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "lightpref", "fit", "--config", str(config), "--trainer.accelerator", "gpu",
               "--trainer.devices", str(devices),
               "--trainer.strategy.class_path", "lightpref.run.strategies.FSDPStrategy"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-6000:]
    run = record(tmp_path)
    assert run["nonfinite_steps"] == 1
    assert_same_losses(one_process, run, [1])  # later steps drift by GPU vs CPU rounding
    assert_same_weights(one_process["policy"], run["policy"], atol=1e-3)
    original = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).state_dict()
    assert_same_weights(original, run["reference"], atol=0)
    saved = next((tmp_path / "checkpoints").glob("*step=6.ckpt"))
    assert saved.is_dir()
    validate_checkpoint(saved)


def test_two_processes_share_the_reference_cache_work(one_process, tiny_checkpoint, pairs_file, tmp_path,
                                                      isolated_cache):
    """DDP with `precompute_reference`: each rank computes its half of the pairs, the shards are merged into one
    cache file covering every pair, nothing is left behind, and training matches the single process that ran the
    reference live."""
    before = set((isolated_cache / "reference").glob("*/train.pt"))
    config = write_job(tmp_path / "job.yaml", tiny_checkpoint, pairs_file, tmp_path, nan_dpo(1), batch_size=2)
    run_two_processes(config, "--model.precompute_reference", "true", strategy="ddp")
    two = record(tmp_path)
    assert_same_losses(one_process, two, [step for step in range(1, STEPS + 1) if step != NAN_STEP])
    assert_same_weights(one_process["policy"], two["policy"])
    [cache_file] = set((isolated_cache / "reference").glob("*/train.pt")) - before
    stored = torch.load(cache_file, weights_only=True)
    pairs = sum(1 for _ in pairs_file.open())
    assert stored["views"][""]["counts"].shape == (pairs, 2) and (stored["views"][""]["counts"] > 0).all()
    assert not list(cache_file.parent.glob("*.part"))  # every rank's shard merged and removed


def test_last_with_nothing_to_resume_stops_both_processes(tiny_checkpoint, pairs_file, tmp_path):
    """`--ckpt_path last` on two processes with no checkpoint: both stop with the error (one message), none waits
    for the other until a timeout. (Under Lightning's own launcher every process finds the same nothing; processes
    that disagree are tested with stand-ins in tests/trust/test_resume_checks.py.)"""
    config = write_job(tmp_path / "job.yaml", tiny_checkpoint, pairs_file, tmp_path / "run", {"class_path":
                       "lightpref.losses.dpo.DPO"}, batch_size=2)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "lightpref", "fit", "--config", str(config), "--trainer.devices", "2",
               "--trainer.strategy", "ddp", "--ckpt_path", "last"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=240)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-4000:]
    assert "no complete checkpoint to resume from" in result.stderr
    assert "Traceback" not in result.stderr
