"""Whether an input was among a bundle's training participants.

A prediction for a participant the bundle was trained on is in-sample: it shows how well the
fold models remember that person, not how well they predict, and the card's cross-validated
evidence does not cover it. A bundle records sha256 hashes of its training participants' labels
and full-grid input images (``data_fingerprint``, written by ``bids_mdd-train``).

An image hash matches only the very derivative that was trained on: ANTs is not bit-reproducible
across runs, so the same scan preprocessed anew has another hash. The label hash therefore
counts too, but only inside the bundle's own cohort, recognised by the dataset's DOI: labels such
as ``01`` recur in every dataset, and a label alone would call strangers training participants.
The DOI is compared without its version suffix (OpenNeuro's ``.v1.0.5``): a dataset keeps its
participants' labels across versions.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

_DOI_PREFIX = re.compile(r"^(?:https?://(?:dx\.)?doi\.org/|doi:)", re.IGNORECASE)
_VERSION_SUFFIX = re.compile(r"\.v\d+(?:\.\d+)*$", re.IGNORECASE)


def dataset_key(doi: str | None) -> str | None:
    """A DOI as compared here: no resolver prefix, no version suffix, lower case (None: none)."""
    if not doi or not str(doi).strip():
        return None
    return _VERSION_SUFFIX.sub("", _DOI_PREFIX.sub("", str(doi).strip())).lower()


def image_sha256(data: np.ndarray) -> str:
    """The hash a bundle's fingerprint keeps of an input: of its voxel data on the full grid,
    as :func:`bids_mdd.models.inputs.read_on_grid` reads it (file bytes would differ with gzip
    timestamps)."""
    return hashlib.sha256(data.tobytes()).hexdigest()


def label_sha256(participant: str) -> str:
    """The hash a bundle's fingerprint keeps of a participant label (without ``sub-``)."""
    return hashlib.sha256(participant.removeprefix("sub-").encode()).hexdigest()


@dataclass(frozen=True)
class TrainingSet:
    """What a bundle records of its training participants."""

    participants_sha256: frozenset[str]
    images_sha256: frozenset[str]
    cohort_doi: str | None  # the training dataset's DOI (the card's cohort), None: unknown

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> TrainingSet | None:
        """From a ``model.json``; None when it records no fingerprint."""
        recorded = meta.get("data_fingerprint")
        if not isinstance(recorded, dict) or not recorded:
            return None
        cohort = (meta.get("card") or {}).get("cohort") or {}
        return cls(frozenset(recorded.get("participants_sha256", [])),
                   frozenset(recorded.get("images_sha256", [])), cohort.get("doi"))

    def contains(self, participant: str, image_sha256: str, dataset_doi: str | None) -> bool:
        """Whether this image, or this participant of the training dataset, was trained on."""
        if image_sha256 in self.images_sha256:
            return True
        own = dataset_key(self.cohort_doi)
        return (own is not None and dataset_key(dataset_doi) == own
                and label_sha256(participant) in self.participants_sha256)
