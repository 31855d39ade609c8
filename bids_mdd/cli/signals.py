"""SIGTERM and SIGINT (``kill``, ``timeout``, SLURM's pre-emption, Ctrl-C): stop the run and
its worker processes with it, and say how to resume."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """Raised in the main process by SIGTERM or SIGINT. A BaseException, as KeyboardInterrupt
    is, so that no ``except Exception`` (ours or nipype's) takes it for a step's failure."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process the signal ended."""
        return 128 + self.signum


@contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise :class:`Interrupted` in this process. nipype's
    workers are forked from it and inherit the handler: a worker that receives the signal (a
    Ctrl-C reaches the whole process group) ends at once without a traceback, and the main
    process reports once."""
    main_pid = os.getpid()

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != main_pid:
            os._exit(128 + signum)
        raise Interrupted(signum)

    previous = {signum: signal.signal(signum, handler) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def descendants(pid: int) -> list[int]:
    """The processes below ``pid``, children first, from /proc (Linux; [] elsewhere). psutil
    would do it portably, but it is not otherwise a dependency of the image."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # the process ended while we looked
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(0), [])
        found += children
        todo += children
    return found


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child and has ended
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").is_dir() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def stop_children(grace_s: float = 5.0) -> int:
    """SIGTERM every process below this one (nipype's pool workers, joblib's), wait up to
    ``grace_s`` for them to end, SIGKILL those left; return how many there were."""
    # the pool's own thread logs each future its dead workers leave broken: noise, we know
    logging.getLogger("concurrent.futures").setLevel(logging.CRITICAL)
    pids = descendants(os.getpid())
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for child in multiprocessing.active_children():  # reaps multiprocessing's own
        child.join(1.0)
    return len(pids)
