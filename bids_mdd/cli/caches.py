"""Caches in a read-only image: writable copies, so that prebuilt caches are used, not rebuilt.

The images keep matplotlib's font cache, nipype's and torch's folders under ``/opt/cache``
(outside ``$HOME``, which a foreign uid lacks and Apptainer binds from the host). Apptainer
images are read-only, and matplotlib ignores a cache folder it cannot write to, rebuilding
the font cache in a fresh temporary folder on every run; none of the three libraries has a
read-only cache mode, hence this copy.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import MutableMapping
from pathlib import Path

from bids_mdd.cli.home import user_scratch

#: The variables naming cache folders that bids_mdd's images set.
CACHE_VARIABLES = ("MPLCONFIGDIR", "NIPYPE_CONFIG_DIR", "TORCH_HOME")


def ensure_writable_caches(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Point each cache variable whose folder is not writable at a per-user copy in the temp
    folder (made once, reused after); return the variables changed."""
    changed = {}
    for variable in CACHE_VARIABLES:
        configured = environ.get(variable)
        if not configured or os.access(configured, os.W_OK):
            continue
        copy = user_scratch() / variable.lower()
        if Path(configured).is_dir():
            shutil.copytree(configured, copy, dirs_exist_ok=True)
        copy.mkdir(parents=True, exist_ok=True)
        environ[variable] = changed[variable] = str(copy)
    return changed
