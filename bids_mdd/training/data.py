"""Training data: derivative images found through the naming module, or a folder of prepared
inputs (:mod:`bids_mdd.training.prepare` writes one), loaded once into memory (participants.tsv
is read by :mod:`bids_mdd.bids.participants`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm import tqdm

from bids_mdd.bids.names import parse_path
from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.models.inputs import DEFAULT_INPUTS, InputSpec, prepare, read_on_grid
from bids_mdd.models.training_set import image_sha256, label_sha256
from bids_mdd.spaces.grids import AFFINE_TOLERANCE

LOGGER = logging.getLogger(__name__)

#: A prepared-inputs folder: its index of variants (each ``InputSpec.to_json()`` + affine) ...
PREPARED_INDEX = "inputs.json"
#: ... and its table of images, one row per participant (session) and variant.
PREPARED_IMAGES = "images.tsv"
PREPARED_COLUMNS = ("participant_id", "session_id", "variant", "source", "source_sha256",
                    "prepared_sha256", "max_rel_error")


@dataclass(frozen=True)
class Sample:
    """One model input: a participant's (session's) derivative image, or its prepared image
    (then ``source_sha256`` is the hash of the derivative it was made from)."""

    participant: str  # without 'sub-'
    session: str | None
    path: Path
    source_sha256: str | None = None


def is_prepared(folder: str | Path) -> bool:
    """Whether ``folder`` holds prepared inputs rather than participant-level derivatives."""
    return (Path(folder) / PREPARED_INDEX).is_file()


def variant_name(spec: InputSpec) -> str:
    """A prepared image's variant: 'gm-zscore', 't1w-none', ... (one zoom per folder)."""
    for kind, default in DEFAULT_INPUTS.items():
        if default.entities == spec.entities:
            return f"{kind}-{spec.normalization}"
    raise ValueError(f"no prepared variant for the input {spec.entities}")


def prepared_name(participant: str, session: str | None, variant: str) -> str:
    """The path of a prepared image inside its folder."""
    stem = f"sub-{participant}" + (f"_ses-{session}" if session else "")
    folder = f"sub-{participant}" + (f"/ses-{session}" if session else "")
    return f"{folder}/{stem}_{variant}.nii.gz"


def find_samples(derivatives_dir: str | Path, spec: InputSpec) -> list[Sample]:
    """Every file under ``derivatives_dir`` whose entities are exactly ``spec.entities``, or,
    in a folder of prepared inputs, every image of the spec's variant."""
    root = Path(derivatives_dir)
    if not root.is_dir():
        raise BidsMddError(f"{root}: derivatives folder not found; give the participant "
                           "level's OUTPUT_DIR", ExitCode.MISSING_INPUT)
    if is_prepared(root):
        return _find_prepared(root, spec)
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


def _find_prepared(root: Path, spec: InputSpec) -> list[Sample]:
    """The prepared images of ``spec``'s variant, each with its source's full-grid hash."""
    index = root / PREPARED_INDEX
    try:
        variants = json.loads(index.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BidsMddError(f"{index}: unreadable ({exc}); write the folder again with "
                           "`bids_mdd-train prepare`", ExitCode.BAD_DATA) from exc
    variant = variant_name(spec)
    stored = variants.get(variant)
    if stored is None or InputSpec.from_json(stored) != spec:
        held = ", ".join(f"{name} (zoom {entry.get('zoom')})" for name, entry in variants.items())
        raise BidsMddError(f"{index}: no {variant} inputs at zoom {spec.zoom} (it holds {held}); "
                           "give the matching --zoom/--normalization or run `bids_mdd-train "
                           "prepare` with them", ExitCode.NO_FILES)
    try:
        table = pd.read_csv(root / PREPARED_IMAGES, sep="\t", dtype=str, keep_default_na=False)
        table[["participant_id", "variant", "source_sha256"]]
    except (OSError, KeyError, pd.errors.ParserError) as exc:
        raise BidsMddError(f"{root / PREPARED_IMAGES}: missing or without the participant_id, "
                           f"variant and source_sha256 columns ({exc}); write the folder again "
                           "with `bids_mdd-train prepare`", ExitCode.BAD_DATA) from exc
    if "session_id" not in table:
        table["session_id"] = ""
    samples = []
    for row in table[table["variant"] == variant].itertuples():
        participant = row.participant_id.removeprefix("sub-")
        session = row.session_id.removeprefix("ses-") or None
        samples.append(Sample(participant, session,
                              root / prepared_name(participant, session, variant),
                              row.source_sha256))
    if not samples:
        raise BidsMddError(f"{root / PREPARED_IMAGES}: no {variant} images listed",
                           ExitCode.NO_FILES)
    return samples


def read_prepared(path: Path, spec: InputSpec) -> np.ndarray:
    """A prepared image as the network takes it. Raises BidsMddError (65) unless it lies on
    the spec's zoomed grid: prepared for another zoom or grid, it would be read wrongly."""
    try:
        image = nib.load(str(path))
    except (OSError, nib.filebasedimages.ImageFileError) as exc:
        raise BidsMddError(f"{path}: cannot read the prepared input ({exc}); write the folder "
                           "again with `bids_mdd-train prepare`", ExitCode.BAD_DATA) from exc
    if (tuple(image.shape) != spec.shape
            or not np.allclose(image.affine, spec.affine, atol=AFFINE_TOLERANCE)):
        raise BidsMddError(f"{path}: shape {tuple(image.shape)} and affine do not match the "
                           f"input's zoomed grid {spec.shape} (zoom {spec.zoom}); write the "
                           "folder again with `bids_mdd-train prepare`", ExitCode.BAD_DATA)
    data = np.asarray(image.dataobj, dtype=np.float32)
    if not np.isfinite(data).all():
        raise BidsMddError(f"{path}: contains NaN or infinite values", ExitCode.BAD_DATA)
    return data


def load_volumes(samples: list[Sample], spec: InputSpec,
                 progress: bool = True) -> tuple[np.ndarray, list[str]]:
    """All inputs as one float32 array (n, *spec.shape), and the sha256 of each image's voxel
    data on its full grid (file bytes would differ with gzip timestamps). A prepared image is
    taken as it is (already normalised and zoomed), with its source's hash: a participant's
    fingerprint is the same either way, so the leakage guard sees through the preparation."""
    volumes = np.empty((len(samples), *spec.shape), dtype=np.float32)
    hashes = []
    for i, sample in enumerate(tqdm(samples, desc="loading inputs", unit="image",
                                    disable=not progress)):
        if sample.source_sha256 is not None:
            volumes[i] = read_prepared(sample.path, spec)
            hashes.append(sample.source_sha256)
            continue
        data = read_on_grid(sample.path, spec)
        hashes.append(image_sha256(data))
        volumes[i] = prepare(data, spec)
    return volumes, hashes


def fingerprint(samples: list[Sample], image_hashes: list[str]) -> dict[str, list[str]]:
    """sha256 of each participant label and each image (the leakage guard's evidence; labels
    are hashed so a bundle carries no identifiers)."""
    ids = sorted({label_sha256(s.participant) for s in samples})
    return {"participants_sha256": ids, "images_sha256": sorted(set(image_hashes))}
