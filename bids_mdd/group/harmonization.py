"""Site harmonisation of the GM maps before the group GLM (``--harmonize COLUMN``).

ComBat (:mod:`bids_mdd.harmonize`) is fitted on every participant of the analysis, on the voxels
of the group GM mask (mean GM at least ``--gm-threshold`` inside the search region), keeping
the effects the GLM tests and adjusts for (diagnosis and its covariates): the group level
estimates group differences in this sample and predicts no one, so fitting on everyone is what
the GLM does too. The harmonised maps stay in memory and replace the files for the GLM and the
permutations.

Empirical Bayes is off by default here: it pools a site's effects across voxels, which suits
a few hundred regional measures but shrinks a site effect confined to some voxels (a coil's
sensitivity, a distortion) towards the site's whole-brain one, leaving part of it in place
(``docs/benchmarks.md`` has the measurement). With hundreds of thousands of voxels and several
participants per site, each voxel's own estimates are what removes such an effect.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.group.glm import fortran_index, is_numeric_covariate, read_map
from bids_mdd.harmonize import HarmonizationError, check_combat_design, fit_combat
from bids_mdd.harmonize import site_variance_explained as eta_squared
from bids_mdd.spaces.grids import Grid

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class HarmonizationSummary:
    """What ComBat did: over which column and sites, keeping what, and the share of GM-voxel
    variance between site means before and after (against what no site effect would leave)."""

    column: str
    sites: dict[str, int]            # participants per site
    preserved: list[str]
    empirical_bayes: bool
    site_variance_before: float      # mean eta squared over the group GM mask
    site_variance_after: float

    @property
    def site_variance_chance(self) -> float:
        """The mean eta squared of sites without any site effect: (sites - 1) / (n - 1)."""
        return (len(self.sites) - 1) / (sum(self.sites.values()) - 1)

    @property
    def method(self) -> str:
        pooling = ("empirical Bayes, parametric" if self.empirical_bayes
                   else "without empirical Bayes: each voxel's own site estimates")
        return f"ComBat (neuroCombat {version('neuroCombat')}, {pooling})"

    def parameters(self) -> dict[str, Any]:
        return {"Harmonization": self.method,
                "HarmonizationColumn": self.column, "HarmonizationSites": self.sites,
                "HarmonizationPreserved": self.preserved,
                "SiteVarianceExplainedBefore": round(self.site_variance_before, 4),
                "SiteVarianceExplainedAfter": round(self.site_variance_after, 4)}


@dataclass(frozen=True)
class HarmonizedMap:
    """One participant's harmonised GM map, read as a GLM input is (see ``glm.read_input``)."""

    maps: HarmonizedMaps
    row: int

    def values(self, flat_index: np.ndarray) -> np.ndarray:
        return self.maps.values(self.row, flat_index)

    def __str__(self) -> str:
        return f"{self.maps.sources[self.row]} (ComBat-harmonised)"


@dataclass(frozen=True)
class HarmonizedMaps(Sequence[HarmonizedMap]):
    """The harmonised maps' voxels, in memory (participants x voxels of the GM mask)."""

    data: np.ndarray
    region_index: np.ndarray   # F-order flat indices of those voxels, ascending
    sources: list[Path]

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, item):  # type: ignore[override]
        if isinstance(item, slice):
            return [HarmonizedMap(self, row) for row in range(len(self))[item]]
        return HarmonizedMap(self, range(len(self))[item])

    def values(self, row: int, flat_index: np.ndarray) -> np.ndarray:
        position = np.searchsorted(self.region_index, flat_index)
        if (position >= self.region_index.size).any() or (
                self.region_index[np.minimum(position, self.region_index.size - 1)]
                != flat_index).any():
            raise ValueError("voxels outside the harmonised ones were asked for")
        return self.data[row, position]


def site_labels(participants: pd.DataFrame, subjects: Sequence[str], column: str,
                source: Path) -> list[str]:
    """The site of each subject, from participants.tsv; every one must have one."""
    values = participants.loc[list(subjects), column]
    missing = values.isna()
    if missing.any():
        shown = ", ".join(f"sub-{s}" for s in values.index[missing][:5])
        raise BidsMddError(f"{source}: column {column!r} (--harmonize) is n/a for {shown}: "
                           "ComBat needs every participant's site; fill it in or leave those "
                           "participants out", ExitCode.BAD_DATA)
    return [str(value) for value in values]


def preserved_columns(table: pd.DataFrame, group_column: str, covariates: Sequence[str],
                      ) -> tuple[list[str], list[str]]:
    """(categorical, continuous) columns ComBat keeps: the diagnosis and the GLM's covariates,
    each as the GLM's design codes it."""
    categorical = [group_column]
    continuous = []
    for name in covariates:
        (continuous if is_numeric_covariate(table[name]) else categorical).append(name)
    return categorical, continuous


def check_design(table: pd.DataFrame, sites: Sequence[str], group_column: str,
                 covariates: Sequence[str], column: str, source: Path) -> None:
    """Fail before any write when ComBat cannot be fitted on this sample."""
    categorical, continuous = preserved_columns(table, group_column, covariates)
    try:
        check_combat_design(table, sites, categorical, continuous)
    except HarmonizationError as error:
        raise BidsMddError(f"{source}: --harmonize {column}: {error}",
                           ExitCode.BAD_DATA) from None


def harmonize_maps(paths: Sequence[Path], sites: Sequence[str], table: pd.DataFrame,
                   group_column: str, covariates: Sequence[str], column: str,
                   region: np.ndarray, grid: Grid, gm_threshold: float,
                   empirical_bayes: bool = False,
                   ) -> tuple[HarmonizedMaps, np.ndarray, HarmonizationSummary]:
    """Fit ComBat on the voxels of ``region`` whose mean GM is at least ``gm_threshold``;
    return the harmonised maps, those voxels (a 3D mask, the GLM's search region from then
    on) and the summary."""
    index = np.sort(fortran_index(region))
    data = np.empty((len(paths), index.size), dtype=np.float32)
    for row, path in enumerate(paths):
        data[row] = read_map(Path(path), grid, index)
    gm = data.mean(axis=0) >= gm_threshold
    index, data = index[gm], np.ascontiguousarray(data[:, gm])
    categorical, continuous = preserved_columns(table, group_column, covariates)
    LOGGER.info("ComBat over %s: %d sites, %d GM voxels, keeping %s", column, len(set(sites)),
                index.size, ", ".join([*categorical, *continuous]))
    _, harmonised = fit_combat(data, sites, table.reset_index(drop=True),
                               categorical=categorical, continuous=continuous,
                               empirical_bayes=empirical_bayes)
    counts = pd.Series(list(sites)).value_counts().sort_index()
    summary = HarmonizationSummary(
        column=column, sites={str(k): int(v) for k, v in counts.items()},
        preserved=[*categorical, *continuous], empirical_bayes=empirical_bayes,
        site_variance_before=float(eta_squared(data, sites).mean()),
        site_variance_after=float(eta_squared(harmonised, sites).mean()))
    LOGGER.info("site variance of GM voxels: %.3f before, %.3f after ComBat (%.3f by chance)",
                summary.site_variance_before, summary.site_variance_after,
                summary.site_variance_chance)
    mask = np.zeros(grid.shape, dtype=bool)
    mask[np.unravel_index(index, grid.shape, order="F")] = True
    maps = HarmonizedMaps(harmonised.astype(np.float32), index, list(map(Path, paths)))
    return maps, mask, summary
