"""The GenerationEvaluation callback in tiny-model fits: what it logs, when, against which reference, and that it
leaves training's random numbers alone."""

import inspect

import pytest
import torch
import yaml
from eval_support import fit
from lightning.pytorch import Callback
from lightning.pytorch.loggers import CSVLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.nn import functional

from lightpref.cli import build_cli
from lightpref.evaluation import CompletionLength, GenerationEvaluation, VaderSentiment
from lightpref.losses import LossOutput, PreferenceLoss
from lightpref.training.module import PreferenceModule

PROMPTS = [f"Human: question {index}? Assistant:" for index in range(6)]


def evaluation(**kwargs):
    settings = {"reward": CompletionLength(), "prompts": PROMPTS, "max_new_tokens": 8, "batch_size": 6}
    return GenerationEvaluation(**{**settings, **kwargs})


class NoReference(PreferenceLoss):
    """A reference-free test loss: −logσ(log π(y⁺) − log π(y⁻))."""

    requires_reference = False

    def forward(self, policy, reference):
        losses = -functional.logsigmoid(policy.chosen - policy.rejected)
        return LossOutput(losses, policy.chosen.detach(), policy.rejected.detach())


class RandomDraws(Callback):
    """Draws from the global RNG before every training batch, as dropout would."""

    def __init__(self):
        self.draws = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.draws.append(torch.rand(()).item())


def test_logs_reward_kl_and_samples_every_validation(tiny_checkpoint, pairs_file, tmp_path):
    callback = evaluation(evaluate_at_start=True)
    _, trainer, _ = fit(tiny_checkpoint, pairs_file, tmp_path, callbacks=[callback], steps=4)
    assert [entry["step"] for entry in callback.history] == [0, 2, 4]  # the sanity check is not an evaluation
    start, last = callback.history[0], callback.history[-1]
    assert start["kl"] == pytest.approx(0.0, abs=1e-4)  # before training the policy is the reference
    assert last["kl"] > 0  # the policy moved (KL > 0 with many samples: test_eval_generation)
    metrics = trainer.callback_metrics
    assert metrics["eval/reward"].item() == pytest.approx(last["reward"])
    assert metrics["eval/kl"].item() == pytest.approx(last["kl"])
    assert 1 <= metrics["eval/length"].item() <= 8
    events = EventAccumulator(trainer.log_dir, size_guidance={"scalars": 0, "tensors": 0}).Reload()
    for name in ("eval/reward", "eval/kl"):  # at Lightning's step index, the same as the `val/` metrics'
        assert [event.step for event in events.Scalars(name)] == [0] + [e.step for e in events.Scalars("val/loss")]
        assert [event.value for event in events.Scalars(name)] == pytest.approx(
            [entry[name.removeprefix("eval/")] for entry in callback.history], rel=1e-5, abs=1e-6
        )
    table = events.Tensors("eval/samples/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert table.startswith("| prompt | completion | reward | log π − log π_ref |")
    assert table.count("\n") == 1 + 6 and PROMPTS[0] in table


def test_every_n_validations_and_every_n_steps(tiny_checkpoint, pairs_file, tmp_path):
    by_validation = evaluation(every_n_validations=2)
    by_step = evaluation(every_n_steps=1)
    fit(tiny_checkpoint, pairs_file, tmp_path, callbacks=[by_validation, by_step], steps=4, logger=False)
    assert [entry["step"] for entry in by_validation.history] == [4]
    assert [entry["step"] for entry in by_step.history] == [1, 2, 3, 4]


def test_training_random_numbers_are_untouched(tiny_checkpoint, pairs_file, tmp_path):
    plain, evaluated = RandomDraws(), RandomDraws()
    torch.manual_seed(0)
    fit(tiny_checkpoint, pairs_file, tmp_path / "a", callbacks=[plain], loss=NoReference(), steps=2, logger=False)
    torch.manual_seed(0)
    callbacks = [evaluation(evaluate_at_start=True, every_n_steps=1), evaluated]  # and it loads a reference
    fit(tiny_checkpoint, pairs_file, tmp_path / "b", callbacks=callbacks, loss=NoReference(), steps=2, logger=False)
    assert evaluated.draws == plain.draws and len(plain.draws) == 2


def test_reference_free_loss_loads_the_initial_policy_or_skips_kl(tiny_checkpoint, pairs_file, tmp_path):
    loaded = evaluation(evaluate_at_start=True)
    module, trainer, _ = fit(tiny_checkpoint, pairs_file, tmp_path, callbacks=[loaded], loss=NoReference(), steps=2,
                          logger=False)
    assert module.reference.model is None and "eval/kl" in trainer.callback_metrics
    assert loaded.history[0]["kl"] == pytest.approx(0.0, abs=1e-4)  # the loaded reference is the initial policy
    assert abs(loaded.history[-1]["kl"]) > 1e-3  # … and it stayed there while the policy moved
    skipped = evaluation(missing_reference="skip")
    with pytest.warns(UserWarning, match="no reference model"):
        _, trainer, _ = fit(tiny_checkpoint, pairs_file, tmp_path, callbacks=[skipped], loss=NoReference(), steps=2,
                         logger=False)
    assert "eval/reward" in trainer.callback_metrics and "eval/kl" not in trainer.callback_metrics


@pytest.mark.skipif("peft" not in inspect.signature(PreferenceModule).parameters,
                    reason="PreferenceModule has no `peft` argument (LoRA) in this version")
def test_lora_policy_is_compared_with_its_adapter_switched_off(tiny_checkpoint, pairs_file, tmp_path):
    from peft import LoraConfig

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    module = PreferenceModule(str(tiny_checkpoint), peft=lora, export_dir=None,
                              optimizer=lambda params: torch.optim.AdamW(params, lr=5e-2))
    callback = evaluation(evaluate_at_start=True)
    _, trainer, _ = fit(tiny_checkpoint, pairs_file, tmp_path, callbacks=[callback], module=module, steps=2,
                     logger=False)
    assert module.reference.model is None and callback._loaded_reference is None  # no second copy was loaded
    assert callback.history[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # a fresh LoRA adapter changes nothing
    assert abs(callback.history[-1]["kl"]) > 1e-3
    assert module.policy.active_adapter == "policy" and any(p.requires_grad for p in module.policy.parameters())


def test_other_loggers_get_the_numbers_only(tiny_checkpoint, pairs_file, tmp_path):
    callback = evaluation()
    _, trainer, _ = fit(tiny_checkpoint, pairs_file, tmp_path, callbacks=[callback], steps=2,
                     logger=CSVLogger(tmp_path))
    assert "eval/reward" in (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text()


def test_configured_under_trainer_callbacks(tiny_checkpoint, pairs_file, tmp_path):
    config = {
        "trainer": {"max_steps": 1, "accelerator": "cpu", "default_root_dir": str(tmp_path), "callbacks": [{
            "class_path": "lightpref.evaluation.GenerationEvaluation",
            "init_args": {"reward": {"class_path": "lightpref.evaluation.VaderSentiment"}, "num_prompts": 4,
                          "every_n_validations": 2, "temperature": 0.7, "chat_template": True},
        }]},
        "model": {"pretrained": str(tiny_checkpoint)},
        "data": {"train_files": str(pairs_file)},
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    with pytest.warns(UserWarning, match="not exactly KL"):
        cli = build_cli(["fit", "--config", str(tmp_path / "job.yaml")], run=False)
    (callback,) = [c for c in cli.trainer.callbacks if isinstance(c, GenerationEvaluation)]
    assert isinstance(callback.reward, VaderSentiment)
    assert len(callback.prompts) == 4 and callback.every_n_validations == 2 and callback.settings.chat_template


@pytest.mark.parametrize("kwargs, match", [
    ({"prompts": PROMPTS, "prompts_file": "p.txt"}, "not both"),
    ({"every_n_steps": 0}, "`every_n_steps` must be a positive integer"),
    ({"missing_reference": "copy"}, "`missing_reference`"),
    ({"prompts": None, "prompts_file": "/no/such/file.jsonl"}, "does not exist"),
])
def test_invalid_settings(kwargs, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        evaluation(**kwargs)
    with pytest.raises(TypeError, match="RewardFunction"):
        GenerationEvaluation(reward=len)
