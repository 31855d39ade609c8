"""The options of the group level, as the group package receives them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bids_mdd.group.inputs import LabelOptions


@dataclass(frozen=True)
class GroupOptions:
    """The group level's parameters (command-line options)."""

    labels: LabelOptions = field(default_factory=LabelOptions)
    covariates: Sequence[str] | None = None  # None: automatic (age, sex, TIV when present)
    harmonize: str | None = None  # participants.tsv column of the site: ComBat before the GLM
    harmonize_empirical_bayes: bool = False  # ComBat's pooling of site effects across voxels
    fdr_q: float = 0.05
    permutations: int = 0
    tfce: bool = True
    gm_threshold: float = 0.2
    min_cluster_voxels: int = 10
    chunk_size: int = 50
    n_bootstrap: int = 2000
    seed: int = 0
    n_jobs: int = 1
    allow_partial: bool = False  # run although the participant level looks unfinished
    include_qc_failures: bool = False  # keep participants that failed the QC gate
