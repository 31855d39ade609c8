"""Find the T1w images to process with pybids, honouring labels, sessions and BIDS filters."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bids import BIDSLayout
from bids.exceptions import BIDSValidationError

from bids_mdd.errors import BidsMddError, ExitCode

LOGGER = logging.getLogger(__name__)

#: pybids query for T1w images; ``--bids-filter-file`` entries under "t1w" update it.
DEFAULT_T1W_QUERY: dict[str, Any] = {
    "datatype": "anat",
    "suffix": "T1w",
    "extension": [".nii", ".nii.gz"],
}
# Entities that label the output (besides subject/session) and so must reach derivative names.
SOURCE_ENTITIES = ("acquisition", "ceagent", "reconstruction", "run")
#: A BIDS label: letters and digits only.
_LABEL = re.compile(r"[A-Za-z0-9]+")
#: A BIDS T1w file name: sub-<label>, then key-value entities, then _T1w.nii[.gz].
_T1W_NAME = re.compile(r"sub-[A-Za-z0-9]+(_[a-z]+-[A-Za-z0-9]+)*_T1w\.nii(\.gz)?")
#: Files under sub-*/ that look like a T1w image, whether or not pybids takes them.
_LOOKS_LIKE_T1W = ("sub-*/**/*T1w*.nii", "sub-*/**/*T1w*.nii.gz")


@dataclass(frozen=True)
class T1wInput:
    """One T1w image to process, with the entities that name its derivatives."""

    path: Path
    subject: str
    session: str | None = None
    entities: Mapping[str, Any] = field(default_factory=dict)

    @property
    def run(self) -> int | None:
        run = self.entities.get("run")
        return None if run is None else int(run)

    def output_entities(self) -> dict[str, Any]:
        """Entities that identify this input in derivative names."""
        out: dict[str, Any] = {"subject": self.subject, "session": self.session}
        out.update({key: self.entities.get(key) for key in SOURCE_ENTITIES})
        return {key: value for key, value in out.items() if value is not None}


def normalize_labels(labels: Iterable[str] | None, prefix: str) -> list[str] | None:
    """Strip an optional BIDS prefix (``sub-``/``ses-``) from each label; keep order, drop repeats."""
    if labels is None:
        return None
    cleaned = [label[len(prefix):] if label.startswith(prefix) else label for label in labels]
    return list(dict.fromkeys(cleaned))


def check_is_bids(bids_dir: Path) -> None:
    """Raise exit 16 unless ``bids_dir`` has dataset_description.json and a ``sub-*/anat`` T1w."""
    description = bids_dir / "dataset_description.json"
    if not description.is_file():
        raise BidsMddError(
            f"{description} is missing: {bids_dir} is not a BIDS dataset "
            "(add the file, or pass --skip-bids-validation)", ExitCode.INVALID_BIDS)
    patterns = ("sub-*/anat/*_T1w.nii*", "sub-*/ses-*/anat/*_T1w.nii*")
    if not any(next(bids_dir.glob(pattern), None) for pattern in patterns):
        raise BidsMddError(
            f"{bids_dir} has no sub-*/[ses-*/]anat/*_T1w.nii[.gz]: nothing bids_mdd can process "
            "(check the path, or pass --skip-bids-validation)", ExitCode.INVALID_BIDS)


def load_bids_filters(path: str | Path | None) -> dict[str, Any]:
    """Read an fMRIPrep-style ``--bids-filter-file``; return its "t1w" query (may be empty)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise BidsMddError(f"--bids-filter-file {path} does not exist", ExitCode.MISSING_INPUT)
    try:
        filters = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise BidsMddError(f"--bids-filter-file {path} is not valid JSON ({exc}); "
                           'write e.g. {"t1w": {"session": "01"}}', ExitCode.USAGE) from exc
    if not isinstance(filters, dict) or not isinstance(filters.get("t1w", {}), dict):
        raise BidsMddError(f"--bids-filter-file {path} must map 't1w' to an object of entities, "
                           'e.g. {"t1w": {"session": "01"}}', ExitCode.USAGE)
    ignored = sorted(set(filters) - {"t1w"})
    if ignored:
        LOGGER.warning("--bids-filter-file %s: bids_mdd uses only 't1w'; ignoring %s", path,
                       ", ".join(ignored))
    return dict(filters.get("t1w", {}))


def open_layout(bids_dir: str | Path, validate: bool = True,
                database_dir: str | Path | None = None) -> BIDSLayout:
    """Index ``bids_dir`` with pybids, reusing the index in ``database_dir`` when one is there."""
    bids_dir = Path(bids_dir)
    kwargs: dict[str, Any] = {"validate": validate}
    if database_dir is not None:
        database_dir = Path(database_dir)
        database_dir.mkdir(parents=True, exist_ok=True)
        kwargs.update(database_path=database_dir, reset_database=False)
    try:
        return BIDSLayout(bids_dir, **kwargs)
    except BIDSValidationError as exc:
        message = str(exc).splitlines()[0]
        raise BidsMddError(f"{bids_dir}: {message} (or pass --skip-bids-validation)",
                           ExitCode.INVALID_BIDS) from exc


def _check_known(requested: Sequence[str] | None, list_known: Callable[[], list[str]],
                 what: str, bids_dir: Path) -> None:
    if not requested:
        return  # listing subjects costs seconds on large datasets: only when labels are given
    known = list_known()
    missing = [label for label in requested if label not in set(known)]
    if missing:
        raise BidsMddError(
            f"{what} label(s) not found in {bids_dir}: {', '.join(missing)} "
            f"(available: {', '.join(known) or 'none'})", ExitCode.NO_FILES)


def discover_t1w(layout: BIDSLayout, participant_labels: Sequence[str] | None = None,
                 session_labels: Sequence[str] | None = None,
                 bids_filters: Mapping[str, Any] | None = None) -> list[T1wInput]:
    """Every T1w per participant and session, sorted by subject, session and run.

    Raises exit 18 when a requested participant or session label is absent, or when the
    filters select no T1w at all.
    """
    bids_dir = Path(layout.root)
    participants = normalize_labels(participant_labels, "sub-")
    sessions = normalize_labels(session_labels, "ses-")
    _check_known(participants, layout.get_subjects, "participant", bids_dir)
    _check_known(sessions, layout.get_sessions, "session", bids_dir)

    query = {**DEFAULT_T1W_QUERY, **(bids_filters or {})}
    if participants:
        query["subject"] = participants
    if sessions:
        query["session"] = sessions
    files = [f for f in layout.get(return_type="object", **query) if _named_right(f, bids_dir)]
    inputs = [T1wInput(path=Path(f.path), subject=f.entities["subject"],
                       session=f.entities.get("session"), entities=dict(f.entities))
              for f in files]
    for path, reason in unselected_t1w(layout, participants):
        LOGGER.warning("%s: not processed: %s", path, reason)
    if not inputs:
        shown = {key: value for key, value in query.items() if key not in DEFAULT_T1W_QUERY}
        raise BidsMddError(f"no T1w image in {bids_dir} matches the selection {shown or 'given'} "
                           "(check --participant-label, --session-label and --bids-filter-file)",
                           ExitCode.NO_FILES)
    return sorted(inputs, key=_sort_key)


def _named_right(bids_file: Any, root: Path) -> bool:
    """Whether pybids' file has a subject entity that is its folder's whole, valid label
    (without validation pybids reads 'sub-0 2/anat/sub-0 2_T1w.nii.gz' as subject '0')."""
    subject = bids_file.entities.get("subject")
    relative = Path(bids_file.path).relative_to(root)
    return (subject is not None and _LABEL.fullmatch(str(subject)) is not None
            and relative.parts[0] == f"sub-{subject}"
            and relative.name.startswith(f"sub-{subject}_"))


def unselected_t1w(layout: BIDSLayout, participants: Sequence[str] | None = None
                   ) -> list[tuple[Path, str]]:
    """Files under ``sub-*/`` that look like a T1w image but that pybids does not offer as
    one, each with the reason and the fix (no participant is dropped without a word).

    Files pybids does offer are not listed: session labels and filters leave them out on
    purpose. With ``participants``, only their folders are looked at.
    """
    root = Path(layout.root)
    offered = {Path(f.path) for f in layout.get(return_type="object", **DEFAULT_T1W_QUERY)
               if _named_right(f, root)}
    found = sorted({path for pattern in _LOOKS_LIKE_T1W for path in root.glob(pattern)})
    unselected = []
    for path in found:
        relative = path.relative_to(root)
        label = relative.parts[0].removeprefix("sub-")
        if path in offered or (participants and label not in participants):
            continue
        if not _LABEL.fullmatch(label):
            reason = (f"participant label {label!r} is not a BIDS label (letters and digits "
                      "only); rename the folder and its files")
        elif "anat" not in relative.parts[1:-1]:
            reason = "not in an anat/ folder; move it to sub-<label>/[ses-<label>/]anat/"
        elif not _T1W_NAME.fullmatch(path.name):
            reason = ("not a BIDS T1w name (sub-<label>[_ses-<label>][_acq-<label>]"
                      "[_run-<index>]_T1w.nii[.gz]); rename it")
        else:
            reason = ("pybids does not index it (.bidsignore, or an entity it does not know);"
                      " check its name and .bidsignore")
        unselected.append((path, reason))
    return unselected


def _sort_key(item: T1wInput) -> tuple:
    return (item.subject, item.session or "", item.run or 0, str(item.path))


def select_one_per_participant(inputs: Iterable[T1wInput]) -> list[T1wInput]:
    """The T1w the group level uses for each participant: first session, then lowest run.

    Sessions sort as strings ("01" < "02" < "baseline"), a missing session first; a missing run
    counts as run 0. Remaining ties go to the lexically first path.
    """
    chosen: dict[str, T1wInput] = {}
    for item in sorted(inputs, key=_sort_key):
        chosen.setdefault(item.subject, item)
    return list(chosen.values())
