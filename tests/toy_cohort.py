"""A toy cohort of derivative-shaped GM maps for training and inference tests (SYNTHETIC)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bids_mdd.bids.names import derivative_path
from bids_mdd.models.inputs import GM_INPUT
from bids_mdd.spaces.grids import CLASSIFIER_GRID

#: Voxel slices of the block whose GM is lower in MDD, and of the block tied to 'Score'.
MDD_BLOCK = np.s_[30:60, 40:80, 40:70]
SCORE_BLOCK = np.s_[70:100, 60:100, 50:80]


def write_cohort(root: Path, labels: list[str], n_mdd: int, n_hc: int, seed: int,
                 effect: float = 0.25, synthetic: bool = True) -> Path:
    """GM maps on the classifier grid: an ellipsoid 'brain', a block of lower GM in MDD, and a
    'Score' column tied to the GM of a second block. SYNTHETIC test data."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in CLASSIFIER_GRID.shape], indexing="ij")
    brain = (x**2 + y**2 + z**2) < 0.8
    groups = np.array(["MDD"] * n_mdd + ["HC"] * n_hc)[rng.permutation(n_mdd + n_hc)]
    rows = []
    deriv = root / "derivatives"
    for label, group in zip(labels, groups):
        coarse = rng.normal(0, 0.05, (11, 13, 11))
        noise = np.kron(coarse, np.ones((11, 12, 11)))[:121, :145, :121]
        gm = brain * (0.5 + noise)
        if group == "MDD":
            gm[MDD_BLOCK] -= effect
        score_gm = rng.normal(0, 1)
        gm[SCORE_BLOCK] += 0.1 * score_gm
        path = derivative_path(deriv, subject=label, **GM_INPUT.entities)
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(CLASSIFIER_GRID.image(gm.astype(np.float32)), path)
        rows.append({"participant_id": f"sub-{label}", "group": group,
                     "Score": round(2 * score_gm + rng.normal(0, 0.3), 3)})
    (deriv / "dataset_description.json").write_text(json.dumps(
        {"Name": "test", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
         "SyntheticData": synthetic}))
    pd.DataFrame(rows).to_csv(root / "participants.tsv", sep="\t", index=False)
    return root
