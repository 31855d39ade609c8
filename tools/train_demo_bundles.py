"""Train the demo model bundles shipped in ``bids_mdd/data/models/demo/`` (SYNTHETIC data
only; ``--models demo``).

Generates a synthetic cohort with model inputs rendered in MNI space, then trains, at small
width on reduced grids, the MDD classifier (``demo-synthetic-densenet121``) and one DFRN per
symptom factor (``demo-synthetic-dfrn-<Factor>``). Their model.json says "synthetic data, not
for clinical use": they exist so that the participant level runs end to end out of the box.

Run: ``.venv/bin/python tools/train_demo_bundles.py [--out bids_mdd/data/models/demo]``
(about 15-25 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TEMPLATEFLOW_HOME", str(REPO.parent / "shared" / "templateflow"))

from bids_mdd.cli.synth import main as synth_main  # noqa: E402
from bids_mdd.cli.train import main as train_main  # noqa: E402

SEED = 2026
COMMON = ["--folds", "5", "--repeats", "1", "--seed", str(SEED), "--no-progress",
          "--overwrite", "--model-version", "0.1.0-demo", "--permutations", "1000",
          "--site-name", "synthetic generator",
          "--known-limit", "toy width on reduced grids: a demonstration of the pipeline, not a "
                           "model of depression"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bids_mdd" / "data" / "models" / "demo")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cohort = Path(tmp) / "cohort"
        rc = synth_main([str(cohort), "--n-mdd", "24", "--n-hc", "24", "--seed", str(SEED),
                         "--effect-size", "1.5", "--resolution", "3", "--mni-derivatives",
                         "--factor-weight", "-1.0", "--factor-noise-sd", "0.5"])
        if rc:
            return rc
        derivatives = cohort / "derivatives" / "bids_mdd-synthetic"
        participants = cohort / "participants.tsv"
        rc = train_main([str(derivatives), str(args.out), "--participants", str(participants),
                         "--name", "demo-synthetic-densenet121", "--zoom", "0.33", "--width",
                         "8", "--growth-rate", "4", "--epochs", "20", "--lr", "0.001", *COMMON])
        if rc:
            return rc
        return train_main([str(derivatives), str(args.out), "--participants", str(participants),
                           "--task", "regression", "--name", "demo-synthetic-dfrn", "--zoom",
                           "0.25", "--width", "4", "--epochs", "15", *COMMON])


if __name__ == "__main__":
    sys.exit(main())
