"""Site handling in cross-validation, on SYNTHETIC multi-site cohorts whose sites are confounded
with diagnosis. Prints figures; asserts nothing.

The classifier is the regional-GM ridge baseline (``RegionRidge``, as ``bids_mdd-train
--compare`` runs it) on the training grid (zoom 0.25), fast enough for every combination;
``bids_mdd-train --harmonize`` applies the same fold-wise ComBat to the networks' inputs.

Cohorts (``bids_mdd-synth``, GM rendered in MNI space):

- ``one site``: the planted effect (Cohen's d ``--effect-size``) without sites: the effect's
  own accuracy, the reference;
- ``sites``: the same seed with ``--sites`` sites (MDD fraction 0.1-0.9, scanner GM scales
  and offsets);
- ``null sites``: no MDD effect, the same sites.

Harmonisation: none; ComBat fitted on all participants before splitting, diagnosis kept (the
leak); ComBat inside each fold over the site alone (``FoldHarmonizer``), with each voxel's own
site estimates (the default) and with empirical Bayes pooling them across voxels.
Cross-validation: stratified 5 folds (sites mixed) and leave-site-out. Per row: balanced
accuracy (mean ± SD over folds), AUC, and the label-permutation p of the pooled balanced
accuracy (1000 permutations within each fold's sites, which keep each site's diagnosis mix: a
prediction from the site alone gets p ~ 0.5).

Run: ``.venv/bin/python benchmarks/multisite_classifier.py [--n-mdd 40 --n-hc 40 --sites 4
--seed 21 --effect-size 0.8] [--out TABLE.tsv]`` (alone). With
``--seeds 21 22 ...`` it runs one cohort per seed, appends each seed's rows to ``--out`` as it
ends (a rerun skips the seeds there) and prints each row's spread over the seeds.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import replace
from functools import partial
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
os.environ.setdefault("TEMPLATEFLOW_HOME", str(SHARED / "templateflow"))
os.environ.setdefault("TEMPLATEFLOW_AUTOUPDATE", "0")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bids_mdd.atlas import atlas_labels_on_grid  # noqa: E402
from bids_mdd.harmonize import fit_combat  # noqa: E402
from bids_mdd.metrics import permutation_p_value, permuted_outputs_null  # noqa: E402
from bids_mdd.models.inputs import GM_INPUT  # noqa: E402
from bids_mdd.models.task import Task  # noqa: E402
from bids_mdd.synth.mni import MNI_DIR  # noqa: E402
from bids_mdd.synth.model import CohortSpec  # noqa: E402
from bids_mdd.training.baselines import RegionRidge  # noqa: E402
from bids_mdd.training.cv import (  # noqa: E402
    cross_validate_estimator,
    fold_metrics,
    permutation_blocks,
)
from bids_mdd.training.data import find_samples, load_volumes  # noqa: E402
from bids_mdd.training.harmonization import FoldHarmonizer  # noqa: E402
from bids_mdd.training.splits import leave_site_out_folds, make_folds  # noqa: E402
from multisite_common import base_spec, cohort_parser, generate_quietly, report  # noqa: E402

SPEC = replace(GM_INPUT, zoom=0.25, normalization="none")
PERMUTATIONS = 1000
#: Each voxel's own site estimates (the default of ``--harmonize``), except where named.
HARMONISATIONS = ("none", "ComBat on everyone (leak)", "ComBat in folds",
                  "ComBat in folds, empirical Bayes")


def _cohort(root: Path, spec: CohortSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    generate_quietly(root, spec)
    table = pd.read_csv(root / "participants.tsv", sep="\t", dtype=str).set_index(
        "participant_id")
    samples = find_samples(root / MNI_DIR, SPEC)
    volumes, _ = load_volumes(samples, SPEC, progress=False)
    y = np.array([table.at[f"sub-{s.participant}", "group"] == "MDD" for s in samples], int)
    sites = np.array([table.at[f"sub-{s.participant}", "site"] if "site" in table else "one"
                      for s in samples])
    return volumes, y, sites, samples


def _row(volumes, y, sites, samples, harmonisation: str, scheme: str, seed: int) -> dict:
    participants = np.array([s.participant for s in samples])
    if scheme == "leave-site-out":
        folds = leave_site_out_folds(y, sites, participants, Task.CLASSIFICATION, 0.0, seed)
    else:
        folds = make_folds(y, participants, Task.CLASSIFICATION, 5, val_fraction=0.0, seed=seed)
    inputs, fold_inputs = volumes, None
    if harmonisation == "ComBat on everyone (leak)":
        flat = volumes.reshape(len(volumes), -1)
        _, flat = fit_combat(flat, sites, pd.DataFrame({"dx": y}), categorical=["dx"],
                             empirical_bayes=False)
        inputs = flat.reshape(volumes.shape).astype(np.float32)
    elif harmonisation.startswith("ComBat in folds"):
        fold_inputs = FoldHarmonizer(volumes, sites,
                                     empirical_bayes=harmonisation.endswith("empirical Bayes"))
    labels = atlas_labels_on_grid(SPEC.affine, SPEC.shape)
    voxel_ml = float(abs(np.linalg.det(SPEC.affine[:3, :3]))) / 1000
    cv = cross_validate_estimator(partial(RegionRidge, labels, voxel_ml, Task.CLASSIFICATION),
                                  inputs, y, samples, folds, Task.CLASSIFICATION, 0.0,
                                  fold_inputs=fold_inputs)
    truth, score = cv.predictions["y_true"].to_numpy(), cv.predictions["score"].to_numpy()

    def balanced(t: np.ndarray, s: np.ndarray) -> float:
        return fold_metrics(Task.CLASSIFICATION, t, s, 0.0)["balanced_accuracy"]

    observed = balanced(truth, score)
    site_of = dict(zip((f"sub-{s.participant}" for s in samples), sites))
    null = permuted_outputs_null(truth, score, permutation_blocks(cv.predictions, site_of),
                                 PERMUTATIONS, seed, balanced)
    per_fold = cv.per_fold["balanced_accuracy"]
    return {"harmonisation": harmonisation, "cv": scheme, "folds": len(folds),
            "balanced_accuracy": f"{per_fold.mean():.3f} ± {per_fold.std(ddof=1):.3f}",
            "pooled": round(observed, 3),
            "auc": round(fold_metrics(Task.CLASSIFICATION, truth, score, 0.0)["auc"], 3),
            "p": round(permutation_p_value(observed, null), 4)}


def _one_seed(args, seed: int) -> list[dict]:
    """Every cohort, harmonisation and cross-validation of one seed."""
    base = replace(base_spec(args, 0), seed=seed)
    cohorts = {"one site": base, "sites": replace(base, n_sites=args.sites),
               "null sites": replace(base, n_sites=args.sites, effect_size=0.0)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bids_mdd-multisite-cv-") as tmp:
        for name, spec in cohorts.items():
            volumes, y, sites, samples = _cohort(Path(tmp) / name.replace(" ", "-"), spec)
            plans = ([("none", "stratified")] if spec.n_sites == 0 else
                     [(h, s) for h in HARMONISATIONS for s in ("stratified", "leave-site-out")])
            for harmonisation, scheme in plans:
                row = {"cohort": name, **_row(volumes, y, sites, samples, harmonisation,
                                              scheme, seed)}
                rows.append(row)
                print("  " + ", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    return rows


def _sweep(args) -> None:
    """``--seeds``: each seed's rows appended to ``--out`` as it finishes (a rerun skips the
    seeds there), then the spread over seeds of each row's pooled balanced accuracy."""
    if args.out is None:
        raise SystemExit("--seeds needs --out (the table a rerun resumes from)")
    done = pd.read_csv(args.out, sep="\t") if args.out.is_file() else pd.DataFrame()
    for seed in args.seeds:
        if len(done) and seed in set(done["seed"]):
            print(f"seed {seed}: in {args.out}, skipped")
            continue
        rows = pd.DataFrame(_one_seed(args, seed)).assign(seed=seed)
        done = pd.concat([done, rows], ignore_index=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        done.to_csv(args.out, sep="\t", index=False)
    kept = done[done["seed"].isin(args.seeds)]
    summary = kept.groupby(["cohort", "harmonisation", "cv"], sort=False).agg(
        seeds=("seed", "size"), pooled_mean=("pooled", "mean"), pooled_sd=("pooled", "std"),
        auc_mean=("auc", "mean"), p_below_005=("p", lambda p: int((p < 0.05).sum())))
    print(f"\nSYNTHETIC, {args.n_mdd} MDD + {args.n_hc} HC, d = {args.effect_size}, "
          f"{args.sites} sites, seeds {', '.join(map(str, args.seeds))}: pooled balanced "
          "accuracy over seeds (mean, SD), and how many seeds gave p < 0.05")
    print(summary.round(3).reset_index().to_markdown(index=False))


def main() -> int:
    parser = cohort_parser(__doc__.splitlines()[0], n_per_group=40, effect_size=0.8)
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="several cohorts, one per seed, appended to --out as each ends")
    args = parser.parse_args()
    if args.seeds:
        _sweep(args)
        return 0
    rows = _one_seed(args, args.seed)
    report(rows, f"SYNTHETIC, {args.n_mdd} MDD + {args.n_hc} HC, d = {args.effect_size}, "
                 f"{args.sites} sites, seed {args.seed}; RegionRidge on GM at zoom 0.25; p: "
                 f"{PERMUTATIONS} label permutations within folds", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
