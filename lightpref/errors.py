"""How the command line reports an error: a person's mistake as one message, a bug with its traceback.

An error is the user's to fix — printed as ``lightpref: error: <message>``, exit status 1, no traceback — when it
is one of these:

- an exception lightpref raises on purpose: a ``ValueError``, ``TypeError``, ``LookupError``, ``FloatingPointError``
  or a file error (``FileNotFoundError``, ``NotADirectoryError``, ``IsADirectoryError``, ``PermissionError``) whose
  innermost frame is a ``raise`` statement in lightpref's own code. Those messages were written for a person (what,
  where, how to fix); the same types coming out of a library call inside lightpref are not;
- the same kinds raised by a ``raise`` statement in the constructor of a class the config names (a loss plugin
  checking its arguments), while lightpref or jsonargparse builds it;
- Lightning's ``MisconfigurationException``, which Lightning raises for a wrong Trainer setting.

Everything else is unexpected: its traceback is printed, then one line that sums it up. With ``LIGHTPREF_DEBUG=1``
every error keeps its traceback. Mistakes on the command line itself (an unknown key, a value of the wrong type, a
missing config file) are reported by jsonargparse as a usage message, also without a traceback.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

DEBUG_ENV = "LIGHTPREF_DEBUG"
USER_ERROR_TYPES = (
    ValueError, TypeError, LookupError, FloatingPointError,
    FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
)
_PACKAGE = Path(__file__).resolve().parent
_JSONARGPARSE = importlib.util.find_spec("jsonargparse")  # located, not imported (start-up time)
_BUILDERS = (_PACKAGE,)
if _JSONARGPARSE is not None and _JSONARGPARSE.origin:
    _BUILDERS += (Path(_JSONARGPARSE.origin).resolve().parent,)

Main = TypeVar("Main", bound=Callable[..., int])


def _frames(tb: TracebackType | None) -> list[traceback.FrameSummary]:
    return list(traceback.extract_tb(tb))


def _inside(frame: traceback.FrameSummary, directories: tuple[Path, ...]) -> bool:
    path = Path(frame.filename).resolve()
    return any(path.is_relative_to(directory) for directory in directories)


def _deliberate(frame: traceback.FrameSummary) -> bool:
    """Whether the frame's current line is a ``raise`` statement (not a failing call or subscript)."""
    return (frame.line or "").lstrip().startswith("raise")


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is a user's mistake to print as one message (see the module docstring for the rule)."""
    if type(error).__name__ == "MisconfigurationException":
        return True
    if not isinstance(error, USER_ERROR_TYPES):
        return False
    frames = _frames(error.__traceback__)
    if not frames or not _deliberate(frames[-1]):
        return False
    innermost = frames[-1]
    if _inside(innermost, (_PACKAGE,)):
        return True
    return innermost.name == "__init__" and any(_inside(frame, _BUILDERS) for frame in frames[:-1])


def report(error: BaseException) -> int:
    """Print ``error`` for a person and return the exit status (1)."""
    message = str(error).strip() or type(error).__name__
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        traceback.print_exception(error)
        print(f"lightpref: error: {message}", file=sys.stderr)
    elif is_user_error(error):
        print(f"lightpref: error: {message}\n(set {DEBUG_ENV}=1 to see the traceback)", file=sys.stderr)
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
