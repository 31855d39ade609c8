"""Training data: derivative images found through the naming module, labels from
participants.tsv, volumes loaded once into memory."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from bids_mdd.bids.names import parse_path
from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.models.inputs import InputSpec, prepare, read_on_grid

LOGGER = logging.getLogger(__name__)

#: Diagnosis codings recognised by default (case-insensitive): negative class, positive class.
NEGATIVE_CODES = ("hc", "control", "controls", "healthy", "ctl", "ctrl", "nc", "0")
POSITIVE_CODES = ("mdd", "depr", "depressed", "depression", "patient", "patients", "case", "1")
LABEL_COLUMNS = ("group", "diagnosis", "dx", "condition", "label")
SITE_COLUMN = "site"


@dataclass(frozen=True)
class Sample:
    """One model input: a participant's (session's) derivative image."""

    participant: str  # without 'sub-'
    session: str | None
    path: Path


def find_samples(derivatives_dir: str | Path, spec: InputSpec) -> list[Sample]:
    """Every file under ``derivatives_dir`` whose entities are exactly ``spec.entities``."""
    root = Path(derivatives_dir)
    if not root.is_dir():
        raise BidsMddError(f"{root}: derivatives folder not found; give the participant "
                           "level's OUTPUT_DIR", ExitCode.MISSING_INPUT)
    samples = []
    for path in sorted(root.glob("sub-*/**/anat/sub-*.nii.gz")):
        entities = parse_path(path.relative_to(root))
        wanted = all(str(entities.get(k)) == v for k, v in spec.entities.items())
        extra = set(entities) - set(spec.entities) - {"subject", "session", "datatype",
                                                      "extension"}
        if wanted and not extra:
            samples.append(Sample(str(entities["subject"]), entities.get("session"), path))
    if not samples:
        name = "_".join(f"{k}-{v}" for k, v in spec.entities.items() if k != "suffix")
        raise BidsMddError(f"{root}: no *_{name}_{spec.entities['suffix']}.nii.gz derivatives; "
                           "run `bids_mdd BIDS_DIR OUTPUT_DIR participant --preproc-only` first",
                           ExitCode.NO_FILES)
    return samples


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


def load_volumes(samples: list[Sample], spec: InputSpec,
                 progress: bool = True) -> tuple[np.ndarray, list[str]]:
    """All inputs as one float32 array (n, *spec.shape), and the sha256 of each image's voxel
    data on its full grid (file bytes would differ with gzip timestamps)."""
    volumes = np.empty((len(samples), *spec.shape), dtype=np.float32)
    hashes = []
    for i, sample in enumerate(tqdm(samples, desc="loading inputs", unit="image",
                                    disable=not progress)):
        data = read_on_grid(sample.path, spec)
        hashes.append(hashlib.sha256(data.tobytes()).hexdigest())
        volumes[i] = prepare(data, spec)
    return volumes, hashes


def fingerprint(samples: list[Sample], image_hashes: list[str]) -> dict[str, list[str]]:
    """sha256 of each participant label and each image (the leakage guard's evidence; labels
    are hashed so a bundle carries no identifiers)."""
    ids = sorted({hashlib.sha256(s.participant.encode()).hexdigest() for s in samples})
    return {"participants_sha256": ids, "images_sha256": sorted(set(image_hashes))}
