"""The parser of the commands that train (``fit``, ``validate``, ``test``, ``iterate``, ``reward fit``)."""

from __future__ import annotations

from lightning.pytorch.cli import LightningArgumentParser

from lightpref.commands.usage_errors import OneLineErrors


class PreferenceArgumentParser(OneLineErrors, LightningArgumentParser):
    """Lightning's argument parser, whose usage errors are one line with the nearest valid names
    (:mod:`lightpref.commands.usage_errors`), and in which a registered loss name is a class path
    (:mod:`lightpref.commands.loss_names`). Every lightpref command that trains builds its parser from this class;
    the others build theirs from :class:`~lightpref.commands.usage_errors.CommandParser`."""
