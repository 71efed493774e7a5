"""Helpers test modules import by name (a ``conftest`` is not importable reliably: every test folder has one)."""

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HH_SAMPLE = REPO.parent / "shared" / "data" / "hh-rlhf-harmless-sample.jsonl"


def write_pairs(path: Path, count: int = 24) -> Path:
    """Explicit-format pairs whose chosen and rejected answers differ in a learnable way."""
    with path.open("w") as file:
        for index in range(count):
            file.write(json.dumps({
                "prompt": f"Human: question {index}? Assistant:",
                "chosen": f" The answer is {index}.",
                "rejected": " I don't know.",
            }) + "\n")
    return path
