"""Children of the supervisor stop with it, even when it is killed (SIGKILL runs no handler):
Linux sends them SIGTERM when their parent dies (PR_SET_PDEATHSIG), so they drain and exit
instead of serving on as orphans."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """SIGTERM to this process once `parent_pid` (its parent now) is gone."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # it died before prctl: nobody would send the signal
        os.kill(os.getpid(), signal.SIGTERM)
