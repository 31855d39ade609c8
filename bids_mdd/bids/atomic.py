"""Atomic file output: write to a temporary file beside the target, then rename over it.

A reader (or a concurrent participant job) sees either the old file or the complete new one,
never a partial one; an interrupted run leaves no half-written output behind.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_MARK = ".bids_mdd-tmp-"


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` in one rename.

    The temporary name ends with the final name (nibabel chooses compression by its extension)
    and carries the process id and a random token, so concurrent writers never share one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex}-{path.name}")
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written to the temporary file for {path}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON (sorted keys, trailing newline)."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
