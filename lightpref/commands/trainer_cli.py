"""The LightningCLI behind ``lightpref fit | validate | test`` (imported only by those commands).

What it adds to Lightning's own CLI:

- a loss given by registered name takes arguments like a class path does: ``--model.loss dpo
  --model.loss.init_args.beta 0.2``, or in YAML ``loss: {class_path: dpo, init_args: {beta: 0.2}}`` (every
  :class:`~lightpref.commands.lightning_parser.PreferenceArgumentParser` does this, see
  :mod:`lightpref.commands.loss_names`);
- help that reads cleanly: lightpref's model and data options first, Lightning's trainer options by their first
  sentence, no markup, a short usage line;
- the run callbacks of :mod:`lightpref.run.callbacks` (a final checkpoint, first/last-step logging, the learning
  rate, validation at step 0) unless the config brings its own of the same kind;
- no third-party adverts or warnings about what lightpref does on purpose (see :func:`quiet_known_noise`).

``lightpref iterate`` formats its help, filters the noise and adds the run callbacks through the same functions.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from argparse import Action
from collections.abc import Mapping, Sequence
from typing import Any

from jsonargparse import DefaultHelpFormatter, Namespace
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightpref.commands.lightning_parser import PreferenceArgumentParser
from lightpref.commands.loss_names import is_loss_type
from lightpref.commands.model_choice import chosen_model
from lightpref.data import PreferenceDataModule
from lightpref.losses.registry import registered_names
from lightpref.run.callbacks import with_run_callbacks
from lightpref.run.directory import RunDirectories
from lightpref.run.last import CheckpointPathCLI
from lightpref.run.strategies import register_strategies
from lightpref.run.summary import DiskReport, RunModelSummary
from lightpref.training.module import PreferenceModule

DESCRIPTIONS = {
    "fit": "Train a policy. Options are config keys; a value on the command line overrides the config's.",
    "validate": "Compute the validation metrics (of the untrained policy, or of a checkpoint given by --ckpt_path).",
    "test": "Compute the metrics on the test split (the validation pairs when there is none).",
}
USAGE = "usage: lightpref {command} [--config FILE.yaml …] [--print_config] [--SECTION.KEY VALUE …]\n\n"
USAGES = {"iterate": "usage: lightpref iterate --config FILE.yaml [--ckpt_path last] [--SECTION.KEY VALUE …]\n\n"}
GROUP_TITLES = {
    "iterate": "--iterate.*  what each round samples, how it is scored and paired, what is held out "
               "(lightpref.iterate.settings.Iteration)",
    "model": "--model.*  the policy, its reference and the loss (lightpref.training.module.PreferenceModule)",
    "data": "--data.*  the preference data (lightpref.data.PreferenceDataModule)",
    "trainer": "--trainer.*  Lightning's Trainer (first sentence of each; details in the Lightning Trainer docs)",
}
SHORT_HELP = ("trainer.", "ckpt_path", "weights_only")  # Lightning's own options: their first sentence only


# --- help ------------------------------------------------------------------------------------------------------------

_RST = [
    (re.compile(r"``(.+?)``"), r"\1"),  # ``x`` → x
    (re.compile(r":[a-z]+:`~[\w.]*?\.?(\w+)`"), r"\1"),  # :class:`~a.b.C` → C
    (re.compile(r":[a-z]+:`([^`<]+?)\s*<[^>]*>`"), r"\1"),  # :ref:`text <target>` → text
    (re.compile(r":[a-z]+:`([^`]+)`"), r"\1"),  # :class:`a.b.C` → a.b.C
    (re.compile(r"`([^`<]+?)\s*<([^>]+)>`_+"), r"\1 (\2)"),  # `text <url>`_ → text (url)
]
_KNOWN_SUBCLASSES = re.compile(r", known subclasses: [^)]*")


def plain_text(text: str) -> str:
    """Help text without reStructuredText markup."""
    for pattern, replacement in _RST:
        text = pattern.sub(replacement, text)
    return text


def first_sentence(text: str) -> str:
    """The first sentence of a (docstring) help text, on one line."""
    text = " ".join(text.split())
    match = re.search(r"(?<![.:])\.(\s|$)", text)
    return text[: match.start() + 1] if match else text


class HelpFormatter(DefaultHelpFormatter):
    """Help without markup or subclass lists; Lightning's long option texts cut to their first sentence."""

    def _format_usage(self, usage: Any, actions: Any, groups: Any, prefix: Any = None) -> str:
        if prefix == "":  # argparse forming a subcommand's program name (`lightpref fit`), not a usage line
            return super()._format_usage(usage, actions, groups, prefix)
        command = self._prog.split()[-1]
        return USAGES.get(command) or USAGE.format(command=command if command in DESCRIPTIONS else "fit")

    def _format_text(self, text: str) -> str:  # the description
        return super()._format_text(plain_text(text))

    def _get_help_string(self, action: Action) -> str:
        original = action.help
        if isinstance(original, str) and action.dest.startswith(SHORT_HELP):
            action.help = first_sentence(original)
        try:
            text = super()._get_help_string(action)
        finally:
            action.help = original
        if is_loss_type(getattr(action, "_typehint", None)):
            text = _KNOWN_SUBCLASSES.sub(", registered names: " + ", ".join(registered_names()), text)
        return plain_text(_KNOWN_SUBCLASSES.sub("", text))


def arrange_help(parser: LightningArgumentParser) -> None:
    """Titles that say what each section is, and the general options, iterate (``lightpref iterate``), model and data
    before the trainer's."""
    groups = getattr(parser, "groups", None) or {}
    for key, title in GROUP_TITLES.items():
        if key in groups:
            groups[key].title = title
    for group in parser._action_groups:
        if group is not parser._optionals and any(action.dest == "ckpt_path" for action in group._group_actions):
            group.title = "--ckpt_path  resume a run (`last`: the newest last.ckpt of the run's checkpoint directory)"
    first = [parser._optionals, *(groups[key] for key in ("iterate", "model", "data") if key in groups)]
    parser._action_groups = first + [group for group in parser._action_groups if group not in first]


# --- the CLI ---------------------------------------------------------------------------------------------------------

class PreferenceCLI(CheckpointPathCLI, LightningCLI):
    """LightningCLI with the values the model and the data share linked, so each is written once."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        commands = LightningCLI.subcommands()
        return {name: skip for name, skip in commands.items() if name in DESCRIPTIONS}  # no `predict`: no use here

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        model = "model.init_args." if self.subclass_mode_model else "model."  # a model given by class_path
        parser.link_arguments(model + "pretrained", "data.tokenizer")
        parser.link_arguments(model + "gguf_file", "data.gguf_file")
        parser.link_arguments(model + "trust_remote_code", "data.trust_remote_code")  # one flag for model, tokenizer

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """LightningCLI's, without its warning when both ``args`` and ``sys.argv`` hold arguments: ``lightpref``
        hands each command (``reward fit``, ``iterate``) its own part of the command line as ``args``."""
        is_object = isinstance(args, (dict, Namespace))
        self.config = parser.parse_object(args) if is_object else parser.parse_args(args)

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        arrange_help(parser)
        return parser

    def before_fit(self) -> None:
        """``--ckpt_path last`` resolved first (this run holds no directory yet), then the run claims its own
        ``version_N`` and holds its checkpoint directories (:mod:`lightpref.run.directory`)."""
        super().before_fit()
        claiming = self.trainer.global_rank == 0  # the other processes of a run use the directory it claims
        self.trainer.callbacks.append(RunDirectories.claiming(self.trainer.loggers) if claiming else RunDirectories())

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        callbacks = run_callbacks(self._get(self.config_init, "trainer", default={}))
        return super().instantiate_trainer(**{"callbacks": callbacks, **kwargs})


def run_callbacks(settings: Mapping[str, Any]) -> list[Callback]:
    """Every callback a ``fit`` (or a ``lightpref iterate`` round) adds to the Trainer's own: the run callbacks and
    the model summary (:func:`trainer_callbacks`), and the report of what the run left on disk."""
    return [*trainer_callbacks(settings), DiskReport()]


def round_trainer(settings: Mapping[str, Any], callbacks: Sequence[Callback], **own: Any) -> Trainer:
    """A Trainer of ``lightpref iterate``'s rounds, set up as ``fit``'s: ``settings`` (the config's ``trainer``
    section, strategies named as ``fit`` names them, ``fsdp2`` included) with :func:`trainer_callbacks` around
    ``callbacks`` (the round's disk use is the workflow's, so no :class:`DiskReport`); ``own`` are the settings the
    round decides (its directory and logger)."""
    register_strategies()
    quiet_known_noise()
    settings = {key: value for key, value in settings.items() if key != "__path__"}
    return Trainer(**settings, **own, callbacks=trainer_callbacks({**settings, "callbacks": list(callbacks)}))


def trainer_callbacks(settings: Mapping[str, Any]) -> list[Callback]:
    """The ``callbacks`` of a Trainer's ``settings`` plus the run callbacks (:func:`with_run_callbacks`: the progress
    bar among them) and the model summary ``lightpref fit`` and ``lightpref iterate`` add, as the settings allow."""
    given = settings.get("callbacks") or []
    given = list(given) if isinstance(given, Sequence) else [given]
    callbacks = with_run_callbacks(
        given,
        checkpointing=settings.get("enable_checkpointing") is not False,
        progress_bar=settings.get("enable_progress_bar") is not False,
        logging=settings.get("logger") is not False,
    )
    if settings.get("enable_model_summary") is not False and not any(isinstance(c, ModelSummary) for c in given):
        callbacks.append(RunModelSummary())  # Lightning's, without the FLOPs it cannot count here
    return callbacks


def _not_a_tip(record: logging.LogRecord) -> bool:
    message = str(record.getMessage())
    return not message.startswith("💡 Tip") and "RunModelSummary'>]. Skipping setting a default" not in message


def quiet_known_noise() -> None:
    """Silence what a lightpref run prints without it concerning the user.

    - Lightning's "💡 Tip" adverts for its cloud products, and its note that lightpref's own model summary
      replaces its default one;
    - "Found N module(s) in eval mode at the start of training": the frozen reference is in eval mode by design
      (:class:`~lightpref.run.callbacks.PolicyTrainMode` checks that no *policy* module is);
    - "Total length of `list` across ranks is zero": the DataModule's way of saying there is no validation data;
    - "The number of training batches is smaller than the logging interval": the first and last steps are logged
      anyway (:class:`~lightpref.run.callbacks.LogFirstAndLastStep`);
    - Lightning's own use of torch's deprecated ``LeafSpec`` and of jsonargparse's deprecated calls;
      transformers' deprecation of ``is_gradient_checkpointing``, which peft reads; peft's ``loftq_config``
      warning, raised because the config parser fills every LoraConfig field with its default.
    """
    rank_zero_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if _not_a_tip not in rank_zero_log.filters:
        rank_zero_log.addFilter(_not_a_tip)
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated")
    warnings.filterwarnings("ignore", message=r"`loftq_config` specified but will be ignored")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="lightning.pytorch.cli")
    warnings.filterwarnings("ignore", message=r"Total length of `list` across ranks is zero")
    warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than the logging interval")


def build_cli(args: Sequence[str] | None, run: bool = True,
              model_class: type[LightningModule] = PreferenceModule) -> PreferenceCLI:
    """The LightningCLI behind ``lightpref fit|validate|test``; ``run=False`` only parses and instantiates.
    ``model_class`` is the LightningModule the ``model`` section builds unless the section names another by
    ``class_path`` (:mod:`lightpref.commands.model_choice`; ``lightpref reward`` gives RewardModule as the default)."""
    args = None if args is None else list(args)
    named = chosen_model(sys.argv[1:] if args is None else args, default=None)
    if not run and args and args[0] in DESCRIPTIONS:
        args = args[1:]  # without running, LightningCLI takes no subcommand
    register_strategies()  # `--trainer.strategy fsdp2`
    quiet_known_noise()
    parser_kwargs: dict[str, Any] = {"prog": "lightpref", "formatter_class": HelpFormatter}
    if run:
        for command, description in DESCRIPTIONS.items():
            parser_kwargs[command] = {"formatter_class": HelpFormatter, "description": description}
    return PreferenceCLI(
        named or model_class,
        PreferenceDataModule,
        args=args,
        run=run,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,  # the module's own `optimizer`/`lr_scheduler` are the ones to set
        parser_kwargs=parser_kwargs,
        parser_class=PreferenceArgumentParser,  # usage errors as one line, with the nearest valid names
        subclass_mode_model=named is not None,  # `model: {class_path: …, init_args: {…}}`
    )
