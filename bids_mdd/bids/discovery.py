"""Find the T1w images to process with pybids, honouring labels, sessions and BIDS filters."""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bids import BIDSLayout, BIDSLayoutIndexer
from bids.exceptions import BIDSValidationError
from bids.layout.db import ConnectionManager
from bids.layout.models import Config

from bids_mdd.bids.names import sidecar_path
from bids_mdd.bids.outputs import T1wOutputs
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
#: Files that look like a T1w image, whether or not pybids takes them.
_LOOKS_LIKE_T1W = ("**/*T1w*.nii", "**/*T1w*.nii.gz")
#: Top-level folders whose T1w-like files are not raw inputs (pybids indexes none of them).
_NOT_RAW = {"code", "derivatives", "models", "sourcedata", "stimuli"}
#: Filter-file keys of other fMRIPrep-style apps: accepted (a shared file works) and ignored.
OTHER_APPS_FILTER_KEYS = ("asl", "bold", "dwi", "flair", "fmap", "pet", "roi", "sbref", "t2w")
#: The file pybids keeps its index in, inside ``--bids-database-dir``.
INDEX_FILE = "layout_index.sqlite"


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

    def outputs(self, output_dir: Path) -> T1wOutputs:
        """Where the participant level writes this T1w's derivatives under ``output_dir``."""
        return T1wOutputs(Path(output_dir), self.output_entities())


def normalize_labels(labels: Iterable[str] | None, prefix: str) -> list[str] | None:
    """Strip an optional BIDS prefix (``sub-``/``ses-``) from each label; keep order, drop
    repeats."""
    if labels is None:
        return None
    cleaned = [label[len(prefix):] if label.startswith(prefix) else label for label in labels]
    option = "--participant-label" if prefix == "sub-" else "--session-label"
    for given, label in zip(labels, cleaned):
        if not _LABEL.fullmatch(label):  # else "not found: sub-001" for sub-sub-001
            what = "is empty" if not label else (f"gives the label {label!r}, which is not a "
                                                   "BIDS label (letters and digits only)")
            raise BidsMddError(f"{option} {given!r} {what}; give labels as 01 or {prefix}01",
                               ExitCode.NO_FILES)  # as for a label not in the dataset
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
    """Read an fMRIPrep-style ``--bids-filter-file``; return its "t1w" query (may be empty).

    A mistyped key or entity would otherwise be ignored (every T1w processed) or reach pybids
    as a traceback: each is refused with exit 64, naming the file and the key.
    """
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
    known = ("t1w", *OTHER_APPS_FILTER_KEYS)
    for key in filters:
        if key not in known:
            raise BidsMddError(
                f"--bids-filter-file {path}: unknown key {key!r}{_did_you_mean(key, known)}; "
                f"bids_mdd reads 't1w' (and ignores {', '.join(OTHER_APPS_FILTER_KEYS)})",
                ExitCode.USAGE)
    ignored = sorted(set(filters) - {"t1w"})
    if ignored:
        LOGGER.warning("--bids-filter-file %s: bids_mdd uses only 't1w'; ignoring %s", path,
                       ", ".join(ignored))
    query = dict(filters.get("t1w", {}))
    entities = bids_entities()
    for key, value in query.items():
        if key not in entities:
            raise BidsMddError(
                f"--bids-filter-file {path}: 't1w' has unknown entity {key!r}"
                f"{_did_you_mean(key, list(entities), entities)}; pybids knows "
                f"{', '.join(sorted(entities))}", ExitCode.USAGE)
        values = value if isinstance(value, list) else [value]
        if not values or not all(_is_filter_value(item) for item in values):
            raise BidsMddError(
                f"--bids-filter-file {path}: 't1w' entity {key!r} is {json.dumps(value)}; "
                "write a string, an integer, null (entity absent) or a non-empty list of them",
                ExitCode.USAGE)
    return query


def bids_entities() -> dict[str, str]:
    """The entities pybids' BIDS configuration knows (what a filter may name), each with its
    key in file names (acquisition: acq)."""
    entities = {}
    for name, entity in Config.load("bids").entities.items():
        short = re.search(r"([A-Za-z]+)-\(", entity.pattern or "")
        entities[name] = short.group(1) if short else name
    return entities


def _did_you_mean(key: str, choices: Sequence[str], short: Mapping[str, str] | None = None
                  ) -> str:
    by_short = {value: name for name, value in (short or {}).items()}
    if key in by_short:
        return f" (did you mean {by_short[key]!r}?)"
    lowered = {choice.lower(): choice for choice in choices}
    close = ([lowered[key.lower()]] if key.lower() in lowered
             else difflib.get_close_matches(key, list(choices), n=1))
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_filter_value(value: Any) -> bool:
    return value is None or isinstance(value, str) or (isinstance(value, int)
                                                       and not isinstance(value, bool))


def open_layout(bids_dir: str | Path, validate: bool = True,
                database_dir: str | Path | None = None) -> BIDSLayout:
    """Index ``bids_dir`` with pybids, reusing the index in ``database_dir`` unless the dataset
    changed after it was written (pybids reuses an index as it is: an added participant would
    be invisible)."""
    bids_dir = Path(bids_dir)
    try:
        if database_dir is None:
            return BIDSLayout(bids_dir, validate=validate, indexer=_indexer(validate))
        database_dir = Path(database_dir)
        database_dir.mkdir(parents=True, exist_ok=True)
        if _index_outdated(bids_dir, database_dir):
            _reindex(bids_dir, database_dir, validate)
        return BIDSLayout(bids_dir, validate=validate, database_path=database_dir)
    except BIDSValidationError as exc:
        message = str(exc).splitlines()[0]
        raise BidsMddError(f"{bids_dir}: {message} (or pass --skip-bids-validation)",
                           ExitCode.INVALID_BIDS) from exc


def _indexer(validate: bool) -> BIDSLayoutIndexer:
    """pybids' indexer of file names only: bids_mdd reads no sidecar metadata, and indexing it
    costs time and fails on one sidecar that is not valid JSON (pybids' OSError, a traceback
    when validation is skipped; the validator names such a file)."""
    return BIDSLayoutIndexer(validate=validate, index_metadata=False)


def _index_outdated(bids_dir: Path, database_dir: Path) -> bool:
    """Whether ``database_dir`` has no usable index of ``bids_dir`` (one INFO line says why
    when there was one)."""
    index = database_dir / INDEX_FILE
    if not index.is_file():
        return True
    try:
        manager = ConnectionManager(database_dir)
        indexed_root = Path(manager.layout_info.root)
        manager.engine.dispose()
    except Exception as exc:  # a truncated or foreign file: sqlalchemy raises many types
        LOGGER.info("--bids-database-dir %s: %s is not a pybids index (%s); reindexing %s",
                    database_dir, index, type(exc).__name__, bids_dir)
        return True
    if indexed_root.resolve() != bids_dir.resolve():
        if indexed_root.is_dir():
            raise BidsMddError(
                f"--bids-database-dir {database_dir} holds the index of {indexed_root}, not of "
                f"{bids_dir}: give each dataset its own folder (or delete {index})",
                ExitCode.USAGE)
        LOGGER.info("--bids-database-dir %s: the indexed dataset %s is gone (moved?); "
                    "reindexing %s", database_dir, indexed_root, bids_dir)
        return True
    changed = _changed_since(bids_dir, index.stat().st_mtime_ns)
    if changed is not None:
        LOGGER.info("--bids-database-dir %s: %s changed after the index was written; "
                    "reindexing %s", database_dir, changed, bids_dir)
    return changed is not None


def _changed_since(bids_dir: Path, since_ns: int) -> Path | None:
    """A folder of ``bids_dir`` (root included) modified at or after ``since_ns``, else None.

    Adding, removing or renaming a file changes its folder's mtime, and pybids' index holds
    names only (bids_mdd reads no metadata from it), so folders suffice: a stat per folder,
    not per file. Folders pybids does not index (code/, derivatives/, dot folders...) are
    skipped. An equal mtime counts as a change: a coarse clock could hide one.
    """
    seen: set[tuple[int, int]] = set()
    stack = [bids_dir]
    while stack:
        folder = stack.pop()
        try:
            info = folder.stat()
            if (info.st_dev, info.st_ino) in seen:
                continue  # a symlink loop
            seen.add((info.st_dev, info.st_ino))
            if info.st_mtime_ns >= since_ns:
                return folder
            entries = list(os.scandir(folder))
        except OSError:
            return folder  # unreadable now: let pybids index it and report
        for entry in entries:
            if entry.name.startswith(".") or (folder == bids_dir and entry.name in _NOT_RAW):
                continue
            if entry.is_dir():
                stack.append(Path(entry.path))
    return None


def _reindex(bids_dir: Path, database_dir: Path, validate: bool) -> None:
    """Index ``bids_dir`` into a private folder, then move the index into ``database_dir`` in
    one rename: array jobs sharing ``database_dir`` never read a half-written index."""
    scratch = Path(tempfile.mkdtemp(prefix=".bids_mdd-index-", dir=database_dir))
    try:
        layout = BIDSLayout(bids_dir, validate=validate, database_path=scratch,
                            reset_database=True, indexer=_indexer(validate))
        layout.connection_manager.engine.dispose()
        os.replace(scratch / INDEX_FILE, database_dir / INDEX_FILE)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


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
    for path, reason in unselected_t1w(layout, participants):  # before "not found" below
        LOGGER.warning("%s: not processed: %s", path, reason)
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
    for item, why in [(item, _not_a_file(item.path)) for item in inputs]:
        if why:
            LOGGER.warning("%s: not processed: %s", item.path, why)
            inputs.remove(item)
    for item in inputs:
        _warn_of_broken_sidecar(item.path)
    inputs = drop_duplicates(inputs)
    if not inputs:
        shown = {key: value for key, value in query.items() if key not in DEFAULT_T1W_QUERY}
        raise BidsMddError(f"no T1w image in {bids_dir} matches the selection {shown or 'given'} "
                           "(check --participant-label, --session-label and --bids-filter-file)",
                           ExitCode.NO_FILES)
    return inputs


def _named_right(bids_file: Any, root: Path) -> bool:
    """Whether pybids' file has a subject entity that is its folder's whole, valid label
    (without validation pybids reads 'sub-0 2/anat/sub-0 2_T1w.nii.gz' as subject '0')."""
    subject = bids_file.entities.get("subject")
    relative = Path(bids_file.path).relative_to(root)
    return (subject is not None and _LABEL.fullmatch(str(subject)) is not None
            and relative.parts[0] == f"sub-{subject}"
            and relative.name.startswith(f"sub-{subject}_"))


def drop_duplicates(inputs: Sequence[T1wInput]) -> list[T1wInput]:
    """One input per set of derivative names: two would share nipype nodes and outputs, and
    the whole run would fail. Each clash is one warning naming its files.

    A ``.nii`` beside the ``.nii.gz`` of the same name gives way to the ``.nii.gz``. Files
    that differ only in entities bids_mdd does not name outputs by (echo-1/echo-2, or
    entities pybids does not read) are all left out: which one is the T1w to analyse is the
    user's choice, made with --bids-filter-file; the other participants go on.
    """
    groups: dict[tuple, list[T1wInput]] = {}
    for item in sorted(inputs, key=lambda i: str(i.path)):
        groups.setdefault(tuple(sorted(item.output_entities().items())), []).append(item)
    kept = []
    for group in groups.values():
        if len(group) == 1:
            kept.append(group[0])
            continue
        stems = {item.path.name.removesuffix(".gz").removesuffix(".nii") for item in group}
        gzipped = [item for item in group if item.path.name.endswith(".nii.gz")]
        if len(stems) == 1 and len(gzipped) == 1:
            kept.append(gzipped[0])
            for item in group:
                if item is not gzipped[0]:
                    LOGGER.warning("%s: not processed: %s is the same image name compressed; "
                                   "bids_mdd uses the .nii.gz (delete one of the two)",
                                   item.path, gzipped[0].path)
            continue
        LOGGER.warning("%s: not processed: %s", ", ".join(str(item.path) for item in group),
                       _clash_reason(group))
    return sorted(kept, key=_sort_key)


def _clash_reason(group: Sequence[T1wInput]) -> str:
    """Why files that would write the same derivatives are left out, and how to pick one."""
    shared = ", ".join(f"{key} {value}" for key, value in group[0].output_entities().items())
    keys = sorted({key for item in group for key in item.entities} - {"extension"})
    differ = [key for key in keys if len({str(item.entities.get(key)) for item in group}) > 1]
    if not differ:
        return (f"they would write the same derivatives ({shared}) and pybids reads the same "
                "entities from their names; rename or .bidsignore all but one")
    value = json.dumps(group[0].entities.get(differ[0]))
    return (f"they would write the same derivatives ({shared}), differing only in "
            f"{', '.join(differ)}; choose one with --bids-filter-file, e.g. "
            f'{{"t1w": {{"{differ[0]}": [{value}, null]}}}}')


def unselected_t1w(layout: BIDSLayout, participants: Sequence[str] | None = None
                   ) -> list[tuple[Path, str]]:
    """Files that look like a T1w image but that pybids does not offer as one, each with the
    reason and the fix (no participant is dropped without a word).

    Files pybids does offer are not listed: session labels and filters leave them out on
    purpose. Nor are files under derivatives/, sourcedata/, code/ and other folders that hold
    no raw data. With ``participants``, only their folders (and stray files named after them)
    are looked at.
    """
    root = Path(layout.root)
    offered = {Path(f.path) for f in layout.get(return_type="object", **DEFAULT_T1W_QUERY)
               if _named_right(f, root)}
    found = _t1w_like_files(root)
    unselected = []
    for path in found:
        relative = path.relative_to(root)
        in_folder = relative.parts[0].startswith("sub-") and len(relative.parts) > 1
        named = re.match(r"sub-([^_]+)_", relative.name)
        label = (relative.parts[0].removeprefix("sub-") if in_folder
                 else named.group(1) if named else None)
        if path in offered or (participants and label not in participants):
            continue
        if not_a_file := _not_a_file(path):
            reason = not_a_file
        elif not in_folder:
            reason = ("not inside a sub-<label>/ folder; move it to "
                      "sub-<label>/[ses-<label>/]anat/")
        elif not _LABEL.fullmatch(label):
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


def _warn_of_broken_sidecar(t1w: Path) -> None:
    """One warning for a T1w sidecar that is not valid JSON (bids_mdd reads none, so the run
    goes on; with validation the validator has refused the dataset already)."""
    sidecar = sidecar_path(t1w)
    if not sidecar.is_file():  # absent, or no regular file (a FIFO would block the read)
        return
    try:
        json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        LOGGER.warning("%s: not valid JSON (%s); bids_mdd reads no sidecar metadata and goes on, "
                       "but fix it for other BIDS tools", sidecar, exc)


def _not_a_file(path: Path) -> str | None:
    """Why ``path`` (or what its symlink points to) is no image file, with the fix; None for a
    regular file or a dangling symlink (told apart later, when the image is read). Opening a
    FIFO would block the whole run until something writes to it."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a device")
    return f"{kind}, not a file; a T1w must be a .nii or .nii.gz file (replace it with one)"


def _t1w_like_files(root: Path) -> list[Path]:
    """T1w-like files where raw data may be: not in derivatives/, code/, dot folders..."""
    found = set()
    for top in root.iterdir():
        if top.name.startswith(".") or top.name in _NOT_RAW:
            continue
        if top.is_dir():
            found.update(path for pattern in _LOOKS_LIKE_T1W for path in top.glob(pattern)
                         if not any(part.startswith(".") for part in
                                    path.relative_to(top).parts[:-1]))
        elif any(top.match(pattern.removeprefix("**/")) for pattern in _LOOKS_LIKE_T1W):
            found.add(top)
    return sorted(found)


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
