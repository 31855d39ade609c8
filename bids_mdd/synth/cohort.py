"""Generate a synthetic BIDS cohort: subjects in parallel, then participants.tsv and truth."""

from __future__ import annotations

import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from tqdm import tqdm

from bids_mdd.atlas import Atlas, label_volume_ml, load_aal2
from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.spaces.templates import template_brain_mask, template_t1w
from bids_mdd.synth import writer
from bids_mdd.synth.mni import (
    MniSpace,
    prepare_mni_space,
    render_mni_inputs,
    write_mni_inputs,
    write_mni_qc,
)
from bids_mdd.synth.model import (
    FACTOR_REGIONS,
    CohortSpec,
    SubjectDraw,
    draw_subjects,
    factor_scores,
    regional_gm_scale,
    site_spec,
)
from bids_mdd.synth.render import TemplateSpace, prepare_template, render_subject
from bids_mdd.synth.sites import SiteSignature, draw_sites
from bids_mdd.synth.stats import cohens_d

LOGGER = logging.getLogger(__name__)

_WORKER: dict[str, Any] = {}


def _init_worker(spaces: dict[float, TemplateSpace], spec: CohortSpec, root: str,
                 region_indices: dict[str, list[int]], planted: set[int],
                 mni: MniSpace | None, offsets: dict[str, list[int]]) -> None:
    _WORKER.update(spaces=spaces, spec=spec, root=Path(root), regions=region_indices,
                   planted=planted, mni=mni, offsets=offsets)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _make_subject(draw: SubjectDraw) -> dict[str, Any]:
    """Render and write one subject; return its regional GM volumes (mL) and brain volume."""
    spec = _WORKER["spec"]
    acquired = site_spec(spec, draw)
    offsets = _WORKER["offsets"].get(draw.site.name, []) if draw.site else []
    gm_scale = regional_gm_scale(spec, draw, _WORKER["planted"])
    images = render_subject(_WORKER["spaces"][acquired.resolution], acquired, draw, gm_scale,
                            offsets)
    writer.write_subject(_WORKER["root"], draw, images, spec)
    brain_ml = float(images.brain.sum() * images.voxel_ml)
    gm_ml = float(images.gm.sum() * images.voxel_ml)
    if _WORKER["mni"] is not None:
        write_mni_inputs(_WORKER["root"], draw,
                         render_mni_inputs(_WORKER["mni"], acquired, draw, gm_scale, offsets))
        write_mni_qc(_WORKER["root"], draw, brain_ml, gm_ml)
    volumes = {name: label_volume_ml(images.labels, images.gm, images.voxel_ml, idx)
               for name, idx in _WORKER["regions"].items()}
    return {"label": draw.label, "brain_ml": brain_ml, "gm_ml": gm_ml,
            "regional_gm_ml": volumes}


def template_regional_fractions(space: TemplateSpace, atlas: Atlas,
                                regions: dict[str, list[int]]) -> dict[str, float]:
    """Each region's GM volume over brain volume in the template (the reference for scores)."""
    img = nib.Nifti1Image(space.atlas_labels.astype(np.int32), space.atlas_affine)
    from nilearn.image import resample_to_img  # nearest-neighbour atlas onto the template grid
    labels = np.asarray(resample_to_img(img, nib.Nifti1Image(space.t1w, space.affine),
                                        interpolation="nearest", copy_header=True,
                                        force_resample=True).dataobj)
    gm = space.gm
    brain = space.brain.sum()
    return {name: float(gm[np.isin(labels, idx)].sum() / brain) for name, idx in regions.items()}


def generate_cohort(out_dir: str | Path, spec: CohortSpec, n_jobs: int = 2) -> dict[str, Any]:
    """Write a synthetic BIDS cohort to ``out_dir`` (must not exist or be empty); return its truth.

    The cohort is built in a temporary sibling folder and renamed into place at the end, so an
    interrupted run never leaves a half-written dataset at ``out_dir``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise BidsMddError(f"{out_dir} exists and is not an empty folder: give a new OUT path",
                           ExitCode.USAGE)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BidsMddError(f"cannot create {out_dir.parent}: {exc.strerror or exc}",
                           ExitCode.CANNOT_CREATE_OUTPUT) from exc
    atlas = load_aal2()
    try:
        planted_map = atlas.indices_of(spec.regions)
        factor_map = atlas.indices_of(FACTOR_REGIONS.values())
    except ValueError as exc:
        raise BidsMddError(f"--regions: {exc}", ExitCode.USAGE) from exc
    regions = {**planted_map, **{f: factor_map[r] for f, r in FACTOR_REGIONS.items()}}
    planted = {i for idx in planted_map.values() for i in idx}
    sites, offsets = _draw_sites(spec, atlas, {i for idx in regions.values() for i in idx})

    tmp = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
    except OSError as exc:
        raise BidsMddError(f"cannot create {tmp} ({exc.strerror}): the cohort is written beside "
                           f"{out_dir} and renamed into place, so {out_dir.parent} must be "
                           "writable", ExitCode.CANNOT_CREATE_OUTPUT) from exc
    try:  # the partial folder goes whatever fails
        draws = draw_subjects(spec, atlas.hemisphere_stems(), sites)
        spaces = {}
        for resolution in sorted({site_spec(spec, draw).resolution for draw in draws}):
            LOGGER.info("preparing the template at %.2g mm", resolution)
            spaces[resolution] = prepare_template(nib.load(template_t1w()),
                                                  nib.load(template_brain_mask()), atlas,
                                                  resolution, seed=spec.seed)
        space = spaces.get(spec.resolution) or spaces[min(spaces)]
        mni = None
        if spec.mni_derivatives:
            LOGGER.info("preparing the 1 mm template for MNI-space model inputs")
            mni = prepare_mni_space(prepare_template(nib.load(template_t1w()),
                                                     nib.load(template_brain_mask()), atlas,
                                                     resolution=1.0, seed=spec.seed))
        with ProcessPoolExecutor(max_workers=max(1, n_jobs), initializer=_init_worker,
                                 initargs=(spaces, spec, str(tmp), regions, planted, mni,
                                           offsets)) as pool:
            results = list(tqdm(pool.map(_make_subject, draws), total=len(draws),
                                desc="synthetic subjects", unit="subject"))
        truth = _ground_truth(spec, draws, results,
                              template_regional_fractions(space, atlas, regions), space, sites)
        writer.write_dataset_files(tmp, spec, draws, truth)
        if out_dir.exists():
            out_dir.rmdir()  # checked empty above
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return truth


#: Regions for a site's offset: large enough to be seen, and away from the default planted
#: regions (frontal, temporal, postcentral) and factor regions, so that an offset's cluster is
#: not read as a planted one after smoothing.
SITE_OFFSET_REGIONS = ("Calcarine", "Cuneus", "Lingual", "Occipital_Sup", "Precuneus",
                       "Cingulate_Post", "Cingulate_Mid", "Thalamus", "Putamen", "Cerebelum_6",
                       "Cerebelum_8", "Occipital_Inf")


def _draw_sites(spec: CohortSpec, atlas: Atlas, taken: set[int],
                ) -> tuple[list[SiteSignature], dict[str, list[int]]]:
    """The cohort's sites and each one's offset labels, none of them a planted or factor
    region's."""
    if not spec.n_sites:
        return [], {}
    stems = atlas.hemisphere_stems()
    indices = {stem: [i for i, s in stems.items() if s == stem] for stem in SITE_OFFSET_REGIONS}
    free = [stem for stem, idx in indices.items() if idx and not taken & set(idx)]
    sites = draw_sites(spec.n_sites, seed=spec.seed, offset=spec.site_offset,
                       bias_sd=spec.bias_sd, noise_fraction=spec.noise_fraction,
                       age_range=spec.age_range, candidate_regions=free)
    return sites, {site.name: indices[site.offset_region] for site in sites}


def _ground_truth(spec: CohortSpec, draws: list[SubjectDraw], results: list[dict[str, Any]],
                  reference: dict[str, float], space: TemplateSpace,
                  sites: list[SiteSignature]) -> dict[str, Any]:
    by_label = {r["label"]: r for r in results}
    subjects = []
    for draw in draws:
        result = by_label[draw.label]
        fractions = {name: ml / result["brain_ml"]
                     for name, ml in result["regional_gm_ml"].items()}
        relative = {name: fractions[name] / reference[name] for name in FACTOR_REGIONS}
        subjects.append({
            "participant_id": f"sub-{draw.label}", "group": draw.group, "age": draw.age,
            "sex": draw.sex, **({"site": draw.site.name} if draw.site else {}),
            "head_scale": round(draw.head_scale, 4),
            "brain_volume_ml": round(result["brain_ml"], 2),
            "gm_volume_ml": round(result["gm_ml"], 2),
            "regional_gm_ml": {k: round(v, 3) for k, v in result["regional_gm_ml"].items()},
            "scores": factor_scores(spec, draw, relative),
        })
    groups = np.array([s["group"] for s in subjects])
    measured = {}
    for region in spec.regions:
        frac = np.array([s["regional_gm_ml"][region] / s["brain_volume_ml"] for s in subjects])
        measured[region] = cohens_d(frac[groups == "HC"], frac[groups == "MDD"])
    return {
        "synthetic": True,
        "spec": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(spec).items()},
        "mechanism": "GM partial-volume loss: regional GM replaced by CSF (T1w darkens there); "
                     "no deformation is planted",
        "planted_relative_gm_loss": spec.planted_loss,
        "measured_cohens_d": measured,
        "measured_cohens_d_definition": "(HC mean - MDD mean) / pooled SD of regional GM volume "
                                        "over brain volume, measured on the generated images",
        "factor_model": {
            "formula": "score = factor_group_shift*[MDD] + factor_weight*(g - 1)/regional_gm_sd "
                       "+ N(0, factor_noise_sd); g = regional GM/brain volume over the template's",
            "anchor_regions": FACTOR_REGIONS,
            "template_gm_fraction": reference,
        },
        "tissue_means": dict(zip(("CSF", "GM", "WM"), space.tissue_means.round(2).tolist())),
        **({"sites": [site.to_json() for site in sites],
            "site_model": "see bids_mdd/synth/sites.py: SiteSignature; a site changes the T1w "
                          "and the MNI-space inputs, never the true GM map"} if sites else {}),
        "subjects": subjects,
    }
