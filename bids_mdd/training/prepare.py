"""``bids_mdd-train prepare``: the network inputs of a cohort extracted once, to train on many
times (ClinicaDL's ``prepare-data``). Reading, normalising and zooming 72 full-grid maps costs
more than fitting a small network to them; a prepared folder holds the result.

Layout (read by :func:`bids_mdd.training.data.find_samples`):

- ``sub-XX[/ses-YY]/sub-XX[_ses-YY]_<variant>.nii.gz``: ``prepare(read_on_grid(...))`` of one
  derivative, on the spec's zoomed grid (``InputSpec.affine``, qform/sform code 4), stored as
  int16 with a scale factor;
- ``inputs.json``: per variant (``gm-zscore``, ``gm-none``, ``t1w-zscore``, ...) its
  ``InputSpec.to_json()``, affine and the preprocessing that made the derivatives;
- ``images.tsv``: per image its source derivative, the sha256 of the source's full-grid float32
  data (the fingerprint a bundle records, so the leakage guard still knows the participant), the
  sha256 of the prepared float32 array and the int16 storage's largest error relative to the
  image's peak;
- ``dataset_description.json``: the derivatives' own (synthetic or not, source dataset).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm import tqdm

from bids_mdd.bids.atomic import atomic_output, json_text, write_text
from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.models.inputs import DEFAULT_INPUTS, InputSpec, prepare, read_on_grid
from bids_mdd.training.data import (
    PREPARED_COLUMNS,
    PREPARED_IMAGES,
    PREPARED_INDEX,
    find_samples,
    is_prepared,
    prepared_name,
    variant_name,
)
from bids_mdd.training.evidence import preprocessing_of

LOGGER = logging.getLogger(__name__)

#: Every input a bundled model reads: the classifier's z-scored GM, the baselines' GM volumes
#: (ROI ridge, LBP) and the DFRN's z-scored T1w.
DEFAULT_VARIANTS = ("gm-zscore", "gm-none", "t1w-zscore")
_SPECS = {variant_name(spec): spec for base in DEFAULT_INPUTS.values()
          for spec in (replace(base, normalization="zscore"),
                       replace(base, normalization="none"))}
VARIANTS = tuple(_SPECS)


@dataclass(frozen=True)
class PreparedFolder:
    """What a preparation wrote."""

    path: Path
    n_images: int
    n_participants: int
    max_rel_error: float


def variant_spec(variant: str, zoom: float) -> InputSpec:
    """The input spec of a variant name at ``zoom``."""
    if variant not in _SPECS:
        raise BidsMddError(f"unknown input variant {variant!r}; choose from "
                           f"{', '.join(VARIANTS)}", ExitCode.USAGE)
    return replace(_SPECS[variant], zoom=zoom)


def write_prepared_image(data: np.ndarray, spec: InputSpec, path: Path) -> float:
    """Write one prepared array as int16 with a scale factor (a quarter of float32's size;
    nibabel picks slope and intercept); returns the largest error after reading it back,
    relative to the array's peak."""
    image = nib.Nifti1Image(data, spec.affine)
    image.set_data_dtype(np.int16)
    image.set_qform(spec.affine, code=4)  # 4: MNI152
    image.set_sform(spec.affine, code=4)
    with atomic_output(path) as tmp:
        nib.save(image, str(tmp))
        back = np.asarray(nib.load(str(tmp)).dataobj, dtype=np.float32)
    peak = float(np.abs(data).max()) or 1.0
    return float(np.abs(back - data).max()) / peak


def prepare_inputs(derivatives_dir: Path, out_dir: Path, *, zoom: float,
                   variants: tuple[str, ...] = DEFAULT_VARIANTS, overwrite: bool = False,
                   progress: bool = True) -> PreparedFolder:
    """Write the prepared inputs of every participant (session) in ``derivatives_dir``.

    Each derivative is read once for all the variants made from it. The index files are
    written last, so an interrupted preparation is never taken for a finished one.
    """
    derivatives_dir, out_dir = Path(derivatives_dir), Path(out_dir)
    if is_prepared(derivatives_dir):
        raise BidsMddError(f"{derivatives_dir}: already a folder of prepared inputs; give the "
                           "participant level's OUTPUT_DIR", ExitCode.USAGE)
    if out_dir.resolve() == derivatives_dir.resolve() or \
            derivatives_dir.resolve() in out_dir.resolve().parents:
        raise BidsMddError(f"{out_dir}: inside the derivatives; choose a folder outside "
                           f"{derivatives_dir}", ExitCode.USAGE)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise BidsMddError(f"{out_dir}: not empty; give --overwrite to replace its prepared "
                           "inputs, or another folder", ExitCode.USAGE)
    specs = [variant_spec(v, zoom) for v in dict.fromkeys(variants)]
    (out_dir / PREPARED_INDEX).unlink(missing_ok=True)  # not a prepared folder until finished
    index, rows, preprocessing = {}, [], {}
    for entities in {json.dumps(s.entities, sort_keys=True): s.entities for s in specs}.values():
        group = [s for s in specs if s.entities == entities]
        samples = find_samples(derivatives_dir, group[0])
        preprocessing[json.dumps(entities, sort_keys=True)] = preprocessing_of(derivatives_dir,
                                                                               samples)
        for sample in tqdm(samples, desc=f"preparing {entities['suffix']}", unit="image",
                           disable=not progress):
            data = read_on_grid(sample.path, group[0])
            source_hash = hashlib.sha256(data.tobytes()).hexdigest()
            for spec in group:
                prepared = prepare(data, spec)
                variant = variant_name(spec)
                error = write_prepared_image(prepared, spec, out_dir / prepared_name(
                    sample.participant, sample.session, variant))
                rows.append({"participant_id": f"sub-{sample.participant}",
                             "session_id": f"ses-{sample.session}" if sample.session else "",
                             "variant": variant, "source": sample.path.name,
                             "source_sha256": source_hash,
                             "prepared_sha256": hashlib.sha256(prepared.tobytes()).hexdigest(),
                             "max_rel_error": f"{error:.3g}"})
    for spec in specs:
        index[variant_name(spec)] = {
            **spec.to_json(), "affine": spec.affine.tolist(),
            "preprocessing": preprocessing[json.dumps(spec.entities, sort_keys=True)]}
    table = pd.DataFrame(rows, columns=list(PREPARED_COLUMNS))
    if not table["session_id"].astype(bool).any():
        table = table.drop(columns="session_id")
    description = derivatives_dir / "dataset_description.json"
    if description.is_file():
        with atomic_output(out_dir / "dataset_description.json") as tmp:
            shutil.copyfile(description, tmp)
    write_text(out_dir / PREPARED_IMAGES, table.to_csv(sep="\t", index=False))
    write_text(out_dir / PREPARED_INDEX, json_text(index))
    errors = table["max_rel_error"].astype(float)
    folder = PreparedFolder(out_dir, len(table), table["participant_id"].nunique(),
                            float(errors.max()) if len(errors) else 0.0)
    LOGGER.info("prepared %d images of %d participants in %s (largest int16 error %.2g of the "
                "peak)", folder.n_images, folder.n_participants, out_dir, folder.max_rel_error)
    return folder
