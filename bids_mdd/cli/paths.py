"""Checks on the command line's paths, each failing with its BIDS-Apps exit code."""

from __future__ import annotations

import os
from pathlib import Path

from bids_mdd.errors import BidsMddError, ExitCode


def _is_within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def check_bids_dir(bids_dir: Path) -> Path:
    """Resolve ``bids_dir``; exit 66 when it is missing or not a folder."""
    if not bids_dir.exists():
        raise BidsMddError(f"bids_dir {bids_dir} does not exist (check the path or the "
                           "container bind mount)", ExitCode.MISSING_INPUT)
    if not bids_dir.is_dir():
        raise BidsMddError(f"bids_dir {bids_dir} is not a folder", ExitCode.MISSING_INPUT)
    return bids_dir.resolve()


def check_not_inside(bids_dir: Path, path: Path, what: str) -> Path:
    """Resolve ``path``; exit 64 when it is ``bids_dir`` or inside it (the input stays read only)."""
    resolved = path.resolve()
    if _is_within(resolved, bids_dir):
        raise BidsMddError(f"{what} {path} is inside bids_dir {bids_dir}: choose a folder outside "
                           "the input dataset, which bids_mdd never writes to", ExitCode.USAGE)
    return resolved


def ensure_writable_dir(path: Path, what: str) -> Path:
    """Create ``path`` if needed; exit 73 when it cannot be created or written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BidsMddError(f"cannot create {what} {path}: {exc.strerror or exc}",
                           ExitCode.CANNOT_CREATE_OUTPUT) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise BidsMddError(f"cannot write to {what} {path}: permission denied",
                           ExitCode.CANNOT_CREATE_OUTPUT)
    return path
