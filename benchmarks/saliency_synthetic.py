"""Choosing the classifier's saliency map on a SYNTHETIC selection cohort (not the evaluation one).

Guided backpropagation is known to reconstruct image structure whatever the model has learnt
(Adebayo et al., 2018, "Sanity checks for saliency maps"). This script asks, for the D = 1.5
classifier of ``benchmarks/training_synthetic.py``, on a cohort rendered with another seed than
both the training and the held-out evaluation cohort (10 + 10, seed 202):

1. does the model rely on the planted regions? P(MDD) of the MDD subjects when the planted
   regions' voxels are replaced by the HC mean, against the same for other AAL2 regions of about
   the same volume (occlusion);
2. which candidate map shows that: the share of the top 1 % voxels (inside the atlas brain) in
   the planted regions over their share of it, for guided backpropagation |R| and for the
   plain gradient of the MDD log-odds, signed (-dlogit/dGM: where more GM means less MDD). Both
   cost one forward and one backward pass per fold model; costlier methods (SmoothGrad,
   integrated gradients) are left out for the full-size budget (issue 5: <= 15 s per map).

Run: ``.venv/bin/python benchmarks/saliency_synthetic.py --root DIR``. Prints figures; asserts
nothing.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TEMPLATEFLOW_HOME", str(REPO.parent / "shared" / "templateflow"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from bids_mdd.atlas import atlas_labels_on_grid, load_aal2  # noqa: E402
from bids_mdd.bids.names import derivative_path  # noqa: E402
from bids_mdd.models.attention import input_gradient  # noqa: E402
from bids_mdd.models.inference import load_models  # noqa: E402
from bids_mdd.models.inputs import normalize, prepare, read_on_grid, zoom_tensor  # noqa: E402
from bids_mdd.synth.model import DEFAULT_REGIONS  # noqa: E402
from inference_synthetic import cohort_args, concentration, rendered  # noqa: E402 (benchmarks/)

SELECTION = cohort_args(10, 202)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    args = parser.parse_args()
    root = args.root.resolve()
    cohort = rendered(root / "selection", SELECTION)
    model = load_models([root / "models" / "strong-densenet121"], "cpu")[0]
    grid, aal = model.spec.grid, load_aal2()
    labels = atlas_labels_on_grid(grid.affine, grid.shape)
    planted_ids = [i for ids in aal.indices_of(DEFAULT_REGIONS).values() for i in ids]
    planted, brain = np.isin(labels, planted_ids), labels > 0
    rng = np.random.default_rng(0)
    control_ids: list[int] = []
    for index in rng.permutation([i for i in aal.labels["index"] if i not in planted_ids]):
        if np.isin(labels, control_ids).sum() >= planted.sum():
            break
        control_ids.append(int(index))
    control = np.isin(labels, control_ids)
    table = pd.read_csv(cohort / "participants.tsv", sep="\t")
    output_dir = cohort / "derivatives" / "bids_mdd-synthetic"
    data = {p: read_on_grid(derivative_path(output_dir, subject=p[4:], **model.spec.entities),
                            model.spec) for p in table["participant_id"]}
    hc_mean = np.mean([data[p] for p, g in zip(table["participant_id"], table["group"])
                       if g != "MDD"], axis=0)

    def p_mdd(image: np.ndarray) -> float:
        x = torch.from_numpy(prepare(image, model.spec))[None, None]
        with torch.no_grad():
            return float(np.mean([torch.softmax(net(x), 1)[0, 1].item() for net in model.nets]))

    occlusion = []
    maps: dict[str, list[np.ndarray]] = {"guided |R|": [], "-gradient (signed)": []}
    for participant, group in zip(table["participant_id"], table["group"]):
        image = data[participant]
        if group == "MDD":
            rows = [p_mdd(image)]
            for region in (planted, control):
                occluded = image.copy()
                occluded[region] = hc_mean[region]
                rows.append(p_mdd(occluded))
            occlusion.append(rows)
        x = torch.from_numpy(normalize(image, model.spec))[None, None]

        def zoom(t: torch.Tensor) -> torch.Tensor:
            return zoom_tensor(t, model.spec.zoom)

        guided = plain = 0
        for net in model.nets:
            guided = guided + input_gradient(net, x, lambda o: o[:, -1] - o[:, 0], zoom)[1]
            plain = plain + input_gradient(net, x, lambda o: o[:, -1] - o[:, 0], zoom,
                                           guided=False)[1]
        maps["guided |R|"].append(guided[0, 0].abs().numpy())
        maps["-gradient (signed)"].append(-plain[0, 0].numpy())
    original, planted_p, control_p = np.mean(occlusion, axis=0)
    print(f"SYNTHETIC selection cohort (10 + 10, seed 202), {model.bundle.name}:")
    print(f"  occlusion, MDD subjects: P(MDD) {original:.3f}; planted regions set to the HC mean "
          f"{planted_p:.3f}; {len(control_ids)} other regions of similar volume {control_p:.3f}")
    print(f"  concentration in the planted regions (atlas brain; share "
          f"{planted.sum() / brain.sum():.3f}, ceiling {brain.sum() / planted.sum():.2f}):")
    for name, values in maps.items():
        ratios = [concentration(m, planted, brain) for m in values]
        print(f"    {name:20s} mean map {concentration(np.mean(values, 0), planted, brain):.2f}, "
              f"per subject median {np.median(ratios):.2f}")


if __name__ == "__main__":
    main()
