"""The LightningModule on a tiny model: what trains, what stays frozen, what is saved, what the loss receives."""

import re

import pytest
import torch
from fit_support import fit
from transformers import AutoModelForCausalLM

from lightpref.data import PreferenceDataModule
from lightpref.data.collate import collate_pairs
from lightpref.data.tokenize import TokenizedPair
from lightpref.losses import LogProbs, LossOutput, PreferenceLoss
from lightpref.training.forward import completion_logprobs
from lightpref.training.module import PreferenceModule
from lightpref.views import InstructionPrefix


def weights(model):
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def test_policy_trains_reference_stays_frozen(tiny_checkpoint, pairs_file, tmp_path):
    original = weights(AutoModelForCausalLM.from_pretrained(tiny_checkpoint))
    module, _, _ = fit(tiny_checkpoint, pairs_file, tmp_path)
    policy, reference = weights(module.policy), weights(module.reference.model)
    assert any(not torch.equal(policy[name], original[name]) for name in original), "the policy did not change"
    assert all(torch.equal(reference[name], original[name]) for name in original), "the reference changed"
    assert not any(p.requires_grad for p in module.reference.model.parameters())
    assert not module.reference.model.training
    module.train()
    assert not module.reference.model.training and module.policy.training
    optimised = {id(p) for group in module.trainer.optimizers[0].param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in module.reference.model.parameters()}


def test_metrics_under_familiar_names(tiny_checkpoint, pairs_file, tmp_path):
    _, trainer, _ = fit(tiny_checkpoint, pairs_file, tmp_path)
    names = set(trainer.callback_metrics)
    for name in ["loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                 "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected"]:
        assert name in names and f"val/{name}" in names, name
    # the validation values, derived independently: the plain forward of the final policy and of the initial weights
    # (the reference) over every validation pair, DPO's β = 0.1, averaged over pairs
    module = trainer.lightning_module
    reference = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    sums = {"policy": [], "reference": []}
    with torch.no_grad():
        for batch in trainer.datamodule.val_dataloader():
            for name, model in (("policy", module.policy.eval()), ("reference", reference)):
                tokens = completion_logprobs(model, batch.input_ids, batch.attention_mask, batch.completion_mask)
                sums[name].append(tokens.logps.sum(-1).view(2, -1))  # (2, b): chosen row, rejected row
    policy, reference = torch.cat(sums["policy"], 1), torch.cat(sums["reference"], 1)  # (2, pairs)
    rewards = 0.1 * (policy - reference)
    margins = rewards[0] - rewards[1]
    expected = {"val/rewards/chosen": rewards[0].mean(), "val/rewards/rejected": rewards[1].mean(),
                "val/rewards/margins": margins.mean(), "val/rewards/accuracies": (margins > 0).float().mean(),
                "val/logps/chosen": policy[0].mean(), "val/loss": -torch.nn.functional.logsigmoid(margins).mean()}
    for name, value in expected.items():
        torch.testing.assert_close(trainer.callback_metrics[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_checkpoint_has_no_reference_and_resumes(tiny_checkpoint, pairs_file, tmp_path):
    _, trainer, _ = fit(tiny_checkpoint, pairs_file, tmp_path, steps=2)
    path = trainer.checkpoint_callback.best_model_path or trainer.checkpoint_callback.last_model_path
    state = torch.load(path, weights_only=False)["state_dict"]
    assert state and not [key for key in state if key.startswith("reference.")]
    assert any(key.startswith("policy.") for key in state)
    module, trainer, _ = fit(tiny_checkpoint, pairs_file, tmp_path / "resumed", steps=4, ckpt_path=path)
    assert trainer.global_step == 4


def test_export_loads_and_gives_the_same_logits(tiny_checkpoint, pairs_file, tmp_path):
    module, trainer, _ = fit(tiny_checkpoint, pairs_file, tmp_path)
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
    module, _, _ = fit(tiny_checkpoint, pairs_file, tmp_path, loss=loss, steps=1)
    assert module.reference.model is None and loss.seen[0][1] is None


class Keeper(PreferenceLoss):
    """A test loss that keeps what it was given and declares nothing beyond sums, unless told to."""

    def __init__(self, needs_token_logps: bool = False) -> None:
        super().__init__()
        self.needs_token_logps = needs_token_logps
        self.seen: list[tuple[LogProbs, LogProbs | None]] = []

    def forward(self, policy, reference):
        self.seen.append((policy, reference))
        return LossOutput(-(policy.chosen - reference.chosen), policy.chosen.detach(), policy.rejected.detach())


def test_plain_loss_gets_no_token_values(tiny_checkpoint, pairs_file):
    """A loss that declares nothing gets per-pair sums only; they are the sums of the per-token values that a loss
    declaring `needs_token_logps` receives for the same batch."""
    data = PreferenceDataModule(tokenizer=str(tiny_checkpoint), train_files=str(pairs_file), batch_size=2,
                                shuffle=False)
    data.prepare_data()
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    plain, tokens = Keeper(), Keeper(needs_token_logps=True)
    for loss in (plain, tokens):
        module = PreferenceModule(str(tiny_checkpoint), loss=loss)
        module.configure_model()
        module(batch)
    (policy, reference), (token_policy, token_reference) = plain.seen[0], tokens.seen[0]
    for record in (policy, reference):
        assert record.chosen_tokens is None and record.chosen_mask is None and record.rejected_tokens is None
        assert record.chosen.shape == (2,)
    assert token_policy.chosen_tokens.shape[0] == 2 and token_reference.rejected_mask is not None
    torch.testing.assert_close(policy.chosen, token_policy.chosen_tokens.sum(-1))
    torch.testing.assert_close(reference.rejected, token_reference.rejected_tokens.sum(-1))


class BreaksTheContract(PreferenceLoss):
    """A test loss whose output has one wrong shape, chosen by ``kind``."""

    requires_reference = False

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, policy, reference):
        chosen, rejected = policy.chosen, policy.rejected  # (B,)
        output = LossOutput(-(chosen - rejected), chosen.detach(), rejected.detach())
        if self.kind == "pairwise":  # (B, B): every chosen against every rejected
            output.losses = -(chosen[:, None] - rejected[None, :])
        elif self.kind == "scalar":
            output.losses = output.losses.mean()
        elif self.kind == "rewards":
            output.rejected_rewards = output.rejected_rewards[:1]
        elif self.kind == "metric":
            output.metrics = {"margin": torch.stack([chosen, rejected], -1).detach()}  # (B, 2)
        return output


@pytest.mark.parametrize("kind, field, shape", [("pairwise", "losses", r"\(2, 2\)"), ("scalar", "losses", r"\(\)"),
                                                ("rewards", "rejected_rewards", r"\(1,\)"),
                                                ("metric", "metrics['margin']", r"\(2, 2\)")])
def test_a_loss_output_with_wrong_shapes_is_refused_naming_the_loss(tiny_checkpoint, kind, field, shape):
    """A plugin returning (B, B) losses must not train on a wrong objective; 0-d losses or mismatched rewards must
    not crash deep in the metrics code: one error names the loss class, where it comes from, and the field."""
    module = PreferenceModule(str(tiny_checkpoint), loss=BreaksTheContract(kind))
    module.configure_model()
    batch = collate_pairs([TokenizedPair([5, 6], [7, 8], [9]), TokenizedPair([5], [10], [11, 12])], pad_token_id=0)
    pattern = rf"BreaksTheContract \(no installed distribution\) returned `{re.escape(field)}` of shape {shape}"
    with pytest.raises(ValueError, match=pattern + r" for a batch of 2 pairs"):
        module(batch)
    module.loss.kind = "none"
    metrics, loss = module(batch)  # the same loss with its shapes right trains
    assert loss.shape == () and metrics["loss"].shape == (2,)
