"""The single owner of derivative file names: entities -> path, and path -> entities.

Paths are built with pybids' ``build_path`` from the patterns below and parsed back with pybids'
``parse_file_entities``; no other module formats a derivative path by hand.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from bids.layout import parse_file_entities
from bids.layout.models import Config
from bids.layout.writing import build_path

_SOURCE = "[_acq-{acquisition}][_ce-{ceagent}][_rec-{reconstruction}][_run-{run}]"
_SUBJECT = "sub-{subject}[_ses-{session}]" + _SOURCE
_SUBJECT_DIR = "sub-{subject}[/ses-{session}]/{datatype<anat>|anat}/"

#: Path patterns of every output bids_mdd writes (docs/outputs.md lists them).
PATH_PATTERNS: tuple[str, ...] = (
    # images, masks, tissue maps, QC metrics, predictions and attention maps (participant level)
    _SUBJECT_DIR + _SUBJECT + "[_space-{space}][_atlas-{atlas}][_res-{res}][_label-{label}]"
    "[_desc-{desc}]"
    "_{suffix<T1w|mask|probseg|dseg|metrics|predictions|attention>}"
    "{extension<.nii.gz|.json|.tsv>|.nii.gz}",
    # transforms
    _SUBJECT_DIR + _SUBJECT + "_from-{from}_to-{to}_mode-{mode<image|points>|image}"
    "_{suffix<xfm>|xfm}{extension<.h5|.txt|.json>|.h5}",
    # QC figures
    "{datatype<figures>}/" + _SUBJECT + "[_space-{space}]_desc-{desc}{extension<.svg|.png>|.svg}",
    # participant report
    "sub-{subject}{extension<.html>}",
    # group level
    "group/group[_space-{space}][_res-{res}][_contrast-{contrast}][_stat-{stat}][_desc-{desc}]"
    "_{suffix<statmap|mask|attention|predictions|metrics|clusters|regions>}"
    "{extension<.nii.gz|.json|.tsv>|.nii.gz}",
    "group/group{extension<.html>}",
    # group figures
    "group/{datatype<figures>}/group_desc-{desc}{extension<.svg|.png>|.svg}",
)

# Entities bids_mdd uses that pybids' 'bids' and 'derivatives' configurations do not define.
_EXTRA_ENTITIES = [
    {"name": "contrast", "pattern": "[_/\\\\]+contrast-([a-zA-Z0-9+]+)"},
    {"name": "stat", "pattern": "[_/\\\\]+stat-([a-zA-Z0-9+]+)"},
    {"name": "datatype", "pattern": "(?:^|[/\\\\])(anat|figures)[/\\\\]+"},
]


@lru_cache(maxsize=1)
def _parse_configs() -> tuple[Config, ...]:
    return (Config.load("bids"), Config.load("derivatives"),
            Config(name="bids_mdd", entities=_EXTRA_ENTITIES))


def relative_path(**entities: Any) -> str:
    """Return the derivative path (relative to OUTPUT_DIR) for ``entities``.

    Raises
    ------
    ValueError
        When no bids_mdd output pattern takes exactly these entities.
    """
    clean = {key: value for key, value in entities.items() if value not in (None, "")}
    path = build_path(clean, list(PATH_PATTERNS), strict=True)
    if path is None:
        raise ValueError(f"no bids_mdd output name takes the entities {sorted(clean.items())}")
    return path


def derivative_path(output_dir: str | Path, **entities: Any) -> Path:
    """Return the absolute derivative path under ``output_dir`` for ``entities``."""
    return Path(output_dir) / relative_path(**entities)


def raw_path(root: str | Path, **entities: Any) -> Path:
    """Path of a raw (input) BIDS file, from pybids' own BIDS path patterns."""
    clean = {key: value for key, value in entities.items() if value not in (None, "")}
    path = build_path(clean, Config.load("bids").default_path_patterns, strict=True)
    if path is None:
        raise ValueError(f"no BIDS name takes the entities {sorted(clean.items())}")
    return Path(root) / path


def sidecar_path(path: str | Path) -> Path:
    """Return the JSON sidecar path of a derivative file (``.nii.gz``/``.tsv`` -> ``.json``)."""
    path = Path(path)
    name = path.name
    for ext in (".nii.gz", ".nii", ".tsv", ".h5", ".json"):
        if name.endswith(ext):
            return path.with_name(name[: -len(ext)] + ".json")
    raise ValueError(f"{path} has no extension that takes a JSON sidecar")


def attention_desc(target: str) -> str:
    """The ``desc`` of a target's attention map: its name without non-alphanumerics."""
    return "".join(ch for ch in target if ch.isalnum())


def parse_path(path: str | Path) -> dict[str, Any]:
    """Return the entities of a bids_mdd derivative path (the inverse of ``relative_path``)."""
    text = str(path)
    if not text.startswith("/"):
        text = "/" + text  # pybids' subject rule wants a separator before 'sub-'
    entities = parse_file_entities(text, config=list(_parse_configs()))
    if Path(path).name == "group.html":
        entities.pop("suffix", None)  # pybids reads the bare stem 'group' as a suffix
    return {key: value for key, value in entities.items() if value is not None}


def crash_name(entities: dict[str, Any]) -> str:
    """The name of the crash file written under OUTPUT_DIR/logs for the T1w with ``entities``."""
    return "crash-" + "_".join(f"{key}-{value}" for key, value in entities.items()) + ".txt"


def names_participant(relative: str, subject: str) -> bool:
    """Whether the output at ``relative`` ('/'-separated, under OUTPUT_DIR) is participant
    ``subject``'s: in its folder, or a figure or report named after it."""
    parts = relative.split("/")
    return parts[0] == f"sub-{subject}" or parts[-1].startswith((f"sub-{subject}_",
                                                                 f"sub-{subject}."))


#: Written into sub-<label>/ while a participant level processes that participant; a run killed
#: before it finished leaves it, and the group level then refuses the incomplete participant.
IN_PROGRESS = ".bids_mdd-in-progress.json"


def in_progress_path(output_dir: str | Path, subject: str) -> Path:
    """The in-progress marker of participant ``subject`` (a dot file: BIDS tools skip it)."""
    return Path(output_dir) / f"sub-{subject}" / IN_PROGRESS
