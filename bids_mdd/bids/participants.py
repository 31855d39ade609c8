"""participants.tsv: reading it, finding its columns, and coding the diagnosis (group and
training read it the same way)."""

from __future__ import annotations

import csv
import io
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
#: Cells that mean "no value" (BIDS writes n/a).
MISSING = ("n/a", "", "NaN", "nan", "NA")
#: A number with a decimal comma: 32,1 or -0,5.
DECIMAL_COMMA = r"[+-]?\d+,\d+"


def read_participants(path: str | Path) -> pd.DataFrame:
    """participants.tsv indexed by participant label (without 'sub-'), all columns as read.

    Validated on read, each problem a one-line exit 65 naming the line and the column: rows
    with more or fewer fields than the header, a missing or repeated participant_id, and words
    in a numeric column (one whose non-missing values are mostly numbers, e.g. "fifty-nine" in
    age: pandas would read the whole column as text, and the covariate would silently drop).
    """
    path = Path(path)
    if not path.is_file():
        raise BidsMddError(f"{path}: participants.tsv not found; give it with --participants",
                           ExitCode.MISSING_INPUT)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BidsMddError(f"{path}: cannot be read as UTF-8 text ({exc}); save it as a UTF-8 "
                           "tab-separated file", ExitCode.BAD_DATA) from exc
    _check_shape(path, text)
    table = pd.read_csv(io.StringIO(text), sep="\t", dtype=str, keep_default_na=False,
                        quoting=csv.QUOTE_NONE)
    if "participant_id" not in table:
        raise BidsMddError(f"{path}: has no participant_id column (columns: "
                           f"{', '.join(table.columns)}); name the first column participant_id",
                           ExitCode.BAD_DATA)
    ids = table.pop("participant_id").str.strip()
    for row, label in enumerate(ids):
        if label in MISSING or label == "sub-":
            raise BidsMddError(f"{path} line {row + 2}: participant_id is empty; write sub-<label>"
                               " or remove the row", ExitCode.BAD_DATA)
    repeated = ids[ids.duplicated(keep=False)]
    if not repeated.empty:
        lines = ", ".join(str(i + 2) for i in repeated.index[:6])
        raise BidsMddError(f"{path} lines {lines}: participant_id {repeated.iloc[0]} appears "
                           f"{int((ids == repeated.iloc[0]).sum())} times; keep one row per "
                           "participant", ExitCode.BAD_DATA)
    table.index = ids.str.removeprefix("sub-")
    table.index.name = None
    table = table.replace(MISSING, np.nan)
    for column in table.columns:
        table[column] = _typed(table[column], path, str(column))
    return table


def _check_shape(path: Path, text: str) -> None:
    """Every column name is given once, and every row has as many tab-separated fields as the
    header (by hand: pandas renames a repeated name, pads a short row with NaN without a word,
    and its on_bad_lines sees only rows that are too long)."""
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise BidsMddError(f"{path}: empty; write a header line starting with participant_id",
                           ExitCode.BAD_DATA)
    header = lines[0].split("\t")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:  # pandas would rename the second to "group.1", and the first would be used
        where = "; ".join(
            f"{name!r} is fields "
            + ", ".join(str(i + 1) for i, other in enumerate(header) if other == name)
            for name in repeated)
        raise BidsMddError(f"{path} line 1: the header names a column more than once ({where}); "
                           "keep one column per name", ExitCode.BAD_DATA)
    width = len(header)
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = len(line.split("\t"))
        if fields != width:
            raise BidsMddError(f"{path} line {number}: {fields} tab-separated field(s), the "
                               f"header has {width}; fix the row (n/a for a missing value, tabs "
                               "between fields)", ExitCode.BAD_DATA)


def _typed(values: pd.Series, path: Path, column: str) -> pd.Series:
    """Numbers where the column is numeric; an error for words among mostly numbers."""
    present = values.dropna()
    numbers = pd.to_numeric(present, errors="coerce")
    if present.empty or numbers.isna().all():
        return values
    words = present[numbers.isna()]
    if words.empty:
        return pd.to_numeric(values)
    if len(words) < len(present) / 2 and column.lower() not in LABEL_COLUMNS:
        commas = decimal_comma_error(values, path, column)
        if commas is not None:
            raise commas
        row = int(np.flatnonzero(values.index == words.index[0])[0]) + 2
        raise BidsMddError(f"{path} line {row}: column {column!r} holds numbers, but "
                           f"{words.iloc[0]!r} is not one; write a number or n/a",
                           ExitCode.BAD_DATA)
    return values


def decimal_comma_error(values: pd.Series, path: str | Path, column: str
                        ) -> BidsMddError | None:
    """The exit-65 error for a column of numbers written with decimal commas ('32,1', as
    spreadsheets in many locales export them), naming its first such line; None when some
    value is neither a number nor such a number (a text column), or none has a comma.

    Read as text, such a column would enter the GLM as categories (one per value) and be
    dropped as rank-deficient: the covariate would silently vanish."""
    present = values.dropna().astype(str).str.strip()
    commas = present.str.fullmatch(DECIMAL_COMMA)
    numbers = pd.to_numeric(present, errors="coerce").notna()
    if present.empty or not commas.any() or not (commas | numbers).all():
        return None
    first = present[commas].iloc[0]
    row = int(np.flatnonzero(values.index == present.index[commas.to_numpy()][0])[0]) + 2
    return BidsMddError(f"{path} line {row}: column {column!r} holds numbers written with a "
                        f"decimal comma ({first!r}); use a decimal point "
                        f"({first.replace(',', '.')!r}) or n/a", ExitCode.BAD_DATA)


def find_column(table: pd.DataFrame, name: str) -> str | None:
    """The column of ``table`` called ``name``: exactly, else the one matching it
    case-insensitively (None when there is none, or several)."""
    if name in table.columns:
        return name
    matches = [c for c in table.columns if str(c).lower() == name.lower()]
    return matches[0] if len(matches) == 1 else None


def label_column(table: pd.DataFrame, column: str | None, source: str | Path) -> str:
    """The diagnosis column: ``column`` if given, else the first of LABEL_COLUMNS present."""
    # repr: a header with a stray space or tab ('group ') shows as such
    found = ", ".join(repr(str(c)) for c in table.columns)
    if column is not None:
        if column not in table:
            raise BidsMddError(f"{source}: no column {column!r} (columns: {found})",
                               ExitCode.USAGE)
        return column
    for candidate in LABEL_COLUMNS:
        if candidate in table:
            return candidate
    near = [c for c in map(str, table.columns) if c.strip().lower() in LABEL_COLUMNS]
    fix = (f"rename {near[0]!r} to {near[0].strip().lower()!r} in the header, or name the column"
           if near else "name it")
    raise BidsMddError(f"{source}: none of the columns {', '.join(LABEL_COLUMNS)} holds the "
                       f"diagnosis (columns: {found}); {fix} with --label-column",
                       ExitCode.USAGE)


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
