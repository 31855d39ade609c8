"""Checks on the command line's paths, each failing with its BIDS-Apps exit code."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from bids_mdd._version import __version__
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


def suggested_output_dir(bids_dir: Path) -> Path:
    """Where the BIDS specification puts a pipeline's derivatives inside a dataset."""
    return bids_dir / "derivatives" / f"bids_mdd-{__version__}"


def check_output_dir(bids_dir: Path, output_dir: Path) -> Path:
    """Resolve OUTPUT_DIR: a folder outside ``bids_dir``, or one inside its ``derivatives/``
    folder, the layout of the BIDS specification and the nipreps apps
    (``<dataset>/derivatives/<pipeline>/``; pybids' discovery and the BIDS validator skip
    ``derivatives/``, so the outputs are never taken for inputs). Exit 64, suggesting that
    layout, for ``bids_dir`` itself, its ``derivatives/`` folder itself, and anywhere else
    inside it: the raw data are never written to."""
    resolved = output_dir.resolve()
    if not _is_within(resolved, bids_dir) or (bids_dir / "derivatives") in resolved.parents:
        return resolved
    where = ("is bids_dir itself" if resolved == bids_dir
             else f"is inside bids_dir {bids_dir} but not under its derivatives/ folder")
    raise BidsMddError(f"output_dir {output_dir} {where}: write the derivatives to "
                       f"{suggested_output_dir(bids_dir)} or to a folder outside the dataset",
                       ExitCode.USAGE)


def check_not_inside(bids_dir: Path, path: Path, what: str) -> Path:
    """Resolve ``path``; exit 64 when it is ``bids_dir`` or inside it, ``derivatives/``
    included (a work folder or a database is scratch, not a dataset's content)."""
    resolved = path.resolve()
    if _is_within(resolved, bids_dir):
        raise BidsMddError(f"{what} {path} is inside bids_dir {bids_dir}: choose a folder outside "
                           "the input dataset (scratch space; the work dir's default is ./work)",
                           ExitCode.USAGE)
    return resolved


def check_work_dir(work_dir: Path, output_dir: Path) -> Path:
    """Exit 64 for a work folder inside OUTPUT_DIR but not hidden in it: nipype's files there
    would become part of the derivatives, which the BIDS validator then refuses (it skips
    names that start with a dot, as ``OUTPUT_DIR/.work``)."""
    if not _is_within(work_dir, output_dir):
        return work_dir
    inside = work_dir.relative_to(output_dir).parts
    if any(part.startswith(".") for part in inside):
        return work_dir
    raise BidsMddError(f"work_dir {work_dir} is inside output_dir {output_dir}: its nipype files "
                       "would become part of the derivatives, which the BIDS validator refuses; "
                       f"choose a folder outside it, or a hidden one ({output_dir / '.work'})",
                       ExitCode.USAGE)


#: Fixes for the errors a folder can refuse a write with.
_WRITE_FIXES = {
    errno.EROFS: "is on a read-only file system: choose a writable folder (in a container, "
                 "bind it without :ro)",
    errno.EACCES: "is not writable by uid {uid} (permission denied): choose a folder you can "
                  "write, or run as its owner (docker run -u $(id -u):$(id -g))",
    errno.EPERM: "is not writable by uid {uid} (operation not permitted): choose a folder you "
                 "can write",
    errno.ENOSPC: "is on a full file system: free space or choose another folder",
    errno.EDQUOT: "is over its disk quota: free space or choose another folder",
}
#: A folder with less free space than this is refused before any work starts.
MIN_FREE_MB = 100


def _write_error(path: Path, what: str, exc: OSError) -> BidsMddError:
    fix = _WRITE_FIXES.get(exc.errno or 0)
    message = (f"{what} {path} " + fix.format(uid=os.getuid()) if fix
               else f"cannot create {what} {path}: {exc.strerror or exc}")
    return BidsMddError(message, ExitCode.CANNOT_CREATE_OUTPUT)


def ensure_writable_dir(path: Path, what: str) -> Path:
    """Create ``path`` if needed and write a probe file in it; exit 73 with the fix (read-only
    file system, permissions, full disk or quota) when that fails or when less than
    :data:`MIN_FREE_MB` is free."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".bids_mdd-write-test-"):
            pass
    except OSError as exc:
        raise _write_error(path, what, exc) from exc
    free_mb = shutil.disk_usage(path).free / 2**20
    if free_mb < MIN_FREE_MB:
        raise BidsMddError(f"{what} {path} has only {free_mb:.0f} MB free (bids_mdd needs at "
                           f"least {MIN_FREE_MB} MB): free space or choose another folder",
                           ExitCode.CANNOT_CREATE_OUTPUT)
    return path
