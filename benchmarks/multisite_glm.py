"""Site handling at the group level, on SYNTHETIC multi-site cohorts whose sites are confounded
with diagnosis (each site its own MDD fraction, 0.1-0.9, its own scanner GM scale and a GM
offset in a region of its own). Prints figures; asserts nothing.

Cohorts (``bids_mdd-synth`` with ``--sites``, GM rendered in MNI space, 4 mm native grid):

- ``effect``: the planted MDD effect (Cohen's d 1.0) and the sites' offsets;
- ``no-offset``: the same seed without site offsets (what smoothing spreads from the planted
  regions into the offset regions, for telling a site cluster from a planted one);
- ``null``: no MDD effect, the sites' offsets.

Analyses, each a fresh ``bids_mdd ... group``: no site handling; site as a GLM covariate;
``--harmonize site`` (ComBat, each voxel's estimates, site kept in the GLM);
``--harmonize site --harmonize-empirical-bayes``.

Per run: FDR voxels in all, the share of planted-region voxels found (mean over the planted
regions), FDR voxels in the sites' offset regions, the site variance before and after ComBat.

Run: ``.venv/bin/python benchmarks/multisite_glm.py [--n-mdd 20 --n-hc 20 --sites 4 --seed
21] [--out docs/results/multisite_glm.tsv]`` (alone on the machine; a few minutes).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
os.environ.setdefault("TEMPLATEFLOW_HOME", str(SHARED / "templateflow"))
os.environ.setdefault("TEMPLATEFLOW_AUTOUPDATE", "0")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bids_mdd.atlas import atlas_labels_on_grid, load_aal2  # noqa: E402
from bids_mdd.bids.names import derivative_path  # noqa: E402
from bids_mdd.cli.run import main as bids_mdd  # noqa: E402
from bids_mdd.spaces.grids import CLASSIFIER_GRID  # noqa: E402
from bids_mdd.synth.mni import MNI_DIR  # noqa: E402
from multisite_common import base_spec, cohort_parser, generate_quietly, report  # noqa: E402

ANALYSES = {"none": [], "site covariate": ["--covariates", "age", "sex", "TIV", "site"],
            "ComBat": ["--harmonize", "site"],
            "ComBat, empirical Bayes": ["--harmonize", "site", "--harmonize-empirical-bayes"]}
FDR = {"space": "MNI152NLin2009cAsym", "res": "1p5", "contrast": "MDDvsHC", "desc": "FDR",
       "suffix": "mask"}


def _regions(truth: dict) -> tuple[list[np.ndarray], np.ndarray]:
    atlas = load_aal2()
    stems = atlas.hemisphere_stems()
    labels = atlas_labels_on_grid(CLASSIFIER_GRID.affine, CLASSIFIER_GRID.shape)
    planted = [np.isin(labels, idx) for idx in atlas.indices_of(truth["spec"]["regions"]).values()]
    offsets = {site["offset_region"] for site in truth["sites"]}
    return planted, np.isin(labels, [i for i, stem in stems.items() if stem in offsets])


def _run(bids: Path, work: Path, analysis: str) -> dict:
    out = work / analysis.replace(" ", "_").replace(",", "")
    shutil.copytree(bids / MNI_DIR, out)
    (out / "dataset_description.json").unlink()
    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        code = bids_mdd([str(bids), str(out), "group", "--skip-bids-validation",
                         *ANALYSES[analysis]])
    seconds = time.perf_counter() - start
    if code != 0:
        return {"analysis": analysis, "exit": code}
    truth = json.loads((bids / "ground_truth.json").read_text())
    planted, offsets = _regions(truth)
    path = derivative_path(out, **FDR)
    fdr = np.asarray(nib.load(path).dataobj) > 0
    parameters = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
    parameters = parameters["Parameters"]
    return {"analysis": analysis, "exit": code, "fdr_voxels": int(fdr.sum()),
            "planted_found": round(float(np.mean([fdr[m].mean() for m in planted])), 3),
            "offset_region_voxels": int(fdr[offsets].sum()),
            "site_variance_before": parameters.get("SiteVarianceExplainedBefore"),
            "site_variance_after": parameters.get("SiteVarianceExplainedAfter"),
            "seconds": round(seconds, 1)}


def main() -> int:
    args = cohort_parser(__doc__.splitlines()[0], n_per_group=20, effect_size=1.0).parse_args()
    spec = base_spec(args, args.sites)
    cohorts = {"effect": spec, "no-offset": replace(spec, site_offset=0.0),
               "null": replace(spec, effect_size=0.0)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bids_mdd-multisite-") as tmp:
        for name, cohort in cohorts.items():
            bids = Path(tmp) / name
            generate_quietly(bids, cohort)
            counts = pd.read_csv(bids / "participants.tsv", sep="\t").groupby(
                ["site", "group"]).size().unstack(fill_value=0)
            print(f"\n{name}: SYNTHETIC, {args.n_mdd} MDD + {args.n_hc} HC over "
                  f"{args.sites} sites (MDD/HC per site: "
                  + ", ".join(f"{s} {r.get('MDD', 0)}/{r.get('HC', 0)}"
                              for s, r in counts.iterrows()) + ")", flush=True)
            for analysis in ANALYSES:
                row = {"cohort": name, **_run(bids, Path(tmp) / f"{name}-out", analysis)}
                rows.append(row)
                print("  " + ", ".join(f"{k} {v}" for k, v in row.items() if k != "cohort"),
                      flush=True)
    report(rows, f"seed {args.seed}, d = {args.effect_size}; planted_found: mean share of "
                 "each planted region's voxels at FDR q < 0.05; offset_region_voxels: FDR "
                 "voxels in the sites' offset regions (compare with the no-offset cohort)",
           args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
