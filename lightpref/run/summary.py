"""What ``lightpref fit`` prints about the run itself: the model summary and, at the end, what it left on disk.

The model summary is Lightning's, without the FLOPs it cannot count.

Lightning counts FLOPs only by running the model on an ``example_input_array`` at start-up, which a preference
module has no use for, so its summary shows a FLOPs column of zeros and ``Total FLOPs: 0``. This summary leaves both
out; each part's mode (the frozen reference in ``eval``) and the parameter counts are as Lightning reports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE
from lightning.pytorch.utilities.model_summary.model_summary import (
    _format_summary_table,
    get_formatted_model_size,
    get_human_readable_count,
)

WITHOUT = ("FLOPs",)


def summary_lines(total_parameters: int, trainable_parameters: int, model_size: float,
                  total_training_modes: dict[str, int]) -> list[str]:
    """The totals printed under the table."""
    return [
        f"Trainable params: {get_human_readable_count(int(trainable_parameters))}",
        f"Non-trainable params: {get_human_readable_count(int(total_parameters - trainable_parameters))}",
        f"Total params: {get_human_readable_count(int(total_parameters))}",
        f"Total estimated model params size (MB): {get_formatted_model_size(model_size)}",
        f"Modules in train mode: {total_training_modes['train']}",
        f"Modules in eval mode: {total_training_modes['eval']}",
    ]


class RunModelSummary(ModelSummary):
    """Lightning's model summary (a rich table where ``rich`` is installed) without the FLOPs column and total."""

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int,
                  **summarize_kwargs: Any) -> None:
        columns = [(name, values) for name, values in summary_data if name not in WITHOUT]
        if not _RICH_AVAILABLE:
            table = _format_summary_table(total_parameters, trainable_parameters, model_size, total_training_modes,
                                          total_flops, *columns)
            rank_zero_info("\n" + "\n".join(line for line in table.splitlines() if not line.endswith("Total Flops")))
            return
        from rich import get_console
        from rich.table import Table

        table = Table(header_style="bold magenta")
        for name, _ in columns:
            table.add_column(name, justify="right" if name in ("Params", "Params per Device") else "left",
                             style="dim" if name == " " else None, no_wrap=name == "Name")
        for row in zip(*(values for _, values in columns), strict=True):
            table.add_row(*row)
        console = get_console()
        console.print(table)
        for line in summary_lines(total_parameters, trainable_parameters, model_size, total_training_modes):
            name, value = line.split(": ", 1)
            console.print(f"[bold]{name}[/]: {value}")


TRIAL_OPTIONS = "--trainer.enable_checkpointing false --model.export_dir null"


def disk_size(path: Path) -> int:
    """Bytes in a file, or in every file under a directory."""
    if path.is_dir():
        return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())
    return path.stat().st_size if path.exists() else 0


def readable_size(size: int) -> str:
    """
    >>> readable_size(1_610_000_000), readable_size(542_000_000), readable_size(15_000)
    ('1.61 GB', '542 MB', '15 kB')
    """
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} B"


class DiskReport(Callback):
    """At the end of ``fit``, one line naming the checkpoints and the exported policy the run wrote, with their
    sizes, and the options for a trial run that writes neither."""

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        paths = {Path(path) for callback in trainer.checkpoint_callbacks if isinstance(callback, ModelCheckpoint)
                 for path in (callback.best_model_path, callback.last_model_path) if path}
        export = getattr(pl_module, "export_directory", lambda: None)()
        written = [(path, disk_size(path)) for path in sorted(paths) + ([export] if export else []) if path.exists()]
        if not written:
            return
        total = readable_size(sum(size for _, size in written))
        listed = ", ".join(f"{path} ({readable_size(size)})" for path, size in written)
        rank_zero_info(f"lightpref: this run left {total} on disk: {listed}; a trial run that keeps neither "
                       f"checkpoint nor export: {TRIAL_OPTIONS}")
