"""Issue 5's must-show on SYNTHETIC data: bundles trained on the strong cohort, applied to a
held-out cohort the way the participant level applies them.

Needs the bundles of ``benchmarks/training_synthetic.py --root DIR`` (the D = 1.5 classifier
``strong-densenet121`` and the DFRNs ``strong-dfrn-z50-<Factor>``). Renders a new cohort (other
seed, so other subjects: 20 MDD + 20 HC, D = 1.5, the same factor model), runs
:func:`predict_participant` on each subject, and prints

- the classifier's AUC and accuracy of P(MDD) on the held-out subjects, and each factor's
  Pearson r between prediction and the generator's score;
- how the attention maps concentrate: the share of the top 1 % attention voxels of the brain
  (every AAL2 label on the map's grid) lying in the planted regions, divided by those regions'
  share of the brain (so the ceiling is 1 / that share); for the
  mean map over subjects and per subject (median, range). Target (issue): >= 3 for the
  classifier. Planted regions: the generator's five MDD regions (AAL2) for the classifier, each
  factor's anchor region for its DFRN.

Run: ``.venv/bin/python benchmarks/inference_synthetic.py --root DIR``. Prints figures; asserts
nothing.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TEMPLATEFLOW_HOME", str(REPO.parent / "shared" / "templateflow"))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import pearsonr  # noqa: E402
from sklearn.metrics import accuracy_score, roc_auc_score  # noqa: E402

from bids_mdd.atlas import atlas_labels_on_grid, load_aal2  # noqa: E402
from bids_mdd.bids.names import derivative_path  # noqa: E402
from bids_mdd.bids.outputs import PREDICTIONS, T1wOutputs, attention_entities  # noqa: E402
from bids_mdd.cli.synth import main as synth  # noqa: E402
from bids_mdd.models.inference import LoadedModel, load_models  # noqa: E402
from bids_mdd.participant.predictions import predict_participant, up_to_date  # noqa: E402
from bids_mdd.synth.model import DEFAULT_REGIONS, FACTOR_REGIONS, FACTORS  # noqa: E402


def cohort_args(n_per_group: int, seed: int) -> list[str]:
    """bids_mdd-synth options of a cohort like the training one (D = 1.5, same factor model)."""
    return ["--n-mdd", str(n_per_group), "--n-hc", str(n_per_group), "--seed", str(seed),
            "--effect-size", "1.5", "--factor-weight", "-1.0", "--factor-noise-sd", "0.5",
            "--resolution", "3", "--mni-derivatives"]


HELD_OUT = cohort_args(20, 201)


def rendered(cohort: Path, options: list[str]) -> Path:
    """``cohort``, rendered by bids_mdd-synth with ``options`` unless it already exists."""
    if not (cohort / "participants.tsv").exists() and synth([str(cohort), *options]):
        raise SystemExit(f"could not render {cohort}")
    return cohort


def concentration(attention: np.ndarray, planted: np.ndarray, brain: np.ndarray) -> float:
    """Share of the top 1 % attention voxels of the brain in ``planted`` over its brain share."""
    top = (attention >= np.percentile(attention[brain], 99)) & brain
    return float((top & planted).sum() / top.sum() / ((planted & brain).sum() / brain.sum()))


def region_masks(model: LoadedModel, regions: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The planted regions and the brain (every AAL2 label) on the model's grid."""
    grid = model.spec.grid
    labels = atlas_labels_on_grid(grid.affine, grid.shape)
    indices = [i for idx in load_aal2().indices_of(regions).values() for i in idx]
    return np.isin(labels, indices), labels > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    args = parser.parse_args()
    root = args.root.resolve()
    cohort = rendered(root / "held-out", HELD_OUT)
    output_dir = cohort / "derivatives" / "bids_mdd-synthetic"
    bundles = [root / "models" / "strong-densenet121",
               *(root / "models" / f"strong-dfrn-z50-{f}" for f in FACTORS)]
    models = load_models(bundles, "cpu")
    truth = pd.read_csv(cohort / "participants.tsv", sep="\t")
    subjects = [p[4:] for p in truth["participant_id"]]
    for subject in subjects:
        if not up_to_date(T1wOutputs(output_dir, {"subject": subject}), models):
            predict_participant(T1wOutputs(output_dir, {"subject": subject}), models, "cpu")
    table = pd.concat(
        pd.read_csv(derivative_path(output_dir, subject=s, **PREDICTIONS), sep="\t")
        .assign(participant_id=f"sub-{s}") for s in subjects).merge(truth, on="participant_id")
    mdd = table[table.target == "MDD"]
    is_mdd = mdd["group"] == "MDD"
    print(f"SYNTHETIC held-out cohort (20 MDD + 20 HC, D = 1.5, seed 201), "
          f"{models[0].bundle.name} ({len(models[0].nets)} fold models):")
    print(f"  AUC {roc_auc_score(is_mdd, mdd['value']):.3f}, accuracy "
          f"{accuracy_score(is_mdd, mdd['value'] > 0.5):.3f}")
    for model in models[1:]:
        rows = table[table.target == model.target]
        r, p = pearsonr(rows["value"], rows[model.target])
        print(f"  {model.target:12s} Pearson r {r:.3f} (p {p:.2g})")
    print("attention concentration in the AAL2 brain (top 1 % share / volume share; target >= 3):")
    for model, regions in zip(models, [list(DEFAULT_REGIONS),
                                       *([FACTOR_REGIONS[f]] for f in FACTORS)]):
        planted, brain = region_masks(model, regions)
        entities = attention_entities(model.target, model.spec.entities["res"])
        maps = [np.asarray(nib.load(derivative_path(output_dir, subject=s, **entities)).dataobj)
                for s in subjects]
        ratios = [concentration(m, planted, brain) for m in maps]
        share = (planted & brain).sum() / brain.sum()
        print(f"  {model.target:12s} in {'+'.join(regions)} ({share:.3f} of the brain): mean map "
              f"{concentration(np.mean(maps, axis=0), planted, brain):.2f}, per subject median "
              f"{np.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
