"""What a trained bundle carries as evidence: its model card and its domain-shift model, both
built from the same cross-validation the metrics come from."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bids_mdd.bids.derivatives import source_dataset_entry
from bids_mdd.bids.names import sidecar_path
from bids_mdd.models.card import HEADLINE_METRIC, RESEARCH_USE, Cohort, Evidence, ModelCard
from bids_mdd.models.domain import DomainModel, coarse_factor, fit_calibrated
from bids_mdd.models.inputs import InputSpec
from bids_mdd.models.task import Task
from bids_mdd.training.data import PREPARED_INDEX, Sample, is_prepared
from bids_mdd.training.splits import Fold

LOGGER = logging.getLogger(__name__)

SYNTHETIC_LIMIT = "trained on SYNTHETIC data: its outputs describe the generator, not depression"


def derivatives_description(derivatives_dir: Path) -> dict[str, Any]:
    """The derivatives' dataset_description.json ({} when absent or unreadable)."""
    try:
        return json.loads((derivatives_dir / "dataset_description.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _source_dataset(derivatives_dir: Path, participants_tsv: Path) -> tuple[str, str | None]:
    """The raw dataset's name and DOI: the derivatives' SourceDatasets, else the BIDS dataset
    beside participants.tsv (read as the participant level records it)."""
    sources = derivatives_description(derivatives_dir).get("SourceDatasets") or []
    source = sources[0] if sources and isinstance(sources[0], dict) else {}
    if not source:
        source = source_dataset_entry(participants_tsv.parent)
    doi = source.get("DOI")
    name = source.get("Name") or participants_tsv.parent.name
    return str(name), (str(doi) if doi else None)


def _prepared_preprocessing(folder: Path) -> str:
    """What made a prepared folder's derivatives: its index's record, else the software the
    participant level's QC table names (folders prepared before the index recorded it)."""
    try:
        variants = json.loads((folder / PREPARED_INDEX).read_text())
        recorded = next((v["preprocessing"] for v in variants.values() if "preprocessing" in v),
                        None)
    except (OSError, json.JSONDecodeError, AttributeError):
        recorded = None
    if recorded:
        return f"{recorded}; prepared inputs"
    try:
        software = pd.read_csv(folder / "qc.tsv", sep="\t", dtype=str)["SoftwareVersions"]
        return f"{software.dropna().iloc[0]}; prepared inputs"
    except (OSError, KeyError, IndexError, pd.errors.ParserError):
        return "unknown; prepared inputs"


def preprocessing_of(derivatives_dir: Path, samples: list[Sample]) -> str:
    """'bids_mdd 0.1.0 (template priors segmentation, full quality)' from the derivatives' own
    records: GeneratedBy and the first input's sidecar."""
    if is_prepared(derivatives_dir):
        return _prepared_preprocessing(derivatives_dir)
    generated = (derivatives_description(derivatives_dir).get("GeneratedBy") or [{}])[0]
    text = f"{generated.get('Name', 'unknown')} {generated.get('Version', '')}".strip()
    try:
        parameters = json.loads(sidecar_path(samples[0].path).read_text()).get("Parameters", {})
    except (OSError, json.JSONDecodeError, IndexError):
        return text
    segmentation = parameters.get("Segmentation", {})
    method = str(segmentation.get("method", "")) if isinstance(segmentation, dict) else ""
    method = "template priors" if "priors" in method else "k-means" if method else ""
    details = [f"{method} segmentation" if method else None,
               "--sloppy (coarse, for tests)" if parameters.get("Sloppy") else "full quality"]
    return f"{text} ({', '.join(d for d in details if d)})"


def build_card(*, task: Task, derivatives_dir: Path, participants_tsv: Path,
               participants: pd.DataFrame, samples: list[Sample],
               class_counts: dict[str, int] | None, site_column: str | None,
               site_name: str | None,
               summary: dict[str, dict[str, float]], permutation: dict[str, Any] | None,
               synthetic: bool, known_limits: list[str]) -> ModelCard:
    """The card of a bundle trained on ``samples`` (see :mod:`bids_mdd.models.card`)."""
    dataset, doi = _source_dataset(derivatives_dir, participants_tsv)
    ids = [s.participant for s in samples]
    if site_column:
        sites = sorted({str(participants.at[p, site_column]) for p in ids})
    else:
        sites = [site_name] if site_name else []
    ages = (pd.to_numeric(participants.loc[ids, "age"], errors="coerce").dropna()
            if "age" in participants else pd.Series(dtype=float))
    cohort = Cohort(dataset=dataset, doi=doi, n_participants=len(set(ids)),
                    class_counts=class_counts, sites=sites,
                    age_range=(float(ages.min()), float(ages.max())) if len(ages) else None,
                    synthetic=synthetic)
    metric = HEADLINE_METRIC[task]
    stats = summary.get(metric, {"mean": float("nan"), "sd": float("nan"), "n_folds": 0})
    tested = (permutation or {}).get("by_metric", {}).get(metric)
    evidence = Evidence(metric=metric, mean=float(stats["mean"]), sd=float(stats["sd"]),
                        n_folds=int(stats["n_folds"]),
                        permutation_p=float(tested["p_value"]) if tested else None,
                        n_permutations=int(permutation["n_permutations"]) if tested else 0)
    limits = list(known_limits)
    if synthetic:
        limits.insert(0, SYNTHETIC_LIMIT)
    if len(sites) <= 1:
        limits.append("one site or site not recorded: performance on other scanners and sites "
                      "is unknown")
    return ModelCard(cohort=cohort, evidence=evidence,
                     preprocessing=preprocessing_of(derivatives_dir, samples),
                     intended_use=RESEARCH_USE, known_limits=limits)


def build_domain_model(volumes: np.ndarray, spec: InputSpec, folds: list[Fold],
                       fold_inputs: Callable[[Fold], np.ndarray] | None = None) -> DomainModel:
    """The domain-shift model of ``volumes`` (the network inputs), calibrated on the held-out
    parts of the first repeat's folds (each scored by a PCA of its fold's training part;
    ``fold_inputs``: each fold's own inputs, as cross-validation gave them to its networks)."""
    first = [f for f in folds if f.repeat == 0]
    splits = [(np.concatenate([f.train, f.val]), f.test) for f in first]
    model = fit_calibrated(volumes, splits, coarse_factor(float(spec.affine[0, 0])),
                           split_volumes=[fold_inputs(f) for f in first] if fold_inputs else None)
    LOGGER.info("domain model: %d components on %d features; threshold %.2f (%.0fth percentile "
                "of %d held-out distances, median %.2f)", len(model.variances), len(model.mean),
                model.threshold, 100 * model.quantile, model.calibration["n_heldout"],
                model.calibration["heldout_median"])
    return model
