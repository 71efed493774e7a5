"""Command-line mistakes as one line that names the key and what would have been accepted.

jsonargparse reports an unknown option as ``unrecognized arguments: --data.bath_size 3`` (or, from a config file,
``Subcommand 'fit' does not accept option 'data.bath_size'``) and an unknown argument of a class given by class path
(a loss, an optimiser) as a many-line dump of the union types it tried. :class:`PreferenceArgumentParser` rewrites
both before jsonargparse prints them, so every command built on lightpref's parser says, for example::

    error: unknown option `data.bath_size` (did you mean `data.batch_size` or `data.val_batch_size`?)
    error: `model.loss`: lightpref.losses.dpo.DPO takes no argument `betaa` (did you mean `beta`?); its arguments: …

Any other message is printed as jsonargparse wrote it. :class:`CommandParser` (jsonargparse's parser) is the one of
the commands that run without Lightning (``export``, ``build-dataset``, ``reward export``), so their ``--help``
does not import Lightning; :class:`~lightpref.commands.lightning_parser.PreferenceArgumentParser`
(Lightning's) is the one of the commands that train. Both report usage errors through :class:`OneLineErrors` and
resolve registered loss names (:mod:`lightpref.commands.loss_names`) when they are built.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Iterable
from typing import Any, NoReturn

from jsonargparse import ArgumentParser

from lightpref.commands.loss_names import resolve_registered_loss_names

_UNRECOGNIZED = re.compile(r"^unrecognized arguments: (?P<args>.*)$", re.DOTALL)
_NOT_ACCEPTED = re.compile(r"^(?:Subcommand '[^']*'|Group '(?P<group>[^']*)') does not accept option '(?P<key>[^']*)'$")
_UNION = re.compile(r"^Parser key \"(?P<key>[^\"]+)\":\s*\n\s*Does not validate against any of the Union subtypes")
_CLASS_OPTION = re.compile(r"Problem with given class_path '(?P<path>[^']+)':\s*\n\s*Option '(?P<option>[^']+)' is "
                           r"not accepted")
_CALLABLE_OPTION = re.compile(r"Option '(?P<option>[^']+)' is not accepted\. Got value: Namespace\("
                              r"class_path='(?P<path>[^']+)'")  # an optimiser or scheduler factory
_REQUIRED = re.compile(r"^the following arguments are required: (?P<names>.*)$")
_FILLED_BY_PARSER = ("params", "optimizer")  # the first argument of an optimiser / scheduler factory


def nearest(name: str, candidates: Iterable[str]) -> list[str]:
    """The valid names closest to a mistyped one, best first.

    >>> nearest("data.bath_size", ["data.batch_size", "data.max_length", "trainer.max_steps"])
    ['data.batch_size']
    """
    return difflib.get_close_matches(name, sorted(set(candidates)), n=3, cutoff=0.75)


def _did_you_mean(matches: list[str]) -> str:
    return f" (did you mean {' or '.join(f'`{match}`' for match in matches)}?)" if matches else ""


def option_keys(parser: Any) -> list[str]:
    """Every option key of ``parser`` and of its subcommands' parsers (``data.batch_size``, ``trainer.max_steps``)."""
    keys = [action.dest for action in parser._actions if action.dest not in ("help", "==SUPPRESS==")]
    subcommands = getattr(parser, "_subcommands_action", None)
    for subparser in getattr(subcommands, "_name_parser_map", {}).values():
        keys += option_keys(subparser)
    return keys


def class_arguments(path: str) -> list[str] | None:
    """The keyword arguments the class at ``path`` takes from a config, or ``None`` when it cannot be imported."""
    from jsonargparse import _typehints

    try:
        cls = _typehints.import_object(path)
        parameters = list(inspect.signature(cls).parameters.values())
    except Exception:  # noqa: BLE001 - any failure: fall back to jsonargparse's own message
        return None
    names = [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return names[1:] if names and names[0] in _FILLED_BY_PARSER else names


def unknown_option(key: str, parser: Any) -> str:
    key = key.lstrip("-").split("=", 1)[0]
    matches = nearest(key, option_keys(parser))
    command = parser.prog.replace(" [options]", "") if " " in parser.prog else "lightpref COMMAND"
    hint = _did_you_mean(matches) or f"; `{command} --help` lists the options"
    return f"unknown option `{key}`{hint}"


def unknown_class_argument(key: str, path: str, option: str) -> str | None:
    arguments = class_arguments(path)
    if arguments is None:
        return None
    listed = ", ".join(arguments) if arguments else "none"
    return (f"`{key}`: {path} takes no argument `{option}`{_did_you_mean(nearest(option, arguments))}; "
            f"its arguments: {listed}")


def one_line(message: str, parser: Any) -> str:
    """jsonargparse's ``message`` as one line naming the key and the nearest valid names, where it is a mistyped
    option or class argument; any other message unchanged."""
    if match := _UNRECOGNIZED.match(message):
        options = [token for token in match["args"].split() if token.startswith("-")]
        if options:
            return "; ".join(unknown_option(option, parser) for option in options)
    if match := _NOT_ACCEPTED.match(message):
        key = f"{match['group']}.{match['key']}" if match["group"] else match["key"]
        return unknown_option(key, parser)
    if match := _REQUIRED.match(message):
        names = [name.strip() for name in match["names"].split(",")]
        command = parser.prog.replace(" [options]", "")
        options = {action.dest: action.option_strings[0] for action in parser._actions if action.option_strings}
        missing = ", ".join(f"`{options.get(name, name)}`" if name in options or name.startswith("-") else
                            name.upper() for name in names)
        return f"missing {missing}: `{command} --help` shows what each is"
    argument = _CLASS_OPTION.search(message) or _CALLABLE_OPTION.search(message)
    if (union := _UNION.match(message)) and argument:
        return unknown_class_argument(union["key"], argument["path"], argument["option"]) or message
    return message


class OneLineErrors:
    """The part every lightpref parser shares: registered loss names are class paths, and a usage error is one line
    naming the key and the nearest valid names (:func:`one_line`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        resolve_registered_loss_names()
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        parser = getattr(ex, "subcommand_parser", None) or self
        super().error(one_line(message, parser), ex)  # type: ignore[misc]


class CommandParser(OneLineErrors, ArgumentParser):
    """jsonargparse's parser with lightpref's usage errors: the parser of the commands that do not train."""
