"""Train the real-data model bundles for ``bids_mdd/data/models/ds002748/`` on all 72 scans of
OpenNeuro ds002748 (CC0), with the protocol of ``benchmarks/paper_tables.py``'s rows.

Reads the 72 scans' prepared inputs (``../shared/data/ds002748-inputs``: the participant
level's derivatives through ``bids_mdd-train prepare``'s layout, at zoom 0.25). Writes the
classifier
(``ds002748-<architecture>``) and one DFRN per score (``ds002748-dfrn-<score>``), each with its
model card, its domain-shift model and the sha256 of its 72 (or fewer: a score's missing values)
training inputs. The bundle's weights are its cross-validation folds (an ensemble); its card's
metrics are that cross-validation's. With the same ``--work`` as ``benchmarks/paper_tables.py``,
the folds of the table rows it bundles are reused, not trained again.

Run: ``.venv/bin/python tools/train_real_bundles.py [--inputs DIR] [--out DIR]
[--architecture densenet121] [--tasks classification regression] ...`` (the defaults are the
tables' grid, width and protocol).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
os.environ.setdefault("TEMPLATEFLOW_HOME", str(SHARED / "templateflow"))

from bids_mdd.cli.train import main as train_main  # noqa: E402

SEED = 0
LIMITS = ["skull-stripped inputs only (the publishers' brain extraction): a whole-head scan "
          "has not been seen",
          "one site (Bezmaternykh et al., Neural Plasticity 2021, doi:10.1155/2021/8846097), "
          "adults with mild to moderate depression",
          "small cohort: 51 MDD and 21 controls; the evidence's spread is wide"]
SCORES = ("BDI", "Zung_SDS", "RRS-sum")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=Path, default=SHARED / "data" / "ds002748-inputs",
                        help="prepared inputs at --zoom (or a participant level's derivatives)")
    parser.add_argument("--participants", type=Path,
                        default=SHARED / "data" / "ds002748" / "participants.tsv")
    parser.add_argument("--out", type=Path,
                        default=REPO / "bids_mdd" / "data" / "models" / "ds002748")
    parser.add_argument("--work", type=Path, default=REPO.parent / "cohort" / "paper_tables-work",
                        help="finished folds (benchmarks/paper_tables.py's --work)")
    parser.add_argument("--tasks", nargs="+", choices=("classification", "regression"),
                        default=["classification", "regression"])
    parser.add_argument("--architecture", default="densenet121")
    parser.add_argument("--zoom", default="0.25")
    parser.add_argument("--width", default="8")
    parser.add_argument("--growth-rate", default="4")
    parser.add_argument("--epochs", default="100")
    parser.add_argument("--zoom-b", default="0.25")
    parser.add_argument("--width-b", default="8")
    parser.add_argument("--epochs-b", default="30")
    parser.add_argument("--folds-b", default="10")
    parser.add_argument("--repeats-b", default="5")
    args = parser.parse_args()
    common = [str(args.inputs), str(args.out), "--participants", str(args.participants),
              "--seed", str(SEED), "--no-progress", "--overwrite", "--model-version", "1.0.0",
              "--permutations", "1000", "--site-name", "ds002748 (one site)",
              "-w", str(args.work), *[item for limit in LIMITS
                                      for item in ("--known-limit", limit)]]
    if "classification" in args.tasks:
        rc = train_main([*common, "--name", f"ds002748-{args.architecture}", "--architecture",
                         args.architecture, "--zoom", args.zoom, "--width", args.width,
                         "--growth-rate", args.growth_rate, "--epochs", args.epochs])
        if rc:
            return rc
    if "regression" in args.tasks:
        return train_main([*common, "--task", "regression", "--name", "ds002748-dfrn",
                           "--targets", *SCORES, "--zoom", args.zoom_b, "--width", args.width_b,
                           "--epochs", args.epochs_b, "--folds", args.folds_b, "--repeats",
                           args.repeats_b])
    return 0


if __name__ == "__main__":
    sys.exit(main())
