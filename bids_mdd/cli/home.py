"""A usable ``$HOME`` before any library reads it.

pybids reads ``~/pybids_config.json`` when it is imported, and a ``$HOME`` the user cannot
search (a cluster account's home not mounted on the node, a container's foreign uid) raises
PermissionError there: a traceback before even ``--help``. matplotlib, nipype and templateflow
look under ``$HOME`` too. Such a ``$HOME`` is replaced, for this process and its children, by
a private folder in the temp folder, with one warning line.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import MutableMapping
from pathlib import Path


def user_scratch() -> Path:
    """This user's folder in the temp folder, for what bids_mdd cannot keep elsewhere."""
    return Path(tempfile.gettempdir()) / f"bids_mdd-{os.getuid()}"


def ensure_usable_home(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Point ``HOME`` at a private temp folder when it cannot be searched and read; return the
    warning to print (None: ``HOME`` is fine, or unset)."""
    home = environ.get("HOME")
    if not home:
        return None
    path = Path(home)
    try:
        usable = path.is_dir() and os.access(path, os.R_OK | os.X_OK)
    except OSError:
        usable = False
    if usable:
        return None
    replacement = user_scratch() / "home"
    try:
        replacement.mkdir(parents=True, exist_ok=True, mode=0o700)
        mine = replacement.stat().st_uid == os.getuid()
    except OSError:
        mine = False
    if not mine:  # another user's folder of that name (a shared /tmp): a fresh one
        replacement = Path(tempfile.mkdtemp(prefix="bids_mdd-home-"))
    environ["HOME"] = str(replacement)
    return (f"warning: HOME={home} cannot be read; the libraries' user settings and caches "
            f"use {replacement} instead (set HOME to a readable folder)")
