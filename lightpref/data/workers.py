"""Worker processes that never outlive the process that started them.

A pool's workers are blocked reading their task queue; if the parent is killed (``kill -9``, out of memory) nothing
tells them, and each lives on with its memory. :func:`die_with_parent`, run first in each worker, has the kernel end
it with its parent (Linux).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # Linux prctl(2) option: the signal a process gets when its parent dies


def die_with_parent(parent: int) -> None:
    """Make this (worker) process end when ``parent`` does, however it ends (even ``kill -9``): on Linux the kernel
    sends SIGKILL (``prctl(PR_SET_PDEATHSIG)``); elsewhere nothing is set. A parent already gone ends it now."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl here: a killed parent leaves the worker running, as without this
    if os.getppid() != parent:  # the parent died before the signal was set
        os._exit(1)

