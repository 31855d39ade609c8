"""The outputs registry: the entities of every participant-level derivative, by role.

Writers (the preprocessing sink, the model step) and readers (the group level, training, the
reports) look an output up here and pass its entities to :mod:`bids_mdd.bids.names`.
"""

from __future__ import annotations

from typing import Any

from bids_mdd.bids.names import attention_desc
from bids_mdd.spaces.grids import CLASSIFIER_GRID, DFRN_GRID
from bids_mdd.spaces.templates import TEMPLATE

#: preprocessing output -> entities of its derivative (besides the source T1w's own entities)
OUTPUTS: dict[str, dict[str, Any]] = {
    "t1w_preproc": {"desc": "preproc", "suffix": "T1w"},
    "brain_mask": {"desc": "brain", "suffix": "mask"},
    "csf": {"label": "CSF", "suffix": "probseg"},
    "gm": {"label": "GM", "suffix": "probseg"},
    "wm": {"label": "WM", "suffix": "probseg"},
    "xfm": {"from": "T1w", "to": TEMPLATE, "mode": "image", "suffix": "xfm",
            "extension": ".h5"},
    "gm_modulated": {"space": TEMPLATE, "res": CLASSIFIER_GRID.res, "label": "GM",
                     "desc": "modulated", "suffix": "probseg"},
    "gm_smoothed": {"space": TEMPLATE, "res": CLASSIFIER_GRID.res, "label": "GM",
                    "desc": "smooth8modulated", "suffix": "probseg"},
    "t1w_mni": {"space": TEMPLATE, "res": DFRN_GRID.res, "desc": "preproc", "suffix": "T1w"},
    "qc": {"desc": "qc", "suffix": "metrics", "extension": ".json"},
    "fig_segmentation": {"datatype": "figures", "desc": "segmentation", "extension": ".svg"},
    "fig_registration": {"datatype": "figures", "desc": "registration", "extension": ".svg"},
}

#: Preprocessing outputs a model bundle may read: the MNI-space images.
MODEL_INPUTS = {key: entities for key, entities in OUTPUTS.items() if "space" in entities}

#: The model step's table: one row per model applied to the T1w.
PREDICTIONS: dict[str, Any] = {"suffix": "predictions", "extension": ".tsv"}


def attention_entities(target: str, res: str) -> dict[str, Any]:
    """Entities of a target's attention map on the grid ``res``."""
    return {"space": TEMPLATE, "res": res, "desc": attention_desc(target),
            "suffix": "attention"}


def attention_figure_entities(target: str) -> dict[str, Any]:
    """Entities of a target's attention figure."""
    return {"datatype": "figures", "desc": f"attention{attention_desc(target)}",
            "extension": ".svg"}
