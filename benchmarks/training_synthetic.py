"""The model must-shows of issue 4 on SYNTHETIC cohorts, printed as figures (asserts nothing).

1. strong effect (D = 1.5, 40 MDD + 40 HC): 3D DenseNet121 cross-validated accuracy, with the
   papers' baselines on the same folds (``--compare``); the same at D = 2.0;
2. null cohort (D = 0, 40 + 40): accuracy and its label-permutation p-value;
3. symptom-factor regression (DFRN on the T1w) on the strong cohort, Pearson r per factor, with
   the ridge baseline on regional GM volumes, and how strongly each score shows in the images
   (its correlation with the anchor region's share of the GM map);
4. transfer: a small cohort (15 + 15) from scratch and fine-tuned from the strong cohort's
   classifier (backbone LR x 0.001).
Inputs are rendered directly in MNI space by ``bids_mdd-synth --mni-derivatives`` and trained
on reduced grids (zoom 0.25 for the classifier, 0.5 for the DFRN) at small width: CPU-sized,
not the papers' full size.

Run: ``.venv/bin/python benchmarks/training_synthetic.py --root DIR`` (resumable: cohorts and
finished folds in DIR are reused). Hours on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TEMPLATEFLOW_HOME", str(REPO.parent / "shared" / "templateflow"))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import pearsonr  # noqa: E402

from bids_mdd.atlas import atlas_labels_on_grid, load_aal2  # noqa: E402
from bids_mdd.bids.names import derivative_path  # noqa: E402
from bids_mdd.cli.synth import main as synth  # noqa: E402
from bids_mdd.cli.train import main as train  # noqa: E402
from bids_mdd.models.inputs import GM_INPUT  # noqa: E402
from bids_mdd.spaces.grids import CLASSIFIER_GRID  # noqa: E402
from bids_mdd.synth.model import FACTOR_REGIONS  # noqa: E402

CLASSIFIER = ["--zoom", "0.25", "--width", "8", "--growth-rate", "4", "--epochs", "15",
              "--lr", "0.001", "--seed", "0", "--no-progress"]
REGRESSOR = ["--task", "regression", "--zoom", "0.5", "--width", "4", "--epochs", "15",
             "--folds", "5", "--repeats", "1", "--seed", "0", "--no-progress"]
COHORTS = {
    "strong": ["--n-mdd", "40", "--n-hc", "40", "--seed", "101", "--effect-size", "1.5",
               "--factor-weight", "-1.0", "--factor-noise-sd", "0.5"],
    "strong-d2": ["--n-mdd", "40", "--n-hc", "40", "--seed", "105", "--effect-size", "2.0"],
    "null": ["--n-mdd", "40", "--n-hc", "40", "--seed", "102", "--effect-size", "0"],
    "small": ["--n-mdd", "15", "--n-hc", "15", "--seed", "104", "--effect-size", "1.5"],
}


def cohort(root: Path, name: str) -> tuple[str, str]:
    path = root / name
    if not (path / "participants.tsv").exists():
        if synth([str(path), "--resolution", "3", "--mni-derivatives", *COHORTS[name]]):
            raise SystemExit(f"could not generate {path}")
    return str(path / "derivatives" / "bids_mdd-synthetic"), str(path / "participants.tsv")


def run(root: Path, data: tuple[str, str], name: str, *options: str) -> dict:
    models = root / "models"
    done = (models / name / "model.json").exists() or any(models.glob(f"{name}-*/model.json"))
    if not done:
        rc = train([data[0], str(models), "--participants", data[1], "--name", name,
                    "-w", str(root / "work"), *options])
        if rc:
            raise SystemExit(f"training {name} failed ({rc})")
    meta = models / name / "model.json"
    return json.loads(meta.read_text()) if meta.exists() else {}


def line(meta: dict, metric: str) -> str:
    cv = meta["metrics"]["cross_validation"][metric]
    return f"{cv['mean']:.3f} ± {cv['sd']:.3f} (n = {cv['n_folds']} folds)"


def main() -> None:
    parser = argparse.ArgumentParser(description="issue 4 must-shows on synthetic cohorts")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--parts", default="strong,strong-d2,null,regression,transfer",
                        help="comma-separated subset to run (e.g. two processes in parallel)")
    args = parser.parse_args()
    root, parts = args.root.resolve(), set(args.parts.split(","))
    strong, null, small = (cohort(root, n) for n in ("strong", "null", "small"))
    if "strong" in parts:
        show_strong(root, strong)
    if "strong-d2" in parts:
        meta = run(root, cohort(root, "strong-d2"), "strong-d2-densenet121", *CLASSIFIER,
                   "--permutations", "1000")
        print("SYNTHETIC cohort with D = 2.0 (40 + 40), same settings:")
        print(f"  accuracy {line(meta, 'accuracy')}, AUC {line(meta, 'auc')}, "
              f"permutation p {meta['metrics']['permutation']['p_value']:.4f}")
    if "null" in parts:
        show_null(root, null)
    if "regression" in parts:
        show_regression(root, strong)
    if "transfer" in parts:
        show_transfer(root, strong, small)


def show_strong(root: Path, strong: tuple[str, str]) -> None:
    meta = run(root, strong, "strong-densenet121", *CLASSIFIER, "--permutations", "1000",
               "--compare")
    print("SYNTHETIC strong cohort (D = 1.5, 40 + 40), 3D DenseNet121 width 8, zoom 0.25:")
    print(f"  accuracy {line(meta, 'accuracy')}, AUC {line(meta, 'auc')}, "
          f"permutation p {meta['metrics']['permutation']['p_value']:.4f}")
    print((root / "models" / "strong-densenet121" / "comparison.md").read_text())


def show_null(root: Path, null: tuple[str, str]) -> None:
    meta = run(root, null, "null-densenet121", *CLASSIFIER, "--permutations", "1000")
    perm = meta["metrics"]["permutation"]
    print("SYNTHETIC null cohort (D = 0, 40 + 40):")
    print(f"  accuracy {line(meta, 'accuracy')}, AUC {line(meta, 'auc')}, permutation p "
          f"{perm['p_value']:.4f} (null {perm['null_mean']:.3f} ± {perm['null_sd']:.3f})")


def image_tie(strong: tuple[str, str]) -> dict[str, float]:
    """Pearson r, across the cohort, between each factor's score and the share of the GM map's
    GM in the factor's anchor region: how strongly the score shows in the images at all."""
    labels = atlas_labels_on_grid(CLASSIFIER_GRID.affine, CLASSIFIER_GRID.shape)
    indices = load_aal2().indices_of(FACTOR_REGIONS.values())
    table = pd.read_csv(strong[1], sep="\t")
    shares: dict[str, list[float]] = {factor: [] for factor in FACTOR_REGIONS}
    for participant in table["participant_id"]:
        path = derivative_path(strong[0], subject=participant[4:], **GM_INPUT.entities)
        gm = np.asarray(nib.load(path).dataobj)
        for factor, region in FACTOR_REGIONS.items():
            shares[factor].append(gm[np.isin(labels, indices[region])].sum() / gm.sum())
    return {f: float(pearsonr(shares[f], table[f])[0]) for f in FACTOR_REGIONS}


def show_regression(root: Path, strong: tuple[str, str]) -> None:
    print("SYNTHETIC factor regression on the strong cohort (DFRN width 4 on the T1w, zoom 0.5)")
    run(root, strong, "strong-dfrn-z50", *REGRESSOR, "--compare")
    tie = image_tie(strong)
    for factor in ("Anhedonia", "Appetite", "Sleep", "Suicidality", "Anxiety"):
        bundle = root / "models" / f"strong-dfrn-z50-{factor}"
        meta = json.loads((bundle / "model.json").read_text())
        print(f"  {factor:12s} r {line(meta, 'pearson_r')}; in the images, r(score, "
              f"{FACTOR_REGIONS[factor]} share of GM) = {tie[factor]:.3f}")
        if (bundle / "comparison.tsv").exists():
            print("   ", (bundle / "comparison.tsv").read_text().splitlines()[-1])


def show_transfer(root: Path, strong: tuple[str, str], small: tuple[str, str]) -> None:
    source = str(root / "models" / "strong-densenet121")
    scratch = run(root, small, "small-scratch", *CLASSIFIER)
    transfer = run(root, small, "small-transfer", *CLASSIFIER, "--pretrain-from", source,
                   "--allow-shared-ids")
    print("SYNTHETIC transfer (small cohort 15 + 15, D = 1.5; source: the strong cohort):")
    print(f"  from scratch:  accuracy {line(scratch, 'accuracy')}, AUC {line(scratch, 'auc')}")
    print(f"  fine-tuned:    accuracy {line(transfer, 'accuracy')}, AUC {line(transfer, 'auc')}")


if __name__ == "__main__":
    main()
