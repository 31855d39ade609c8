"""The outputs registry: the entities of every participant-level derivative, by role.

Writers (the preprocessing sink, the model step) and readers (the group level, training, the
reports) look an output up here and pass its entities to :mod:`bids_mdd.bids.names`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bids_mdd.bids.atomic import NAME_MAX, longest_output_name
from bids_mdd.bids.names import attention_desc, derivative_path
from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.spaces.grids import CLASSIFIER_GRID, DFRN_GRID, GRIDS
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

#: BIDS ``Description`` of each image output.
DESCRIPTIONS: dict[str, str] = {
    "t1w_preproc": "T1w after N4 bias-field correction, in the input T1w's space",
    "brain_mask": "Brain mask in the input T1w's space (how it was made: "
                  "Parameters.BrainExtraction)",
    "csf": "Cerebrospinal-fluid partial-volume fraction in the input T1w's space",
    "gm": "Grey-matter partial-volume fraction in the input T1w's space",
    "wm": "White-matter partial-volume fraction in the input T1w's space",
    "gm_modulated": "Grey-matter fraction warped to the template and modulated by the "
                    "Jacobian determinant of the warp (GM volume per voxel)",
    "gm_smoothed": "The modulated grey-matter map smoothed with a Gaussian of "
                   "Parameters.SmoothingFWHM mm FWHM: the 3D-DenseNet's input",
    "t1w_mni": "Brain-masked T1w, z-scored inside the brain, warped to the template: the "
               "DFRN's input",
}

#: The template image every ``space-`` output is aligned to (BIDS ``SpatialReference``).
TEMPLATE_URI = (f"https://templateflow.s3.amazonaws.com/tpl-{TEMPLATE}/"
                f"tpl-{TEMPLATE}_res-01_T1w.nii.gz")


def image_metadata(name: str, source_uri: str, input_skull_stripped: bool) -> dict[str, Any]:
    """The BIDS sidecar keys of the image output ``name`` of a T1w whose BIDS URI is
    ``source_uri``: Description, SpatialReference, Resolution (files with ``res-``),
    SkullStripped (T1w) and Type (masks)."""
    entities = OUTPUTS[name]
    metadata: dict[str, Any] = {"Description": DESCRIPTIONS[name]}
    if "space" in entities:
        grid = GRIDS[entities["res"]]
        metadata["SpatialReference"] = TEMPLATE_URI
        metadata["Resolution"] = {grid.res: (
            f"{grid.zoom:g} mm isotropic, {' x '.join(map(str, grid.shape))} voxels, "
            f"origin {tuple(float(v) for v in grid.origin)} mm in {TEMPLATE}")}
    else:
        metadata["SpatialReference"] = source_uri
    if entities["suffix"] == "T1w":
        metadata["SkullStripped"] = "space" in entities or input_skull_stripped
    if entities["suffix"] == "mask":
        metadata["Type"] = "Brain"
    return metadata


#: Characters kept for a model target in derivative names (attention maps and their
#: figures), beyond the longest preprocessing output name.
TARGET_NAME_RESERVE = 24

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


@dataclass(frozen=True)
class T1wOutputs:
    """Where the participant level writes one T1w's derivatives: OUTPUT_DIR and the T1w's own
    entities (``sub``, ``ses``, ``acq``, ``run``, ...). Every path of that T1w comes from here,
    through the registry above and the names of :mod:`bids_mdd.bids.names`."""

    output_dir: Path
    entities: dict[str, Any] = field(hash=False)

    @property
    def subject(self) -> str:
        return str(self.entities["subject"])

    def path(self, **entities: Any) -> Path:
        """The file with the T1w's entities plus ``entities``."""
        return derivative_path(self.output_dir, **self.entities, **entities)

    def output(self, name: str) -> Path:
        """The preprocessing output ``name`` of :data:`OUTPUTS`."""
        return self.path(**OUTPUTS[name])

    @property
    def predictions(self) -> Path:
        return self.path(**PREDICTIONS)

    def attention(self, target: str, res: str) -> Path:
        return self.path(**attention_entities(target, res))

    def attention_figure(self, target: str) -> Path:
        return self.path(**attention_figure_entities(target))

    def relative(self, path: Path) -> str:
        """``path`` relative to OUTPUT_DIR, as the sidecars name it."""
        return path.relative_to(self.output_dir).as_posix()

    def check_name_lengths(self, source: Path) -> None:
        """Raise BidsMddError (65) naming ``source`` when its derivatives' file names, with
        the atomic writer's temporary prefix, would exceed what a file system takes (a label
        of 150-200 characters): the run would stop at the first write with ENAMETOOLONG.
        Model outputs name a target besides: :data:`TARGET_NAME_RESERVE` characters are kept
        for it."""
        longest = max(len(self.output(name).name.encode()) for name in OUTPUTS)
        longest += TARGET_NAME_RESERVE
        limit = longest_output_name()
        if longest > limit:
            label = len(self.subject)
            raise BidsMddError(
                f"{source}: its derivatives would have file names of up to {longest} "
                f"characters, over the {limit} that fit the file system's {NAME_MAX} with "
                f"bids_mdd's temporary prefix; rename the participant (label of {label} "
                f"characters) to at most {label - (longest - limit)} characters",
                ExitCode.BAD_DATA)
