"""The participant level's model step: predictions.tsv, attention maps and their figures.

Runs after preprocessing, on its derivatives, with models loaded once for the whole run. The
predictions table's sidecar, listing the models' weights, is written last and so marks a
complete step: a rerun with the same bundles skips the participant.
"""

from __future__ import annotations

import json
import logging
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import nibabel as nib
import pandas as pd

from bids_mdd.bids.atomic import atomic_output, write_json
from bids_mdd.bids.derivatives import copy_file, provenance, write_image
from bids_mdd.bids.names import attention_desc, derivative_path, sidecar_path
from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.models.figures import attention_figure
from bids_mdd.models.inference import (ATTENTION_METHOD, ATTENTION_UNITS, LoadedModel,
                                       ModelResult, apply_model)
from bids_mdd.preproc.sink import OUTPUTS
from bids_mdd.preproc.templates import TEMPLATE

LOGGER = logging.getLogger(__name__)

PREDICTIONS = {"suffix": "predictions", "extension": ".tsv"}
COLUMNS = {
    "model": "Name of the model bundle",
    "target": "What is predicted: MDD (probability of major depressive disorder) or a "
              "symptom-factor / score column",
    "value": "Mean over the bundle's fold models: P(MDD) for the classifier, the predicted "
             "score for a regressor",
    "std": "Standard deviation across the fold models (ddof 0)",
    "n_models": "Number of fold models averaged",
}


def attention_entities(target: str, res: str) -> dict[str, Any]:
    """Entities of a target's attention map on the grid ``res``."""
    return {"space": TEMPLATE, "res": res, "desc": attention_desc(target),
            "suffix": "attention"}


def figure_entities(target: str) -> dict[str, Any]:
    """Entities of a target's attention figure."""
    return {"datatype": "figures", "desc": f"attention{attention_desc(target)}",
            "extension": ".svg"}


def _map_entities(model: LoadedModel) -> dict[str, Any]:
    return attention_entities(model.target, model.spec.entities["res"])


def _models_json(models: list[LoadedModel]) -> list[dict[str, Any]]:
    return [model.to_json() for model in models]


def up_to_date(output_dir: Path, entities: dict[str, Any], models: list[LoadedModel]) -> bool:
    """Whether this T1w's predictions and maps exist and came from these same weights."""
    table = derivative_path(output_dir, **entities, **PREDICTIONS)
    try:
        sidecar = json.loads(sidecar_path(table).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    same = ([m["weights"] for m in sidecar.get("Models", [])]
            == [m["weights"] for m in _models_json(models)])
    maps = all(derivative_path(output_dir, **entities, **_map_entities(m)).is_file()
               for m in models)
    return same and maps and table.is_file()


def _image_of(output_dir: Path, entities: dict[str, Any], model: LoadedModel) -> Path:
    image = derivative_path(output_dir, **entities, **model.spec.entities)
    if not image.is_file():
        raise BidsMddError(f"{image}: model {model.bundle.name} needs this preprocessing output, "
                           "which is missing; run the participant level's preprocessing "
                           "(without --preproc-only) first", ExitCode.MISSING_INPUT)
    return image


def _write_attention(output_dir: Path, entities: dict[str, Any], result: ModelResult,
                     device: str) -> Path:
    model = result.model
    path = derivative_path(output_dir, **entities, **_map_entities(model))
    image = nib.Nifti1Image(result.attention, model.spec.grid.affine)
    image.header.set_xyzt_units("mm")
    sidecar = provenance(
        sources=[str(result.source)],
        software={"torch": version("torch"), "monai": version("monai")},
        parameters={"Method": ATTENTION_METHOD[model.bundle.task], "Device": device,
                    "NetworkGrid": list(model.spec.shape), "Zoom": model.spec.zoom},
        Units=ATTENTION_UNITS, Target=model.target, Model=model.to_json(),
        SyntheticModel=bool(model.bundle.meta.get("synthetic", False)))
    write_image(path, image, sidecar)
    t1w_mni = derivative_path(output_dir, **entities, **OUTPUTS["t1w_mni"])
    if t1w_mni.is_file():
        figure = derivative_path(output_dir, **entities, **figure_entities(model.target))
        with tempfile.TemporaryDirectory() as tmp:
            svg = attention_figure(image, str(t1w_mni), str(Path(tmp) / "attention.svg"),
                                   f"{model.target} attention ({model.bundle.name})")
            copy_file(svg, figure)
    return path


def predict_participant(output_dir: Path, entities: dict[str, Any],
                        models: list[LoadedModel], device: str) -> Path:
    """Apply every model to one T1w's derivatives; write maps, figures, then the table."""
    rows, sources = [], []
    for model in models:
        image = _image_of(output_dir, entities, model)
        result = apply_model(model, image)
        _write_attention(output_dir, entities, result, device)
        rows.append({"model": model.bundle.name, "target": model.target,
                     "value": round(result.value, 6), "std": round(result.std, 6),
                     "n_models": result.n_models})
        sources.append(str(image))
        del result  # one participant's arrays at a time
    table = derivative_path(output_dir, **entities, **PREDICTIONS)
    sidecar = provenance(sources=sorted(set(sources)),
                         software={"torch": version("torch"), "monai": version("monai")},
                         parameters={"Device": device},
                         Columns=COLUMNS, Models=_models_json(models))
    if any(m.bundle.meta.get("synthetic") for m in models):
        sidecar["Warning"] = ("at least one model was trained on SYNTHETIC data: these "
                              "predictions are not for clinical use")
    with atomic_output(table) as tmp:
        pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(tmp, sep="\t", index=False)
    write_json(sidecar_path(table), sidecar)  # last: it marks the step complete
    return table
