"""A bundle's ComBat fit: the site harmonisation its networks were trained behind.

A bundle trained on harmonised inputs (``bids_mdd-train --harmonize``) keeps the ComBat fit of
all its training participants, with the site column it was fitted over. The participant level
reads a new scan's site from that column of the input dataset's participants.tsv: a site the
fit knows is harmonised as the training inputs were (the site's affine map per network-input
voxel, applied inside the forward pass so attention maps see it); any other scan goes in
unharmonised and is flagged, since its site effect is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from bids_mdd.harmonize import CombatFit

HARMONIZATION_FILE = "harmonization.safetensors"
METHOD = ("ComBat (neuroCombat) of the network inputs over the site column alone, fitted on "
          "every training participant; a known site's location and scale are removed from a "
          "new scan, an unknown site's scan is left as it is")


class SiteStatus(StrEnum):
    """What happened to one scan's site effect."""

    HARMONIZED = "harmonized"
    UNKNOWN_SITE = "unknown site"  # a site the fit has not seen
    NO_SITE = "no site"  # participants.tsv gives none


@dataclass(frozen=True)
class SiteAdjustment:
    """One scan's site and what the bundle's ComBat fit does with it: ``scale`` and
    ``shift`` (network-input shaped) when it is harmonised, None otherwise."""

    site: str | None
    status: SiteStatus
    scale: np.ndarray | None = None
    shift: np.ndarray | None = None


@dataclass(frozen=True)
class BundleHarmonization:
    """The ComBat fit a bundle's inputs go through, and the participants.tsv column of sites."""

    fit: CombatFit
    site_column: str

    def adjustment(self, site: str | None, shape: tuple[int, ...]) -> SiteAdjustment:
        """What ComBat does to a scan of ``site`` (None: unknown) on a network grid ``shape``."""
        if site is None:
            return SiteAdjustment(None, SiteStatus.NO_SITE)
        if not self.fit.knows(site):
            return SiteAdjustment(site, SiteStatus.UNKNOWN_SITE)
        scale, shift = self.fit.site_affine(site)
        return SiteAdjustment(site, SiteStatus.HARMONIZED, scale.reshape(shape).astype(np.float32),
                              shift.reshape(shape).astype(np.float32))

    def to_json(self) -> dict[str, Any]:
        """What model.json keeps beside the fit's file (its sha256 is added by the writer)."""
        return {"method": METHOD, "file": HARMONIZATION_FILE, "site_column": self.site_column,
                "sites": list(self.fit.sites), "covariates_kept": list(self.fit.covariates),
                "n_features": self.fit.n_features}

    def save(self, path: Path) -> None:
        self.fit.save(path)

    @classmethod
    def load(cls, path: Path, meta: dict[str, Any]) -> BundleHarmonization:
        return cls(CombatFit.load(path), str(meta["site_column"]))
