"""What the group level reads: each participant's derivatives (one T1w per participant) and
the diagnosis and covariates of participants.tsv.

A participant whose derivatives are missing is recorded, not fatal: the report lists them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bids_mdd.bids.discovery import T1wInput
from bids_mdd.bids.names import crash_name, derivative_path, in_progress_path, sidecar_path
from bids_mdd.bids.outputs import OUTPUTS, PREDICTIONS, attention_entities
from bids_mdd.bids.participants import (
    NEGATIVE_CODES,
    POSITIVE_CODES,
    binary_labels,
    decimal_comma_error,
    find_column,
    label_column,
    read_participants,
)
from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.spaces.grids import CLASSIFIER_GRID, DFRN_GRID

LOGGER = logging.getLogger(__name__)

#: Covariate name taken from each participant's QC metrics rather than participants.tsv.
TIV = "TIV"
#: participants.tsv columns tried, in order, for the automatic age and sex covariates.
AGE_COLUMNS = ("age",)
SEX_COLUMNS = ("sex", "gender")


@dataclass(frozen=True)
class ParticipantFiles:
    """One participant's derivatives used by the group level (None/empty: not found)."""

    t1w: T1wInput
    gm: Path | None
    qc: dict[str, Any] | None
    predictions: Path | None  # only complete ones: the table with its sidecar
    attention: dict[str, Path] = field(default_factory=dict)  # target -> map
    #: the targets its complete predictions list (whose maps ``attention`` should hold)
    targets: tuple[str, ...] = ()
    #: its predictions sidecar records a participant level run with ``--no-attention``
    attention_skipped: bool = False
    in_progress: dict[str, Any] | None = None  # the participant level's marker, if left
    #: why ``qc`` is None ("QC metrics <path> is missing", "... cannot be read as JSON (...)")
    qc_problem: str | None = None

    @property
    def name(self) -> str:
        """``sub-<p>[_ses-<s>]``, as in the derivatives' file names."""
        return f"sub-{self.t1w.subject}" + (f"_ses-{self.t1w.session}" if self.t1w.session
                                           else "")


def _json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: not JSON, or not UTF-8
        return None


def _qc_metrics(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A participant's QC metrics, or None and why: without them the QC gate cannot pass it."""
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"QC metrics {path} is missing"
    except (OSError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return None, f"QC metrics {path} cannot be read as JSON ({reason})"
    if not isinstance(metrics, dict):
        return None, f"QC metrics {path} holds a JSON {type(metrics).__name__}, not an object"
    return metrics, None


def _targets(predictions: Path) -> list[str]:
    try:
        return [str(t) for t in pd.read_csv(predictions, sep="\t")["target"].unique()]
    except (OSError, ValueError, KeyError, pd.errors.ParserError):
        return []


def _attention_skipped(predictions: Path) -> bool:
    """Whether the predictions' sidecar says the participant level ran with --no-attention."""
    parameters = (_json(sidecar_path(predictions)) or {}).get("Parameters")
    return isinstance(parameters, dict) and parameters.get("Attention") is False


def participant_files(output_dir: Path, t1w: T1wInput) -> ParticipantFiles:
    """Find one T1w's group-level inputs under ``output_dir`` (through the naming module)."""
    entities = t1w.output_entities()
    gm = derivative_path(output_dir, **entities, **OUTPUTS["gm_smoothed"])
    qc = derivative_path(output_dir, **entities, **OUTPUTS["qc"])
    predictions = derivative_path(output_dir, **entities, **PREDICTIONS)
    complete = predictions.is_file() and sidecar_path(predictions).is_file()
    attention = {}
    targets = _targets(predictions) if complete else []
    if complete:
        for target in targets:
            for grid in (DFRN_GRID, CLASSIFIER_GRID):
                path = derivative_path(output_dir, **entities,
                                       **attention_entities(target, grid.res))
                if path.is_file():
                    attention[target] = path
                    break
    marker = in_progress_path(output_dir, t1w.subject)
    in_progress = (_json(marker) or {"Started": "?"}) if marker.is_file() else None
    metrics, problem = _qc_metrics(qc)
    return ParticipantFiles(t1w=t1w, gm=gm if gm.is_file() else None, qc=metrics,
                            predictions=predictions if complete else None,
                            attention=attention, in_progress=in_progress, qc_problem=problem,
                            targets=tuple(targets),
                            attention_skipped=complete and _attention_skipped(predictions))


def gather(output_dir: Path, chosen: Sequence[T1wInput]) -> list[ParticipantFiles]:
    """:func:`participant_files` of every chosen T1w; logs those lacking outputs."""
    files = [participant_files(output_dir, t1w) for t1w in chosen]
    lacking = [item.name for item in files if item.gm is None]
    if lacking:
        LOGGER.warning("%d of %d participant(s) have no GM map in %s (participant level failed "
                       "or not run) and are left out of the voxelwise statistics: %s%s",
                       len(lacking), len(files), output_dir, ", ".join(lacking[:10]),
                       ", ..." if len(lacking) > 10 else "")
    return files


def incomplete_participants(files: Sequence[ParticipantFiles]) -> list[str]:
    """Why the participant level looks unfinished, one reason per participant: it is being
    processed (or was killed while it was), or it has a GM map but no complete predictions
    while others have theirs (a run with --preproc-only has none, and is complete)."""
    any_predictions = any(item.predictions is not None for item in files)
    reasons = []
    for item in files:
        if item.in_progress is not None:
            marker = item.in_progress
            reasons.append(f"{item.name} is being processed (or its run was killed): started "
                           f"{marker.get('Started', '?')} by pid {marker.get('Pid', '?')} on "
                           f"{marker.get('Host', '?')}")
        elif any_predictions and item.gm is not None and item.predictions is None:
            reasons.append(f"{item.name} has a GM map but no complete predictions")
    return reasons


def missing_outputs(files: Sequence[ParticipantFiles], output_dir: Path) -> pd.DataFrame:
    """One row per participant lacking an output: ``participant``, ``missing``, ``crash``
    (its crash file under ``output_dir/logs``, if the participant level wrote one)."""
    rows = []
    logs = output_dir / "logs"
    for item in files:
        missing = [what for what, present in (("GM map", item.gm), ("QC metrics", item.qc),
                                              ("predictions", item.predictions))
                   if present is None]
        if not missing:
            continue
        crash = logs / crash_name(item.t1w.output_entities())
        rows.append({"participant": item.name, "missing": ", ".join(missing),
                     "crash": crash.relative_to(output_dir).as_posix() if crash.is_file()
                     else ""})
    return pd.DataFrame(rows, columns=["participant", "missing", "crash"])


@dataclass(frozen=True)
class LabelOptions:
    """How participants.tsv codes the diagnosis (defaults: those of bids_mdd-train)."""

    column: str | None = None
    positive: Sequence[str] | None = None
    negative: Sequence[str] | None = None


def diagnosis(participants: pd.DataFrame, subjects: Sequence[str], options: LabelOptions,
              source: Path) -> tuple[pd.Series, str]:
    """1 = MDD, 0 = HC for each of ``subjects`` (labels without 'sub-'), and the column used.

    Raises
    ------
    BidsMddError
        ExitCode.BAD_DATA listing the values found when a subject is absent from
        participants.tsv, or its value is missing or neither an MDD nor an HC code, or when
        one of the two groups is empty; ExitCode.USAGE for an unknown ``options.column``.
    """
    column = label_column(participants, options.column, source)
    positive = [v.lower() for v in (options.positive or POSITIVE_CODES)]
    negative = [v.lower() for v in (options.negative or NEGATIVE_CODES)]
    absent = [s for s in subjects if s not in participants.index]
    if absent:
        raise BidsMddError(f"{source}: no row for {', '.join('sub-' + s for s in absent[:10])}; "
                           "add them or leave them out with --participant-label",
                           ExitCode.BAD_DATA)
    values = participants.loc[list(subjects), column]
    try:  # training's coding (case-insensitive, "1.0" read as "1"); here unknowns are errors
        coded = binary_labels(values, positive, negative, source)
    except BidsMddError:  # no value is a known code
        coded = pd.Series(np.nan, index=values.index)
    found = ", ".join(f"{v!r} ({n})" for v, n in
                      values.astype(object).fillna("n/a").astype(str).value_counts().items())
    unknown = coded.isna()
    if unknown.any():
        names = ", ".join("sub-" + s for s in coded.index[unknown][:10])
        raise BidsMddError(
            f"{source}: column {column!r} does not say MDD or HC for {names} (values found: "
            f"{found}); MDD codes: {', '.join(positive)}; HC codes: {', '.join(negative)}; "
            "name the codes with --positive/--negative or leave those participants out with "
            "--participant-label", ExitCode.BAD_DATA)
    counts = coded.value_counts()
    if counts.get(1.0, 0) == 0 or counts.get(0.0, 0) == 0:
        raise BidsMddError(f"{source}: MDD vs HC needs both groups; column {column!r} has "
                           f"{int(counts.get(1.0, 0))} MDD and {int(counts.get(0.0, 0))} HC "
                           f"among the participants with GM maps (values found: {found})",
                           ExitCode.BAD_DATA)
    return coded.astype(int), column


def covariate_table(participants: pd.DataFrame, files: Sequence[ParticipantFiles],
                    requested: Sequence[str] | None, source: Path
                    ) -> tuple[pd.DataFrame, list[str]]:
    """The covariates of ``files``' participants (rows in their order), and notes.

    ``requested`` None: automatic — age, sex (or gender) and TIV, each only when present for
    every participant (a note says which were dropped and why). Otherwise the named columns
    (case-insensitive; ``TIV`` comes from the QC metrics' ``tiv_ml``), which must exist: a
    missing value is then an error of :func:`bids_mdd.group.glm.design_matrix`. Either way a
    column of numbers with decimal commas is an exit-65 error naming its first line.
    """
    subjects = [item.t1w.subject for item in files]
    tiv = pd.Series([(item.qc or {}).get("tiv_ml", np.nan) for item in files],
                    index=subjects, dtype=float)
    notes: list[str] = []
    columns: dict[str, pd.Series] = {}
    if requested is None:
        found = [next(filter(None, (find_column(participants, n) for n in names)), None)
                 for names in (AGE_COLUMNS, SEX_COLUMNS)]
        wanted = [column for column in found if column] + [TIV]
    else:
        wanted = list(requested)
    for name in wanted:
        if name.upper() == TIV:
            values = tiv
            name = TIV
        else:
            column = find_column(participants, name)
            if column is None:
                raise BidsMddError(f"{source}: no covariate column {name!r} (columns: "
                                   f"{', '.join(map(str, participants.columns))}); name others "
                                   "with --covariates", ExitCode.USAGE)
            commas = decimal_comma_error(participants[column], source, str(column))
            if commas is not None:  # as text, the GLM would make each value a category
                raise commas
            values = participants.loc[subjects, column]
            name = column
        if requested is None and values.isna().any():
            notes.append(f"covariate {name} left out: missing for "
                         f"{int(values.isna().sum())} participant(s)")
            continue
        if requested is None and values.astype(str).nunique() < 2:
            notes.append(f"covariate {name} left out: the same for every participant")
            continue
        columns[name] = values.to_numpy()
    return pd.DataFrame(columns, index=subjects), notes


def load_participants(bids_dir: Path) -> tuple[pd.DataFrame, Path]:
    """participants.tsv of ``bids_dir`` indexed by label without 'sub-', and its path."""
    path = Path(bids_dir) / "participants.tsv"
    return read_participants(path), path
