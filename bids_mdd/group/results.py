"""What the group level found, as the report reads it: typed records, so that the runner and
the report agree on names the type checker sees rather than on dictionary keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bids_mdd.group.harmonization import HarmonizationSummary


@dataclass(frozen=True)
class GlmSummary:
    """The voxelwise GLM that was fitted: its design, sample and thresholds."""

    design: list[str]  # column names: intercept, group, covariates
    contrast: list[float]
    n_participants: int
    n_mdd: int
    n_hc: int
    degrees_of_freedom: int
    gm_threshold: float
    mask_voxels: int
    fdr_q: float
    fdr_threshold_t: float | None  # None: no voxel survived
    label_column: str
    caption: str  # what the t-map figures show, at which threshold
    harmonization: HarmonizationSummary | None = None  # ComBat before the GLM (--harmonize)

    @property
    def covariates(self) -> list[str]:
        return self.design[2:]

    def parameters(self) -> dict[str, Any]:
        """The sidecars' ``Parameters`` of the GLM's outputs (BIDS-style keys)."""
        return {"Design": self.design, "Contrast": self.contrast,
                "Participants": self.n_participants, "MDD": self.n_mdd, "HC": self.n_hc,
                "DegreesOfFreedom": self.degrees_of_freedom, "GMThreshold": self.gm_threshold,
                "MaskVoxels": self.mask_voxels, "FDRq": self.fdr_q,
                "FDRThresholdT": self.fdr_threshold_t, "LabelColumn": self.label_column,
                **(self.harmonization.parameters() if self.harmonization else {})}


@dataclass(frozen=True)
class PermutationSummary:
    """Permutation inference on the GLM (``--permutations``)."""

    method: str  # "TFCE" or "ClusterMass"
    permutations: int
    n_fwe_significant: int


@dataclass(frozen=True)
class AttentionSummary:
    """One target's mean attention map: how many participants, where it concentrates, its
    figure."""

    n_participants: int
    regions: pd.DataFrame
    figure: Path


@dataclass
class GroupResults:
    """What the report shows: figure paths, the tables as written, notes."""

    n_selected: int
    missing: pd.DataFrame
    qc: pd.DataFrame
    qc_failed: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=["participant", "qc_failures"]))
    qc_failures_included: bool = False
    notes: list[str] = field(default_factory=list)
    glm: GlmSummary | None = None
    clusters: pd.DataFrame | None = None
    permutation: PermutationSummary | None = None
    permutation_clusters: pd.DataFrame | None = None
    figures: dict[str, Path] = field(default_factory=dict)
    attention: dict[str, AttentionSummary] = field(default_factory=dict)
    #: target -> why some participants' maps are not in its mean (--no-attention, missing)
    attention_missing: dict[str, str] = field(default_factory=dict)
    metrics: pd.DataFrame | None = None
    synthetic_models: bool = False
    #: each model's predictions-sidecar entry (name, card, ...), as the participants' record it
    models: list[dict[str, Any]] = field(default_factory=list)
    report: Path | None = None
    #: every file this run wrote (sidecars included): the group outputs it owns
    written: set[Path] = field(default_factory=set)
