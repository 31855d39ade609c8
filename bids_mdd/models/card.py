"""The model card: what a bundle was trained on and how well it did, carried to every output.

A P(MDD) of 0.8 from a model at chance level is noise with a number on it; the card travels with
the bundle (``model.json`` key ``card``) so that the participant report, the group report and
every predictions sidecar show the model's evidence beside its outputs (Mitchell et al. 2019,
"Model Cards for Model Reporting", reduced to what a neuroimaging reader needs).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from bids_mdd.models.task import Task

#: The metric a card leads with: balanced accuracy (chance is 0.5 whatever the class ratio)
#: for a classifier, Pearson r for a regressor.
HEADLINE_METRIC = {Task.CLASSIFICATION: "balanced_accuracy", Task.REGRESSION: "pearson_r"}
METRIC_NAMES = {"balanced_accuracy": "balanced accuracy", "pearson_r": "Pearson r"}
RESEARCH_USE = "research; not for diagnosis"


@dataclass(frozen=True)
class Cohort:
    """The training participants."""

    dataset: str
    n_participants: int
    doi: str | None = None
    class_counts: dict[str, int] | None = None
    sites: list[str] = field(default_factory=list)  # empty: not recorded
    age_range: tuple[float, float] | None = None
    synthetic: bool = False

    def describe(self) -> str:
        """'72 scans (51 MDD, 21 control) of one site, ages 19-62, ds002748'."""
        counts = (" (" + ", ".join(f"{n} {name}" for name, n in
                                   sorted(self.class_counts.items(), key=lambda kv: -kv[1]))
                  + ")") if self.class_counts else ""
        sites = ("site not recorded" if not self.sites else
                 "one site" if len(self.sites) == 1 else f"{len(self.sites)} sites")
        ages = (f", ages {self.age_range[0]:g}-{self.age_range[1]:g}"
                if self.age_range else "")
        kind = "SYNTHETIC " if self.synthetic else ""
        return f"{self.n_participants} {kind}scans{counts}, {sites}{ages}, {self.short_name}"

    @property
    def short_name(self) -> str:
        """'OpenNeuro ds002748 v1.0.5' for an OpenNeuro DOI, else the dataset's name."""
        match = re.search(r"openneuro\.(ds\d+)(?:\.(v[\d.]+))?", self.doi or "")
        if match:
            return " ".join(["OpenNeuro", *[g for g in match.groups() if g]])
        return self.dataset


@dataclass(frozen=True)
class Evidence:
    """The cross-validated headline metric, its spread over folds and its permutation p."""

    metric: str
    mean: float
    sd: float
    n_folds: int
    permutation_p: float | None = None
    n_permutations: int = 0

    def describe(self) -> str:
        """'CV balanced accuracy 0.55 ± 0.10 over 5 folds, permutation p 0.21'."""
        name = METRIC_NAMES.get(self.metric, self.metric.replace("_", " "))
        text = f"CV {name} {self.mean:.2f} ± {self.sd:.2f} over {self.n_folds} folds"
        if self.permutation_p is not None:
            text += f", permutation p {self.permutation_p:.2g} ({self.n_permutations} perm.)"
        else:
            text += ", no permutation test"
        return text


@dataclass(frozen=True)
class ModelCard:
    """A bundle's card (see the module docstring)."""

    cohort: Cohort
    evidence: Evidence
    preprocessing: str
    intended_use: str = RESEARCH_USE
    known_limits: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for reports and sidecars: the cohort, then the evidence."""
        return f"trained on {self.cohort.describe()}; {self.evidence.describe()}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["summary"] = self.summary()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelCard:
        cohort = dict(data["cohort"])
        if cohort.get("age_range") is not None:
            cohort["age_range"] = tuple(cohort["age_range"])
        return cls(cohort=Cohort(**cohort), evidence=Evidence(**data["evidence"]),
                   preprocessing=str(data["preprocessing"]),
                   intended_use=str(data.get("intended_use", RESEARCH_USE)),
                   known_limits=list(data.get("known_limits", [])))


def caution(name: str, card: ModelCard | None) -> str | None:
    """A line for a model whose card shows no evidence above chance, or that has no card: its
    output must not be read as a finding about a person. None for a model with evidence."""
    if card is None:
        return (f"{name}: no model card, so nothing shows that it performs above chance; do "
                "not read its output as a diagnosis.")
    p_value = card.evidence.permutation_p
    if p_value is not None and p_value < 0.05 and not card.cohort.synthetic:
        return None
    why = ("was not permutation-tested" if p_value is None else
           f"is not distinguishable from chance (permutation p {p_value:.2g})"
           if p_value >= 0.05 else "was measured on SYNTHETIC data")
    return (f"{name}: its cross-validated performance {why}; do not read its output as a "
            "diagnosis or a symptom measurement.")


NO_CARD = "no model card: performance unknown"


def evidence_line(model: dict[str, Any]) -> str:
    """The card's one line of a predictions sidecar's model entry (``card.summary``)."""
    return (model.get("card") or {}).get("summary") or NO_CARD


def cautions(models: list[dict[str, Any]]) -> list[str]:
    """:func:`caution` for each model entry of a predictions sidecar (``name``, ``card``)."""
    lines = []
    for model in models:
        card = ModelCard.from_json(model["card"]) if model.get("card") else None
        line = caution(str(model.get("name")), card)
        if line:
            lines.append(line)
    return lines
