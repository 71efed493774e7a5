"""The command line's machinery behind :mod:`lightpref.cli`'s table of commands.

- :mod:`~lightpref.commands.trainer_cli`: the LightningCLI that ``fit``, ``validate``, ``test`` and each round of
  ``iterate`` are built on.
- :mod:`~lightpref.commands.usage_errors`: command-line mistakes as one line naming the key.
"""
