"""How often each bundle's domain-shift flag fires: on its own cross-validation held-out inputs
(the calibration), and on derivatives of other cohorts (other scanners and sites, synthetic
subjects). Prints one row per bundle and cohort; asserts nothing.

Run: ``.venv/bin/python benchmarks/domain_shift.py --models DIR [DIR ...]
--cohort NAME=DERIVATIVES_DIR [...]``, e.g. ``--cohort whole-head=../cohort/whole-head/derivatives
--cohort synthetic=/tmp/synth/derivatives/bids_mdd-synthetic`` (``bids_mdd-synth
--mni-derivatives`` renders synthetic model inputs directly in MNI space).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from bids_mdd.models.bundle import find_bundles
from bids_mdd.models.inputs import load_input
from bids_mdd.training.data import find_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, nargs="+", required=True)
    parser.add_argument("--cohort", action="append", default=[], metavar="NAME=DIR")
    args = parser.parse_args()
    rows = []
    for bundle in [b for path in args.models for b in find_bundles(path)]:
        domain = bundle.domain_model()
        if domain is None:
            print(f"{bundle.name}: no domain model")
            continue
        calibration = domain.calibration or {}
        rows.append({"bundle": bundle.name, "cohort": "own CV held-out (calibration)",
                     "n": calibration.get("n_heldout"),
                     "flagged": calibration.get("heldout_fraction_flagged"),
                     "median distance": calibration.get("heldout_median"),
                     "threshold": domain.threshold})
        spec = bundle.input_spec
        for item in args.cohort:
            name, folder = item.split("=", 1)
            paths = [sample.path for sample in find_samples(folder, spec)]
            distances = domain.distances(np.stack([load_input(p, spec) for p in paths]))
            rows.append({"bundle": bundle.name, "cohort": name, "n": len(paths),
                         "flagged": float(np.mean(distances > domain.threshold)),
                         "median distance": float(np.median(distances)),
                         "threshold": domain.threshold})
            for path, distance in zip(paths, distances):
                print(f"  {bundle.name} {name} {path.name}: {distance:.1f}")
    with pd.option_context("display.width", 200):
        print(pd.DataFrame(rows).round(3).to_markdown(index=False))


if __name__ == "__main__":
    main()
