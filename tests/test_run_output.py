"""What a run prints is about the run: no transformers progress bars around lightpref's own loads and saves, the
frozen reference shown in eval mode and no FLOPs that cannot be counted in the model summary, cached data said to
be read from the cache, and a progress bar that never passes an old validation off as current."""

import doctest
import logging

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.utilities.model_summary import summarize
from pairs_support import write_pairs
from transformers.utils import logging as transformers_logging

import lightpref.run.callbacks
import lightpref.run.summary
from lightpref.data import PreferenceDataModule
from lightpref.models.export import save_policy
from lightpref.models.pretrained import ModelSource
from lightpref.run.callbacks import RunTextProgressBar, ValidateAtStart
from lightpref.run.summary import TRIAL_OPTIONS, RunModelSummary, readable_size
from lightpref.training.module import PreferenceModule


def test_loading_and_saving_show_no_transformers_progress_bars_and_restore_the_setting(tiny_checkpoint, tmp_path,
                                                                                      capfd):
    assert transformers_logging.is_progress_bar_enabled()
    source = ModelSource(str(tiny_checkpoint))
    save_policy(source.load_model(), tmp_path / "saved", source.load_tokenizer())
    output = capfd.readouterr()
    assert (tmp_path / "saved" / "model.safetensors").is_file()
    assert "Loading weights" not in output.err + output.out and "Writing model shards" not in output.err + output.out
    assert transformers_logging.is_progress_bar_enabled()  # restored for the user's own code
    transformers_logging.disable_progress_bar()
    try:
        source.load_model()
        assert not transformers_logging.is_progress_bar_enabled()  # a user's choice to silence them stays
    finally:
        transformers_logging.enable_progress_bar()


def test_the_summary_shows_the_reference_in_eval_mode_and_no_flops(tiny_checkpoint, capsys):
    module = PreferenceModule(str(tiny_checkpoint))
    module.configure_model()
    summary = summarize(module)
    modes = dict(zip(summary.layer_names, summary.training_modes, strict=True))
    assert modes["reference"] is False and modes["policy"] is True
    RunModelSummary.summarize(summary._get_summary_data(), summary.total_parameters, summary.trainable_parameters,
                              summary.model_size, summary.total_training_modes, summary.total_flops)
    printed = capsys.readouterr().out
    reference_row = next(line for line in printed.splitlines() if "reference" in line)
    assert "eval" in reference_row and "FrozenCopy" in reference_row
    assert "FLOPs" not in printed and "Trainable params: 39.1 K" in printed


def test_cached_data_is_said_to_be_read_from_the_cache(tiny_checkpoint, tmp_path, caplog):
    pairs = write_pairs(tmp_path / "pairs.jsonl", count=8)

    def counts_line() -> str:
        caplog.clear()
        data = PreferenceDataModule(tokenizer=str(tiny_checkpoint), train_files=str(pairs),
                                    cache_dir=str(tmp_path / "cache"))
        data.prepare_data()
        data.setup("fit")
        return next(record.getMessage() for record in caplog.records if "source" in record.getMessage())

    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        assert ": 8 pairs tokenised, 0 invalid rows skipped" in counts_line()
        assert ": 8 pairs read from the cache, 0 invalid rows skipped" in counts_line()


def test_the_progress_bar_dates_a_validation_older_than_the_current_step(tiny_checkpoint, pairs_file, tmp_path):
    module = PreferenceModule(str(tiny_checkpoint), export_dir=None,
                              optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2))
    data = PreferenceDataModule(tokenizer=str(tiny_checkpoint), train_files=str(pairs_file), val_fraction=0.25,
                                batch_size=4, max_length=64, max_prompt_length=32)
    bar = RunTextProgressBar()
    trainer = Trainer(max_steps=2, default_root_dir=tmp_path, accelerator="cpu", logger=False,
                      enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
                      callbacks=[ValidateAtStart(), bar])
    trainer.fit(module, data)
    shown = bar.get_metrics(trainer, module)
    assert "val/loss (step 0)" in shown and "val/loss" not in shown and "loss" in shown
    assert shown["val/loss (step 0)"] == trainer.progress_bar_metrics["val/loss"]


def test_docstring_examples():
    for module in (lightpref.run.callbacks, lightpref.run.summary):
        failures, attempted = doctest.testmod(module)
        assert attempted and not failures


def test_a_short_fit_prints_none_of_that_noise_and_says_what_it_left_on_disk(tiny_checkpoint, pairs_file, tmp_path,
                                                                             capfd, caplog):
    from lightpref.cli import main

    assert main(["fit", "--model.pretrained", str(tiny_checkpoint), "--data.train_files", str(pairs_file),
                 "--data.val_fraction", "0.25", "--data.batch_size", "4", "--data.max_length", "64",
                 "--data.max_prompt_length", "32", "--trainer.max_steps", "1", "--trainer.logger", "false",
                 "--trainer.default_root_dir", str(tmp_path / "run"),
                 "--model.export_dir", str(tmp_path / "exported")]) == 0
    captured = capfd.readouterr()
    printed = captured.out + captured.err
    assert "Trainable params" in printed and (tmp_path / "exported" / "model.safetensors").is_file()
    assert "eval" in next(line for line in printed.splitlines() if "reference" in line and "FrozenCopy" in line)
    for noise in ("FLOPs", "Skipping setting a default", "Loading weights", "Writing model shards"):
        assert noise not in printed, noise
    checkpoint = next((tmp_path / "run").rglob("last.ckpt"))
    size = checkpoint.stat().st_size + sum(f.stat().st_size for f in (tmp_path / "exported").iterdir())
    left = next(message for message in caplog.messages if message.startswith("lightpref: this run left"))
    assert left.startswith(f"lightpref: this run left {readable_size(size)} on disk: {checkpoint} (")
    assert left.endswith(f"{tmp_path / 'exported'} ({readable_size(size - checkpoint.stat().st_size)}); a trial run "
                         "that keeps neither checkpoint nor export: --trainer.enable_checkpointing false "
                         "--model.export_dir null")


def test_the_trial_options_leave_only_the_logs(tiny_checkpoint, pairs_file, tmp_path, caplog):
    from lightpref.cli import main

    assert main(["fit", "--model.pretrained", str(tiny_checkpoint), "--data.train_files", str(pairs_file),
                 "--data.batch_size", "4", "--data.max_length", "64", "--data.max_prompt_length", "32",
                 "--trainer.max_steps", "1", "--trainer.default_root_dir", str(tmp_path / "run"),
                 *TRIAL_OPTIONS.split()]) == 0
    files = sorted(path.name for path in (tmp_path / "run").rglob("*") if path.is_file())
    assert [name for name in files if not name.startswith("events.out.tfevents")] == ["config.yaml", "hparams.yaml"]
    assert caplog.messages and not any("this run left" in message for message in caplog.messages)
