"""Template files through templateflow, failing fast and clearly when a file is not on disk.

templateflow downloads files it does not find in ``TEMPLATEFLOW_HOME``; offline that fails only
after network time-outs. We look in the local index first and raise a one-line error naming the
file and the fix instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bids_mdd.errors import BidsMddError, ExitCode

TEMPLATE = "MNI152NLin2009cAsym"


def template_file(template: str = TEMPLATE, **query: Any) -> Path:
    """Return the one local templateflow file matching ``query`` (e.g. resolution=1, suffix="T1w").

    Raises exit 66 naming ``TEMPLATEFLOW_HOME`` when the file is absent or empty locally.
    """
    os.environ.setdefault("TEMPLATEFLOW_AUTOUPDATE", "0")
    from templateflow import api  # imported late: it reads TEMPLATEFLOW_HOME at import time

    home = os.environ.get("TEMPLATEFLOW_HOME", "~/.cache/templateflow")
    described = ", ".join(f"{key}={value}" for key, value in sorted(query.items()))
    found = api.ls(template, **query)
    paths = [Path(p) for p in (found if isinstance(found, list) else [found])]
    local = [p for p in paths if p.is_file() and p.stat().st_size > 0]
    if len(local) != 1:
        why = "is not" if not local else f"matches {len(local)} files"
        raise BidsMddError(
            f"template tpl-{template} ({described}) {why} in TEMPLATEFLOW_HOME={home}: "
            "point TEMPLATEFLOW_HOME at a pre-populated templateflow folder "
            "(bids_mdd runs offline)", ExitCode.MISSING_INPUT)
    return local[0]


def template_t1w(resolution: int = 1) -> Path:
    """The whole-head MNI152NLin2009cAsym T1w template."""
    return template_file(resolution=resolution, suffix="T1w", desc=None)


def template_brain_mask(resolution: int = 1) -> Path:
    """The MNI152NLin2009cAsym brain mask."""
    return template_file(resolution=resolution, suffix="mask", desc="brain")
