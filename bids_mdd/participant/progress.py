"""In-progress markers: one per participant while a participant level runs, so that a group
level started too early (or after a killed run) knows the participant is incomplete."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from bids_mdd.bids.atomic import write_json
from bids_mdd.bids.names import in_progress_path


@contextmanager
def participants_in_progress(output_dir: Path, subjects: Iterable[str]
                             ) -> Iterator[Callable[[str], None]]:
    """Mark ``subjects`` as being processed (host, pid, start time) until the block ends,
    also when it raises an error; a killed or interrupted (SIGTERM, SIGINT: not an Exception)
    run leaves the markers of the participants it had not finished, since they are
    incomplete. The block gets a function that removes one participant's marker as soon as
    it is finished."""
    markers = [in_progress_path(output_dir, subject) for subject in dict.fromkeys(subjects)]
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for marker in markers:
        write_json(marker, {"Host": socket.gethostname(), "Pid": os.getpid(),
                            "Started": started})
    try:
        yield lambda subject: _remove([in_progress_path(output_dir, subject)])
    except Exception:
        _remove(markers)
        raise
    _remove(markers)


def _remove(markers: list[Path]) -> None:
    """Remove the markers; one the file system refuses (read-only now) stays, which is the safe
    side: its participant reads as incomplete."""
    for marker in markers:
        with suppress(OSError):
            marker.unlink(missing_ok=True)
        with suppress(OSError):
            marker.parent.rmdir()  # only when nothing was written for the participant
