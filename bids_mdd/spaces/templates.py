"""Template files through templateflow, failing fast and clearly when a file is not on disk.

templateflow downloads files it does not find in ``TEMPLATEFLOW_HOME``. We use a local file when
there is one, let templateflow try its download otherwise (offline that fails within seconds),
and turn any failure into a one-line error naming the file and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bids_mdd.errors import BidsMddError, ExitCode

TEMPLATE = "MNI152NLin2009cAsym"
#: Where the bids_mdd images keep their templates (their TEMPLATEFLOW_HOME).
IMAGE_TEMPLATEFLOW = "/opt/templateflow"


def template_file(template: str = TEMPLATE, **query: Any) -> Path:
    """Return the one local templateflow file matching ``query`` (e.g. resolution=1, suffix="T1w").

    Raises exit 66 naming ``TEMPLATEFLOW_HOME`` when the file is absent or empty locally.
    """
    os.environ.setdefault("TEMPLATEFLOW_AUTOUPDATE", "0")
    home = os.environ.get("TEMPLATEFLOW_HOME", "~/.cache/templateflow")
    fix = "point TEMPLATEFLOW_HOME at a pre-populated templateflow folder"
    if os.environ.get("BIDS_MDD_CONTAINER_TYPE") and Path(IMAGE_TEMPLATEFLOW).is_dir():
        # the host's variable reached the image (Apptainer passes the environment in)
        fix = (f"the image holds its templates in {IMAGE_TEMPLATEFLOW}: run with "
               "apptainer run --cleanenv, or unset TEMPLATEFLOW_HOME")
    try:  # imported late: it reads TEMPLATEFLOW_HOME, and sets a missing one up, at import
        from templateflow import api
    except OSError as exc:  # e.g. a host path on a read-only container root
        raise BidsMddError(f"TEMPLATEFLOW_HOME={home} cannot be set up ({exc.strerror or exc}): "
                           f"{fix}", ExitCode.MISSING_INPUT) from exc

    described = ", ".join(f"{key}={value}" for key, value in sorted(query.items()))
    local = _existing(api.ls(template, **query))
    why = ""
    if not local:
        try:
            local = _existing(api.get(template, raise_empty=False, **query))
        except Exception as exc:  # templateflow raises requests' and OSError's errors offline
            why = f" (download failed: {type(exc).__name__})"
    if len(local) != 1:
        what = "is not" if not local else f"matches {len(local)} files"
        raise BidsMddError(
            f"template tpl-{template} ({described}) {what} in TEMPLATEFLOW_HOME={home}{why}: "
            f"{fix}", ExitCode.MISSING_INPUT)
    return local[0]


def _existing(found: Any) -> list[Path]:
    paths = [Path(p) for p in (found if isinstance(found, list) else [found]) if p]
    return [p for p in paths if p.is_file() and p.stat().st_size > 0]


def template_t1w(resolution: int = 1) -> Path:
    """The whole-head MNI152NLin2009cAsym T1w template."""
    return template_file(resolution=resolution, suffix="T1w", desc=None)


def template_brain_mask(resolution: int = 1) -> Path:
    """The MNI152NLin2009cAsym brain mask."""
    return template_file(resolution=resolution, suffix="mask", desc="brain")


def required_templates() -> list[Path]:
    """Every template file bids_mdd reads (downloaded when missing and online): what a container
    image must hold to run offline."""
    return [template_t1w(1), template_brain_mask(1)]
