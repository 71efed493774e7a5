"""How the command line reports an error: a person's mistake as one message, a bug with its traceback.

An error is the user's to fix — printed as ``lightpref: error: <message>``, exit status 1, no traceback — when it
is one of these:

- an exception lightpref raises on purpose: a ``ValueError``, ``TypeError``, ``LookupError``, ``FloatingPointError``,
  ``ImportError`` (an optional extra that is not installed) or a file error (``FileNotFoundError``,
  ``NotADirectoryError``, ``IsADirectoryError``, ``PermissionError``) whose innermost frame is a ``raise`` statement
  in lightpref's own code. Those messages were written for a person (what, where, how to fix); the same types coming
  out of a library call inside lightpref are not;
- the same kinds raised by a ``raise`` statement in the constructor of a class the config names (a loss plugin
  checking its arguments), while lightpref or jsonargparse builds it;
- Lightning's ``MisconfigurationException``, which Lightning raises for a wrong Trainer setting;
- an error raised by jsonargparse that wraps one of the above (it wraps a constructor's ``ValueError`` in its own
  "Does not validate" error while it instantiates the config): the wrapped message is printed, with the config key
  of the object being built when jsonargparse names it;
- a full disk or quota (an ``OSError`` with errno ``ENOSPC`` or ``EDQUOT`` anywhere in the chain of causes): one
  message naming the file being written and saying to free space.

Everything else is unexpected: its traceback is printed, then one line that sums it up. With ``LIGHTPREF_DEBUG=1``
every error keeps its traceback. Mistakes on the command line itself (an unknown key, a value of the wrong type, a
missing config file) are reported by jsonargparse as a usage message, also without a traceback.
"""

from __future__ import annotations

import errno
import functools
import importlib.util
import io
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

DEBUG_ENV = "LIGHTPREF_DEBUG"
USER_ERROR_TYPES = (
    ValueError, TypeError, LookupError, FloatingPointError, ImportError,
    FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
)
OUT_OF_SPACE = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exceeded"}
_PACKAGE = Path(__file__).resolve().parent
_JSONARGPARSE = importlib.util.find_spec("jsonargparse")  # located, not imported (start-up time)
_WRAPPERS: tuple[Path, ...] = ()  # libraries that wrap a constructor's error in their own while building the config
if _JSONARGPARSE is not None and _JSONARGPARSE.origin:
    _WRAPPERS = (Path(_JSONARGPARSE.origin).resolve().parent,)
_BUILDERS = (_PACKAGE, *_WRAPPERS)

Main = TypeVar("Main", bound=Callable[..., int])


def _frames(tb: TracebackType | None) -> list[traceback.FrameSummary]:
    return list(traceback.extract_tb(tb))


def _inside(filename: str, directories: tuple[Path, ...]) -> bool:
    path = Path(filename).resolve()
    return any(path.is_relative_to(directory) for directory in directories)


def _deliberate(frame: traceback.FrameSummary) -> bool:
    """Whether the frame's current line is a ``raise`` statement (not a failing call or subscript)."""
    return (frame.line or "").lstrip().startswith("raise")


def causes(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from or while handling, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return chain


def _deliberate_user_error(error: BaseException) -> bool:
    if type(error).__name__ == "MisconfigurationException":
        return True
    if not isinstance(error, USER_ERROR_TYPES):
        return False
    frames = _frames(error.__traceback__)
    if not frames or not _deliberate(frames[-1]):
        return False
    innermost = frames[-1]
    if _inside(innermost.filename, (_PACKAGE,)):
        return True
    return innermost.name == "__init__" and any(_inside(frame.filename, _BUILDERS) for frame in frames[:-1])


def _raised_by_wrapper(error: BaseException) -> bool:
    frames = _frames(error.__traceback__)
    return bool(frames) and _inside(frames[-1].filename, _WRAPPERS)


def _building_key(errors: list[BaseException]) -> str | None:
    """The config key jsonargparse was instantiating when it wrapped an error (e.g. ``model.loss``), if it says."""
    for error in errors:
        for frame, _ in traceback.walk_tb(error.__traceback__):
            if frame.f_code.co_name != "instantiate_classes" or not _inside(frame.f_code.co_filename, _WRAPPERS):
                continue
            key = getattr(frame.f_locals.get("self"), "dest", None)
            if isinstance(key, str):
                return key.removeprefix("fit.").removeprefix("validate.").removeprefix("test.")
    return None


def _written_file(errors: list[BaseException]) -> str | None:
    """The file an ``OSError`` was writing: its ``filename``, else an open file in the failing frames."""
    for error in errors:
        if isinstance(error, OSError) and error.filename is not None:
            return str(error.filename)
    for error in errors:
        frames = [frame for frame, _ in traceback.walk_tb(error.__traceback__)]
        for frame in reversed(frames):  # the innermost frame first
            for value in frame.f_locals.values():
                if isinstance(value, io.IOBase) and isinstance(getattr(value, "name", None), str):
                    return value.name
    return None


def _out_of_space(chain: list[BaseException]) -> str | None:
    for error in chain:
        if isinstance(error, OSError) and error.errno in OUT_OF_SPACE:
            path = _written_file(chain)
            where = f" while writing {path}" if path else " while writing a file"
            return (f"{OUT_OF_SPACE[error.errno]} ({errno.errorcode[error.errno]}){where}: free space on that "
                    "filesystem (or write the run's output to another one) and run the command again")
    return None


def user_message(error: BaseException) -> str | None:
    """The one message to print for ``error`` when it is a user's mistake or a full disk (see the module docstring
    for the rule); ``None`` when it is unexpected."""
    chain = causes(error)
    out_of_space = _out_of_space(chain)
    if out_of_space is not None:
        return out_of_space
    for depth, link in enumerate(chain):
        if _deliberate_user_error(link):
            message = str(link).strip() or type(link).__name__
            key = _building_key(chain[:depth]) if depth else None
            return f"`{key}`: {message}" if key and f"`{key}" not in message else message
        if not _raised_by_wrapper(link):
            return None  # only a wrapper's own error is looked through
    return None


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is a user's mistake to print as one message (see the module docstring for the rule)."""
    return user_message(error) is not None


def report(error: BaseException) -> int:
    """Print ``error`` for a person and return the exit status (1)."""
    message = str(error).strip() or type(error).__name__
    person = user_message(error)
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        traceback.print_exception(error)
        print(f"lightpref: error: {person or message}", file=sys.stderr)
    elif person is not None:
        print(f"lightpref: error: {person}\n(set {DEBUG_ENV}=1 to see the traceback)", file=sys.stderr)
    else:
        traceback.print_exception(error)
        print(
            f"lightpref: unexpected error: {type(error).__name__}: {message.splitlines()[0]} (not a known user "
            "error: the traceback above shows where it was raised)",
            file=sys.stderr,
        )
    return 1


def reporting_errors(main: Main) -> Main:
    """Wrap a command-line ``main`` so that an exception becomes a printed message and exit status 1."""

    @functools.wraps(main)
    def wrapper(*args: object, **kwargs: object) -> int:
        try:
            return main(*args, **kwargs)
        except Exception as error:  # SystemExit and KeyboardInterrupt pass through
            return report(error)

    return wrapper  # type: ignore[return-value]
