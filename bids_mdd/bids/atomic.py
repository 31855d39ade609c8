"""Atomic file output: write to a temporary file beside the target, then rename over it.

A reader (or a concurrent participant job) sees either the old file or the complete new one,
never a partial one; an interrupted run leaves no half-written output behind. A run killed
with SIGKILL cannot remove its temporary files: their names say which process on which host
wrote them, and the next run removes those that are stale (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_MARK = ".bids_mdd-tmp-"
#: ``.bids_mdd-tmp-<pid>@<host>-<12 hex>-<final name>`` (32 hex in earlier versions)
_TEMP_NAME = re.compile(re.escape(TEMP_MARK) + r"(\d+)@(.*?)-([0-9a-f]{12}|[0-9a-f]{32})-(.+)$")
#: The longest file name Linux file systems take (NAME_MAX), in bytes.
NAME_MAX = 255
#: The widest process id Linux hands out (pid_max is at most 4194304).
_PID_DIGITS = 7
#: A temporary file of another host counts as stale after this long without a change.
FOREIGN_STALE_S = 24 * 3600


def _host() -> str:
    return socket.gethostname().split(".")[0] or "localhost"


def temporary_path(path: Path) -> Path:
    """A temporary name beside ``path`` that ends with its name (nibabel chooses compression
    by the extension) and carries the process id, the host and a random token, so concurrent
    writers never share one."""
    return path.with_name(f"{TEMP_MARK}{os.getpid()}@{_host()}-{uuid.uuid4().hex[:12]}-"
                          f"{path.name}")


def longest_output_name() -> int:
    """The longest final name (bytes) whose temporary name still fits :data:`NAME_MAX`."""
    prefix = f"{TEMP_MARK}{'9' * _PID_DIGITS}@{_host()}-{'0' * 12}-"
    return NAME_MAX - len(prefix.encode())


@contextmanager
def atomic_outputs(*paths: str | Path) -> Iterator[list[Path]]:
    """Yield temporary paths to write, one per path; when every one is written they replace
    their targets in the order given (an image before its sidecar). On any error all the
    temporary files are removed and no target is touched."""
    targets = [Path(path) for path in paths]
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
    temps = [temporary_path(target) for target in targets]
    try:
        yield temps
        for tmp, target in zip(temps, targets):
            if not tmp.exists():
                raise RuntimeError(f"nothing was written to the temporary file for {target}")
        for tmp, target in zip(temps, targets):
            os.replace(tmp, target)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` in one rename."""
    with atomic_outputs(path) as (tmp,):
        yield tmp


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def json_text(data: Any) -> str:
    """``data`` as indented JSON (sorted keys, trailing newline), as every sidecar is written."""
    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"


def write_json(path: str | Path, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON (sorted keys, trailing newline)."""
    return write_text(path, json_text(data))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(root: Path, owned: Callable[[str], bool]) -> list[Path]:
    """Remove temporary files under ``root`` that no running writer will rename; return them.

    Written on this host: stale when its process is gone. Written on another host (another
    cluster node, another container): stale when ``owned`` says its final path (relative to
    ``root``, '/'-separated) belongs to this run — no other run writes the participants this
    run processes — or when it has not changed for a day.
    """
    removed = []
    host, now = _host(), time.time()
    for tmp in root.rglob(f"{TEMP_MARK}*"):
        match = _TEMP_NAME.match(tmp.name)
        if match is None or not tmp.is_file():
            continue
        pid, writer_host, final = int(match[1]), match[2], match[4]
        relative = tmp.with_name(final).relative_to(root).as_posix()
        if writer_host == host:
            stale = pid != os.getpid() and not _alive(pid)
        else:
            try:
                stale = owned(relative) or now - tmp.stat().st_mtime > FOREIGN_STALE_S
            except OSError:
                continue
        if stale:
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
