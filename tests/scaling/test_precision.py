"""Mixed and half precision on CPU: the models run in bfloat16, but log-probs and the loss stay float32."""

import pytest
import torch
from scaling_probe import fit_tiny

from lightpref.data import PreferenceDataModule
from lightpref.losses.dpo import DPO
from lightpref.training.module import PreferenceModule


class DtypeRecorder(DPO):
    """DPO that notes the dtypes it receives and whether autocast is on inside it; it also runs one matmul,
    which autocast would otherwise run in bfloat16."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict] = []

    def forward(self, policy, reference):
        product = torch.matmul(policy.chosen[None, :], reference.chosen[:, None])  # (1, 1)
        self.seen.append({
            "policy": policy.chosen.dtype, "reference": reference.chosen.dtype, "matmul": product.dtype,
            "autocast": torch.is_autocast_enabled("cpu"),
        })
        return super().forward(policy, reference)


@pytest.fixture(scope="module")
def batch(tiny_checkpoint, pairs_file):
    data = PreferenceDataModule(tokenizer=str(tiny_checkpoint), train_files=str(pairs_file), batch_size=4,
                                max_length=64, max_prompt_length=32)
    data.prepare_data()
    data.setup("fit")
    return next(iter(data.train_dataloader()))


def perturbed_module(checkpoint) -> PreferenceModule:
    """A module whose policy differs from its reference, so the loss is not the constant log 2."""
    module = PreferenceModule(str(checkpoint), loss=DtypeRecorder())
    module.configure_model()
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in module.policy.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return module


def test_loss_is_float32_under_bf16_autocast_and_with_bf16_weights(tiny_checkpoint, batch):
    module = perturbed_module(tiny_checkpoint)
    metrics, full = module(batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed_metrics, mixed = module(batch)
    module.to(torch.bfloat16)  # what `precision: bf16-true` does to the module
    half_metrics, half = module(batch)
    assert full.dtype == mixed.dtype == half.dtype == torch.float32
    assert mixed_metrics["logps/chosen"].dtype == half_metrics["logps/chosen"].dtype == torch.float32
    assert abs(full.item() - 0.6931) > 1e-3  # a real loss, not the policy == reference constant
    torch.testing.assert_close(mixed, full, rtol=0, atol=2e-2)  # bf16 matmuls, float32 everything after them
    torch.testing.assert_close(half, full, rtol=0, atol=5e-2)
    for seen in module.loss.seen:
        assert seen == {"policy": torch.float32, "reference": torch.float32, "matmul": torch.float32,
                        "autocast": False}


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_fit_in_bf16(precision, tiny_checkpoint, pairs_file, tmp_path):
    module, _, probe = fit_tiny(tiny_checkpoint, pairs_file, tmp_path, loss="dpo", steps=3, precision=precision)
    weight_dtype = torch.bfloat16 if precision == "bf16-true" else torch.float32
    assert all(p.dtype == weight_dtype for p in module.policy.parameters())
    assert all(torch.isfinite(torch.tensor(loss)) for loss in probe.losses.values())
    assert probe.losses[3] < probe.losses[1]  # it learns
    changed = [name for name, value in probe.record["policy"].items()
               if not torch.equal(value, probe.record["reference"][name])]
    assert changed, "the policy must train"
