"""The participant level's model step: predictions.tsv, attention maps and their figures.

Runs after preprocessing, on its derivatives, with models loaded once for the whole run and
participants in batches. The predictions table's sidecar is written last and so marks a
complete step; its ``Fingerprint`` holds what the predictions depend on (bids_mdd's version,
every bundle's weights, domain model and card, the content of each derivative the models read
and of the T1w): a rerun skips the participant only when all of it is unchanged.
"""

from __future__ import annotations

import json
import logging
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from bids_mdd import __version__
from bids_mdd.bids.atomic import atomic_output, write_json
from bids_mdd.bids.derivatives import copy_file, provenance, write_image
from bids_mdd.bids.names import parse_path, sidecar_path
from bids_mdd.bids.outputs import T1wOutputs, attention_entities, attention_figure_entities
from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.models.bundle import sha256_of
from bids_mdd.models.harmonization import SiteStatus
from bids_mdd.models.heap import retained_heap
from bids_mdd.models.inference import (
    ATTENTION_METHOD,
    ATTENTION_UNITS,
    LoadedModel,
    ModelResult,
    apply_model_batch,
    model_input,
)
from bids_mdd.models.training_set import image_sha256
from bids_mdd.participant.figures import attention_figure

LOGGER = logging.getLogger(__name__)

COLUMNS = {
    "model": "Name of the model bundle",
    "target": "What is predicted: MDD (probability of major depressive disorder) or a "
              "symptom-factor / score column",
    "value": "Mean over the bundle's fold models: P(MDD) for the classifier, the predicted "
             "score for a regressor",
    "std": "Standard deviation across the fold models (ddof 0)",
    "n_models": "Number of fold models averaged",
    "distance": "Mahalanobis distance of the model's input to its training inputs (the "
                "bundle's domain model; n/a when the bundle has none)",
    "in_distribution": "true when the distance is at most the bundle's threshold (a quantile "
                       "of cross-validation's held-out distances); false: the input lies "
                       "outside the training distribution and the prediction is not "
                       "supported by the model's evidence; n/a: unknown",
    "in_training": "true when the bundle was trained on this participant (the same input "
                   "image, or the same label in the bundle's own dataset, by DOI): the "
                   "prediction is in-sample and says nothing of the model's accuracy; n/a: the "
                   "bundle records no training participants",
    "site": "The participant's site in the column of participants.tsv that the bundle's "
            "ComBat fit is over; n/a: none given, or the bundle was trained without "
            "harmonisation",
    "harmonized": "true when the bundle's ComBat fit removed the site's effect from the input "
                  "(as from its training inputs); false: the site is not one the fit knows, "
                  "or none is given, so the input went in unharmonised and the prediction may "
                  "be shifted by its site; n/a: the bundle was trained without harmonisation",
}


@dataclass(frozen=True)
class SourceDataset:
    """What the model step reads of the input dataset besides its images: the DOI (which tells
    a bundle's own training participants) and participants.tsv (the sites of bundles trained
    on harmonised inputs; None: the dataset has none, or no bundle needs it)."""

    doi: str | None = None
    participants: pd.DataFrame | None = None

    def site(self, subject: str, model: LoadedModel) -> str | None:
        """The subject's site in the column ``model``'s ComBat fit is over (None: not given)."""
        table, harmonization = self.participants, model.harmonization
        if harmonization is None or table is None or harmonization.site_column not in table:
            return None
        if subject not in table.index or pd.isna(table.at[subject, harmonization.site_column]):
            return None
        return str(table.at[subject, harmonization.site_column])


#: Nothing known of the input dataset: no DOI, no sites.
NO_DATASET = SourceDataset()


def _map_of(outputs: T1wOutputs, model: LoadedModel) -> Path:
    return outputs.attention(model.target, model.spec.entities["res"])


def _models_json(models: list[LoadedModel]) -> list[dict[str, Any]]:
    return [model.to_json() for model in models]


def fingerprint(outputs: T1wOutputs, models: list[LoadedModel], t1w: Path | None = None,
                dataset: SourceDataset = NO_DATASET) -> dict[str, Any] | None:
    """What this T1w's predictions depend on (``dataset``: its DOI decides ``in_training``,
    its sites the harmonisation); None when a model's input is missing."""
    inputs = {}
    for model in models:
        image = outputs.path(**model.spec.entities)
        if not image.is_file():
            return None
        inputs[outputs.relative(image)] = sha256_of(image)
    records = _models_json(models)
    return {"Version": __version__, "Weights": [m["weights"] for m in records],
            "Evidence": [{"domain": (m["domain"] or {}).get("sha256"),
                          "card": (m["card"] or {}).get("summary")} for m in records],
            "Inputs": inputs, "T1w": sha256_of(t1w) if t1w is not None else None,
            "DatasetDOI": dataset.doi,
            **({"Harmonization": [{"site": dataset.site(outputs.subject, m),
                                   "fit": m.bundle.meta["harmonization"]["sha256"]}
                                  for m in models if m.harmonization is not None]}
               if any(m.harmonization is not None for m in models) else {})}


def _maps_as_asked(outputs: T1wOutputs, models: list[LoadedModel], attention: bool) -> bool:
    """Every model's attention map exists (``attention``), or none does (without: a rerun
    with ``--no-attention`` after one with maps must run to remove them)."""
    present = [_map_of(outputs, m).is_file() for m in models]
    return all(present) if attention else not any(present)


def up_to_date(outputs: T1wOutputs, models: list[LoadedModel], t1w: Path | None = None,
               attention: bool = True, dataset: SourceDataset = NO_DATASET) -> bool:
    """Whether this T1w's predictions exist, with its attention maps when ``attention`` and
    without them otherwise, and came from these same weights, inputs and T1w
    (:func:`fingerprint`). Predictions written without maps are not up to date for a run
    that asks for maps."""
    table = outputs.predictions
    try:
        sidecar = json.loads(sidecar_path(table).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if not (table.is_file() and _maps_as_asked(outputs, models, attention)):
        return False
    current = fingerprint(outputs, models, t1w, dataset)
    return current is not None and sidecar.get("Fingerprint") == current


def _image_of(outputs: T1wOutputs, model: LoadedModel) -> Path:
    image = outputs.path(**model.spec.entities)
    if not image.is_file():
        raise BidsMddError(f"{image}: model {model.bundle.name} needs this preprocessing output, "
                           "which is missing; run the participant level's preprocessing "
                           "(without --preproc-only) first", ExitCode.MISSING_INPUT)
    return image


@dataclass(frozen=True)
class ModelStepSettings:
    """How the model step runs (recorded in its sidecars)."""

    device: str = "cpu"
    threads: int = 1  # torch's threads
    batch_size: int = 1  # participants per forward pass
    deterministic: bool = False
    seed: int = 0  # torch's seed (inference draws no random number; recorded all the same)
    #: False (``--no-attention``): predictions only, a forward pass per fold model and no
    #: backward; no attention maps or figures, and earlier ones of this T1w are removed
    attention: bool = True

    def parameters(self) -> dict[str, Any]:
        return {"Device": self.device, "Threads": self.threads, "BatchSize": self.batch_size,
                "Deterministic": self.deterministic, "RandomSeed": self.seed,
                "Attention": self.attention}


def _write_attention(outputs: T1wOutputs, result: ModelResult,
                     settings: ModelStepSettings) -> Path:
    model = result.model
    path = _map_of(outputs, model)
    image = model.spec.grid.image(result.attention)
    sidecar = provenance(
        sources=[str(result.source)],
        software={"torch": version("torch"), "monai": version("monai")},
        parameters={"Method": ATTENTION_METHOD[model.bundle.task], **settings.parameters(),
                    "NetworkGrid": list(model.spec.shape), "Zoom": model.spec.zoom},
        Units=ATTENTION_UNITS, Target=model.target, Model=model.to_json(),
        SyntheticModel=model.bundle.synthetic)
    write_image(path, image, sidecar)
    t1w_mni = outputs.output("t1w_mni")
    if t1w_mni.is_file():
        figure = outputs.attention_figure(model.target)
        with tempfile.TemporaryDirectory() as tmp:
            svg = attention_figure(image, str(t1w_mni), str(Path(tmp) / "attention.svg"),
                                   f"{model.target} attention ({model.bundle.name})")
            copy_file(svg, figure)
    return path


def _write_table(pending: _Pending, models: list[LoadedModel],
                 settings: ModelStepSettings) -> Path:
    rows, outputs = pending.rows, pending.outputs
    table = outputs.predictions
    sidecar = provenance(sources=sorted(set(pending.sources)),
                         software={"torch": version("torch"), "monai": version("monai")},
                         parameters=settings.parameters(),
                         Columns=COLUMNS, Models=_models_json(models),
                         Fingerprint=pending.fingerprint)
    warnings = []
    if any(m.bundle.synthetic for m in models):
        warnings.append("at least one model was trained on SYNTHETIC data: these predictions "
                        "are not for clinical use")
    outside = [row["model"] for row in rows if row["in_distribution"] == "false"]
    if outside:
        warnings.append(f"the input lies outside the training distribution of "
                        f"{', '.join(outside)}: those predictions are not supported by the "
                        "models' evidence")
    unharmonized = [row["model"] + (" (no site given)" if row["site"] == "n/a" else
                                     f" (site {row['site']})")
                    for row in rows if row["harmonized"] == "false"]
    if unharmonized:
        warnings.append(f"the input was not harmonised for {', '.join(unharmonized)}: its site "
                        "is not one the model's ComBat fit knows, so its prediction may be "
                        "shifted by its site")
    seen = [row["model"] for row in rows if row["in_training"] == "true"]
    if seen:
        warnings.append(f"{', '.join(seen)} {'was' if len(seen) == 1 else 'were'} trained on "
                        "this participant: those predictions are in-sample and say nothing of "
                        "how well the models predict")
    if warnings:
        sidecar["Warning"] = "; ".join(warnings)
    for path in remove_dropped_attention(outputs, models if settings.attention else []):
        LOGGER.info("removed %s: %s", path, "no model of this run predicts its target"
                    if settings.attention else "this run has --no-attention")
    with atomic_output(table) as tmp:
        pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(tmp, sep="\t", index=False)
    write_json(sidecar_path(table), sidecar)  # last: it marks the step complete
    return table


#: Entities an attention output adds to its T1w's own.
_ATTENTION_KEYS = {"space", "res", "desc", "suffix", "extension", "datatype"}


def remove_dropped_attention(outputs: T1wOutputs, models: list[LoadedModel]) -> list[Path]:
    """Remove this T1w's attention maps, sidecars and figures of targets that no model of this
    run predicts (a rerun with fewer ``--models``; no ``models``: every map, for a run with
    ``--no-attention``): the outputs beside predictions.tsv are the ones it lists. Return what
    was removed."""
    kept = set()
    for model in models:
        image = _map_of(outputs, model)
        kept |= {image, sidecar_path(image), outputs.attention_figure(model.target)}
    own = {key: str(value) for key, value in outputs.entities.items()}
    removed = []
    for probe, pattern in ((attention_entities("x", "1"), "*_attention.*"),
                           (attention_figure_entities("x"), "*_desc-attention*.svg")):
        for path in outputs.path(**probe).parent.glob(pattern):
            found = {key: str(value) for key, value in parse_path(path).items()
                     if key not in _ATTENTION_KEYS}
            if path not in kept and found == own:
                path.unlink()
                removed.append(path)
    return removed


def _row(result: ModelResult, in_training: bool | None) -> dict[str, Any]:
    """One predictions.tsv row (BIDS TSV: n/a for unknown, lowercase booleans)."""
    flag, site = result.in_distribution, result.site
    return {"model": result.model.bundle.name, "target": result.model.target,
            "value": round(result.value, 6), "std": round(result.std, 6),
            "n_models": result.n_models,
            "distance": "n/a" if result.distance is None else round(result.distance, 3),
            "in_distribution": "n/a" if flag is None else str(flag).lower(),
            "in_training": "n/a" if in_training is None else str(in_training).lower(),
            "site": "n/a" if site is None or site.site is None else site.site,
            "harmonized": "n/a" if site is None else str(
                site.status == SiteStatus.HARMONIZED).lower()}


def _in_training(model: LoadedModel, participant: str, data: np.ndarray,
                 dataset: SourceDataset) -> bool | None:
    """Whether ``model`` was trained on this participant (None: the bundle cannot tell);
    ``data`` is the input on its full grid, hashed as ``bids_mdd-train`` hashes it."""
    recorded = model.bundle.training_set
    if recorded is None:
        return None
    return recorded.contains(participant, image_sha256(data), dataset.doi)


@dataclass
class _Pending:
    """One T1w during the model step: where it goes, what its predictions depend on (taken
    before the models read anything), the rows and sources so far, and how it ended (None:
    still going; its table; or the error that stopped it)."""

    outputs: T1wOutputs
    fingerprint: dict[str, Any] | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    outcome: Path | Exception | None = None


def _apply_models(pending: list[_Pending], models: list[LoadedModel],
                  settings: ModelStepSettings, dataset: SourceDataset) -> None:
    """Each model on each pending T1w, a batch at a time: its row, map and figure, or the
    error that stops the T1w (in ``outcome``)."""
    progress = tqdm(total=len(models) * len(pending), desc="models", unit="T1w",
                    disable=len(pending) < 2)
    for model in models:
        going = [item for item in pending if item.outcome is None]
        for start in range(0, len(going), settings.batch_size):
            chunk = going[start:start + settings.batch_size]
            ready = []  # (T1w, its model input image, the image's checked data, in training)
            for item in chunk:
                try:
                    image = _image_of(item.outputs, model)
                    data = model_input(model, image)
                    ready.append((item, image, data, _in_training(model, item.outputs.subject,
                                                                  data, dataset)))
                except BidsMddError as error:
                    item.outcome = error
            results: list[ModelResult] = []
            if ready:
                try:
                    results = apply_model_batch(
                        model, [data for _, _, data, _ in ready],
                        [image for _, image, _, _ in ready], settings.attention,
                        [dataset.site(item.outputs.subject, model) for item, *_ in ready])
                except Exception as error:
                    for item, *_ in ready:
                        item.outcome = error
            for (item, _, _, seen), result in zip(ready, results):
                try:
                    if settings.attention:
                        _write_attention(item.outputs, result, settings)
                except Exception as error:
                    item.outcome = error
                    continue
                item.rows.append(_row(result, seen))
                item.sources.append(str(result.source))
            del ready, results  # one batch's arrays at a time
            progress.update(len(chunk))
    progress.close()


def predict_participants(t1w_outputs: list[T1wOutputs], models: list[LoadedModel],
                         settings: ModelStepSettings, t1ws: list[Path] | None = None,
                         dataset: SourceDataset = NO_DATASET) -> list[Path | Exception]:
    """Apply every model to each T1w's derivatives, ``settings.batch_size`` T1w per forward
    pass; write maps and figures as each batch finishes, then each T1w's table (its
    fingerprint taken before the models read anything; ``t1ws``: the source images;
    ``dataset``: the input dataset's DOI, for ``in_training``, and sites, for harmonisation).

    Returns, per T1w, its predictions table or the error that stopped it (one T1w's error never
    stops the others; an error of a whole batch is each of its T1w's).
    """
    sources_of = t1ws or [None] * len(t1w_outputs)
    pending = [_Pending(outputs, fingerprint(outputs, models, t1w, dataset))
               for outputs, t1w in zip(t1w_outputs, sources_of)]
    # CPU passes reuse freed memory instead of faulting it in again (bids_mdd.models.heap)
    with retained_heap() if settings.device == "cpu" else nullcontext():
        _apply_models(pending, models, settings, dataset)
    for item in pending:
        if item.outcome is None:
            try:
                item.outcome = _write_table(item, models, settings)
            except Exception as error:
                item.outcome = error
    return [item.outcome for item in pending]  # type: ignore[misc]


def predict_participant(outputs: T1wOutputs, models: list[LoadedModel], device: str,
                        attention: bool = True, dataset: SourceDataset = NO_DATASET
                        ) -> Path:
    """:func:`predict_participants` for one T1w; raises its error."""
    settings = ModelStepSettings(device, attention=attention)
    outcome = predict_participants([outputs], models, settings, dataset=dataset)[0]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome
