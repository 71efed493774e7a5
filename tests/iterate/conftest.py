"""A tiny ``lightpref iterate`` config: the tiny random Llama, character-length reward, 2 rounds of 3 steps."""

from pathlib import Path

import pytest
import yaml

PROMPTS = ["Hello there", "What is the capital of France?", "How do I bake bread?", "Tell me a joke",
           "Sure thing", "Why is the sky blue?", "Please ask someone else", "The quick brown fox"]


def write_config(path: Path, checkpoint: Path, out_dir: Path, loss: str = "dpo", **iterate) -> Path:
    config = {
        "seed_everything": 0,
        "iterate": {
            "out_dir": str(out_dir),
            "rounds": 2,
            "reward": {"class_path": "lightpref.evaluation.CompletionLength"},
            "prompts": PROMPTS,
            "prompts_per_round": 6,
            "samples_per_prompt": 3,
            "max_new_tokens": 8,
            "sampling_batch_size": 6,  # chunks of 2 prompts: 3 chunks per round
            "eval_prompts": ["Thanks a lot", "Good morning"],
            "checkpoint_every_n_steps": 1,
            **iterate,
        },
        "model": {"pretrained": str(checkpoint), "loss": loss,
                  "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01}}},
        "data": {"batch_size": 2, "max_length": 64, "max_prompt_length": 32},
        "trainer": {"max_steps": 3, "accelerator": "cpu", "enable_progress_bar": False,
                    "enable_model_summary": False, "log_every_n_steps": 1},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def iterate_config(tiny_checkpoint, tmp_path):
    def make(name: str = "run", **settings) -> tuple[Path, Path]:
        out = tmp_path / name
        return write_config(tmp_path / f"{name}.yaml", tiny_checkpoint, out, **settings), out

    return make
