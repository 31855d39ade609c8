"""participants.tsv: reading it, finding its columns, and coding the diagnosis (group and
training read it the same way)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from bids_mdd.errors import BidsMddError, ExitCode

LOGGER = logging.getLogger(__name__)

#: Diagnosis codings recognised by default (case-insensitive): negative class, positive class.
NEGATIVE_CODES = ("hc", "control", "controls", "healthy", "ctl", "ctrl", "nc", "0")
POSITIVE_CODES = ("mdd", "depr", "depressed", "depression", "patient", "patients", "case", "1")
LABEL_COLUMNS = ("group", "diagnosis", "dx", "condition", "label")
SITE_COLUMN = "site"


def read_participants(path: str | Path) -> pd.DataFrame:
    """participants.tsv indexed by participant label (without 'sub-'), all columns as read."""
    path = Path(path)
    if not path.is_file():
        raise BidsMddError(f"{path}: participants.tsv not found; give it with --participants",
                           ExitCode.MISSING_INPUT)
    table = pd.read_csv(path, sep="\t", dtype={"participant_id": str}, na_values=["n/a"])
    if "participant_id" not in table:
        raise BidsMddError(f"{path}: has no participant_id column", ExitCode.BAD_DATA)
    table.index = table.pop("participant_id").str.removeprefix("sub-")
    return table


def find_column(table: pd.DataFrame, name: str) -> str | None:
    """The column of ``table`` called ``name``: exactly, else the one matching it
    case-insensitively (None when there is none, or several)."""
    if name in table.columns:
        return name
    matches = [c for c in table.columns if str(c).lower() == name.lower()]
    return matches[0] if len(matches) == 1 else None


def label_column(table: pd.DataFrame, column: str | None, source: str | Path) -> str:
    """The diagnosis column: ``column`` if given, else the first of LABEL_COLUMNS present."""
    if column is not None:
        if column not in table:
            raise BidsMddError(f"{source}: no column {column!r} (columns: "
                               f"{', '.join(table.columns)})", ExitCode.USAGE)
        return column
    for candidate in LABEL_COLUMNS:
        if candidate in table:
            return candidate
    raise BidsMddError(f"{source}: none of the columns {', '.join(LABEL_COLUMNS)} holds the "
                       "diagnosis; name it with --label-column", ExitCode.USAGE)


def binary_labels(values: pd.Series, positive: list[str] | None, negative: list[str] | None,
                  source: str | Path) -> pd.Series:
    """0 (negative), 1 (positive) or NaN (neither) for each value, case-insensitively."""
    pos = [p.lower() for p in (positive or POSITIVE_CODES)]
    neg = [n.lower() for n in (negative or NEGATIVE_CODES)]
    # missing values as "nan" (astype(str) keeps them NaN in a column of pandas' str dtype)
    text = values.astype(object).fillna("nan").astype(str).str.strip().str.lower()
    text = text.str.replace(r"\.0$", "", regex=True)  # 1.0 read from a numeric column
    labels = pd.Series(np.where(text.isin(pos), 1.0, np.where(text.isin(neg), 0.0, np.nan)),
                       index=values.index)
    if labels.isna().all():
        raise BidsMddError(f"{source}: no value of column {values.name!r} is a known positive "
                           f"or negative code (found {sorted(set(text))[:6]}); name them with "
                           "--positive/--negative", ExitCode.USAGE)
    unknown = sorted(set(text[labels.isna()]) - {"nan"})
    if unknown:
        LOGGER.warning("%s: %s values %s are neither positive nor negative; those participants "
                       "are left out", source, values.name, unknown)
    return labels
