"""Run ``bids_mdd`` and SIGKILL its whole process group when the run reaches a point: a test
helper for crash and resume (``python crash_at.py POINT ARGS...``; the caller starts it in a
new session so that only the run dies). The points are the steps' own functions, patched
before nipype forks its workers, so the kill lands inside the step, not near it.

``CRASH_AT_ACTION`` chooses what happens at the point instead of the kill: ``fill:DIR`` fills
DIR's file system (a file ``DIR/filler``) and goes on, as a disk filling up mid-run;
``readonly:DIR`` remounts the file system mounted at DIR read-only (root) and goes on;
``mark:FILE`` creates FILE and goes on, so that the caller can signal the run there."""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys

#: point -> (module whose attribute is called, attribute, the call that dies: 1 = first)
POINTS = {
    "registration": ("bids_mdd.preproc.ants_steps", "register_to_template", 1),
    "segmentation": ("bids_mdd.preproc.ants_steps", "segment_tissues", 1),
    # an image and its sidecar written to temporary files, not yet renamed
    "writing": ("bids_mdd.bids.derivatives", "atomic_outputs", 3),
    "inference": ("bids_mdd.participant.predictions", "apply_model_batch", 1),
    "report": ("bids_mdd.participant.runner", "write_participant_report", 1),
}


def _die() -> None:
    action = os.environ.get("CRASH_AT_ACTION", "kill")
    if action == "kill":
        os.killpg(os.getpgrp(), signal.SIGKILL)
    kind, _, where = action.partition(":")
    if kind == "mark":
        open(where, "w").close()
    elif kind == "readonly":
        subprocess.run(["mount", "-o", "remount,ro", where], check=True)
    elif kind == "fill":
        with open(os.path.join(where, "filler"), "wb") as filler, contextlib.suppress(OSError):
            while True:
                filler.write(b"\0" * (1 << 16))
                filler.flush()
    else:
        raise SystemExit(f"unknown CRASH_AT_ACTION {action!r}")


def _patch(point: str) -> None:
    module_name, attribute, nth = POINTS[point]
    module = importlib.import_module(module_name)
    original = getattr(module, attribute)
    calls = [0]

    if attribute == "atomic_outputs":
        @contextlib.contextmanager
        def patched(*args, **kwargs):
            with original(*args, **kwargs) as temps:
                yield temps
                calls[0] += 1
                if calls[0] == nth:
                    _die()
    else:
        def patched(*args, **kwargs):
            calls[0] += 1
            if calls[0] == nth:
                _die()
            return original(*args, **kwargs)

    setattr(module, attribute, patched)


if __name__ == "__main__":
    _patch(sys.argv[1])
    from bids_mdd.cli.run import main

    sys.exit(main(sys.argv[2:]))
