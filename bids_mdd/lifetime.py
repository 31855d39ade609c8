"""Child processes that end with their parent, also when the parent is killed with SIGKILL.

SIGTERM and SIGINT are handled (:mod:`bids_mdd.cli.signals` stops every worker), but SIGKILL
cannot be: the OOM killer, ``scancel --signal=KILL`` or a node's time limit would leave
nipype's workers (and their own children) running, re-parented to init, holding cores and
writing to the work folder. Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG)``) has the
kernel send SIGKILL to a child when its parent ends. It is asked for by ctypes: no maintained
package wraps that one call (python-prctl needs libcap headers to build).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

#: <linux/prctl.h>
PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> bool:
    """In a child: be sent SIGKILL when the process ``parent_pid`` (its parent) ends; exit at
    once if it has already ended. Returns False where Linux's prctl is not available."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(128 + int(signal.SIGKILL))
    return True
