"""The options of ``bids_mdd-train``, as the training package receives them."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from bids_mdd.models.task import Task

#: Paper B's symptom factors: the default regression targets (participants.tsv columns).
FACTORS = ("Anhedonia", "Appetite", "Sleep", "Suicidality", "Anxiety")


@dataclass(frozen=True)
class Protocol:
    """A task's training protocol: its network and input, its cross-validation and its
    optimiser. :data:`PROTOCOLS` holds the papers' values; a :class:`TrainOptions` field left
    None takes the protocol's."""

    architecture: str
    input: str
    folds: int
    repeats: int
    batch_size: int
    lr: float
    weight_decay: float


#: Paper A (classification: stratified 5-fold, Adam LR 0.01, weight decay 1e-3, batch 8) and
#: paper B (regression: 10 folds x 5 repeats, Adam LR 1e-3, batch 4).
PROTOCOLS = {
    Task.CLASSIFICATION: Protocol("densenet121", "gm", folds=5, repeats=1, batch_size=8,
                                  lr=0.01, weight_decay=1e-3),
    Task.REGRESSION: Protocol("dfrn", "t1w", folds=10, repeats=5, batch_size=4, lr=1e-3,
                              weight_decay=0.0),
}


@dataclass(frozen=True)
class TrainOptions:
    """Everything ``bids_mdd-train`` was asked to do (None: the task's protocol default)."""

    derivatives_dir: Path
    models_dir: Path
    participants: Path
    task: Task = Task.CLASSIFICATION
    name: str | None = None
    model_version: str = "1.0.0"
    # network and input
    architecture: str | None = None
    input: str | None = None
    zoom: float = 1.0
    normalization: str = "zscore"
    width: int | None = None
    growth_rate: int | None = None
    # labels
    label_column: str | None = None
    positive: list[str] | None = None
    negative: list[str] | None = None
    targets: tuple[str, ...] = FACTORS
    site_column: str = "site"
    cv: str = "grouped"  # a splits.CvScheme
    harmonize: bool = False  # fold-wise ComBat of the inputs over the site column
    harmonize_empirical_bayes: bool = False  # ComBat's pooling of site effects across voxels
    # model card
    site_name: str | None = None
    known_limits: tuple[str, ...] = ()
    # protocol
    folds: int | None = None
    repeats: int | None = None
    val_fraction: float = 0.1
    epochs: int = 100
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    plateau_patience: int = 10
    # transfer learning
    pretrain_from: Path | None = None
    backbone_lr_factor: float = 0.001
    allow_shared_ids: bool = False
    # evaluation
    permutations: int = 0
    permutation_mode: str = "outputs"
    compare: bool = False
    # execution
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    work_dir: Path | None = None
    overwrite: bool = False
    no_progress: bool = False

    def protocol(self) -> Protocol:
        """The task's protocol with every value these options set."""
        defaults = PROTOCOLS[self.task]
        return replace(defaults, **{f.name: getattr(self, f.name) for f in fields(Protocol)
                                    if getattr(self, f.name) is not None})

    @classmethod
    def from_values(cls, values: Any) -> TrainOptions:
        """The options from any object with these attributes (an argparse namespace)."""
        return cls(**{field.name: getattr(values, field.name) for field in fields(cls)})
