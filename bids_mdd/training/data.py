"""Training data: derivative images found through the naming module, volumes loaded once into
memory (participants.tsv is read by :mod:`bids_mdd.bids.participants`)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bids_mdd.bids.names import parse_path
from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.models.inputs import InputSpec, prepare, read_on_grid

LOGGER = logging.getLogger(__name__)



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
