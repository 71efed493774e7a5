"""The LightningModule on a tiny model: what trains, what stays frozen, what is saved, what the loss receives."""

import torch
from lightning.pytorch import Trainer
from transformers import AutoModelForCausalLM

from lightpref.data import PreferenceDataModule
from lightpref.losses import LogProbs, LossOutput, PreferenceLoss
from lightpref.module import PreferenceModule
from lightpref.views import InstructionPrefix


def fit(checkpoint, pairs_file, root, loss="dpo", steps=4, ckpt_path=None, module=None):
    module = module or PreferenceModule(
        str(checkpoint), loss=loss, optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2)
    )
    data = PreferenceDataModule(
        tokenizer=str(checkpoint), train_files=str(pairs_file), val_fraction=0.25, batch_size=4,
        max_length=64, max_prompt_length=32,
    )
    trainer = Trainer(
        max_steps=steps, default_root_dir=root, accelerator="cpu", enable_progress_bar=False,
        enable_model_summary=False, val_check_interval=2, check_val_every_n_epoch=None, log_every_n_steps=1,
    )
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return module, trainer


def weights(model):
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def test_policy_trains_reference_stays_frozen(tiny_checkpoint, pairs_file, tmp_path):
    original = weights(AutoModelForCausalLM.from_pretrained(tiny_checkpoint))
    module, _ = fit(tiny_checkpoint, pairs_file, tmp_path)
    policy, reference = weights(module.policy), weights(module.reference)
    assert any(not torch.equal(policy[name], original[name]) for name in original), "the policy did not change"
    assert all(torch.equal(reference[name], original[name]) for name in original), "the reference changed"
    assert not any(p.requires_grad for p in module.reference.parameters())
    assert not module.reference.training
    module.train()
    assert not module.reference.training and module.policy.training
    optimised = {id(p) for group in module.trainer.optimizers[0].param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in module.reference.parameters()}


def test_metrics_under_familiar_names(tiny_checkpoint, pairs_file, tmp_path):
    _, trainer = fit(tiny_checkpoint, pairs_file, tmp_path)
    names = set(trainer.callback_metrics)
    for name in ["loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                 "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected"]:
        assert name in names and f"val/{name}" in names, name
    margin = trainer.callback_metrics["val/rewards/margins"]
    gap = trainer.callback_metrics["val/rewards/chosen"] - trainer.callback_metrics["val/rewards/rejected"]
    torch.testing.assert_close(margin, gap)


def test_checkpoint_has_no_reference_and_resumes(tiny_checkpoint, pairs_file, tmp_path):
    _, trainer = fit(tiny_checkpoint, pairs_file, tmp_path, steps=2)
    path = trainer.checkpoint_callback.best_model_path or trainer.checkpoint_callback.last_model_path
    state = torch.load(path, weights_only=False)["state_dict"]
    assert state and not [key for key in state if key.startswith("reference.")]
    assert any(key.startswith("policy.") for key in state)
    module, trainer = fit(tiny_checkpoint, pairs_file, tmp_path / "resumed", steps=4, ckpt_path=path)
    assert trainer.global_step == 4


def test_export_loads_and_gives_the_same_logits(tiny_checkpoint, pairs_file, tmp_path):
    module, trainer = fit(tiny_checkpoint, pairs_file, tmp_path)
    exported = AutoModelForCausalLM.from_pretrained(f"{trainer.log_dir}/huggingface")
    input_ids = torch.tensor([[5, 6, 7, 8, 9]])
    module.policy.eval()
    torch.testing.assert_close(exported(input_ids).logits, module.policy(input_ids).logits)


class Recorder(PreferenceLoss):
    """A test loss that keeps what it was given and declares a view, token values and token means."""

    needs_token_logps = True
    length_normalized = True

    def __init__(self, requires_reference: bool = True) -> None:
        super().__init__()
        self.requires_reference = requires_reference
        self.views = {"noted": InstructionPrefix("Note:")}
        self.seen: list[tuple[LogProbs, LogProbs | None]] = []
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, policy, reference):
        self.seen.append((policy, reference))
        losses = -(policy.chosen - policy.rejected) + 0 * self.anchor
        return LossOutput(losses, policy.chosen.detach(), policy.rejected.detach())


def test_loss_receives_exactly_what_it_declared(tiny_checkpoint, pairs_file, tmp_path):
    loss = Recorder()
    fit(tiny_checkpoint, pairs_file, tmp_path, loss=loss, steps=1)
    policy, reference = next(seen for seen in loss.seen if seen[0].chosen.requires_grad)
    lengths = policy.chosen_mask.sum(-1)
    torch.testing.assert_close(policy.chosen, policy.chosen_tokens.sum(-1) / lengths)  # token means, as declared
    assert policy.chosen.requires_grad and not reference.chosen.requires_grad
    view = policy.views["noted"]
    assert not view.chosen.requires_grad and not reference.views["noted"].chosen.requires_grad
    torch.testing.assert_close(view.chosen_lengths, policy.chosen_lengths)  # same completions, other prompt
    assert not torch.allclose(view.chosen, policy.chosen)


def test_reference_free_loss_never_builds_a_reference(tiny_checkpoint, pairs_file, tmp_path):
    loss = Recorder(requires_reference=False)
    module, _ = fit(tiny_checkpoint, pairs_file, tmp_path, loss=loss, steps=1)
    assert module.reference is None and loss.seen[0][1] is None


def test_plain_loss_gets_no_token_values(tiny_checkpoint, pairs_file, tmp_path):
    module = PreferenceModule(str(tiny_checkpoint))
    module.configure_model()
    data = PreferenceDataModule(tokenizer=str(tiny_checkpoint), train_files=str(pairs_file), batch_size=2)
    data.prepare_data()
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    record = module._record(module._token_logprobs(module.policy, batch))
    assert record.chosen_tokens is None and record.chosen_mask is None and record.chosen.shape == (2,)
