"""Time ``bids_mdd-synth`` for a 40-subject cohort (2 mm) and one 1 mm subject.

Prints figures; asserts nothing. Run: ``.venv/bin/python benchmarks/synth.py``.
Target from issue 2: 40 subjects at 2 mm in < 2 min on 2 cores.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bids_mdd.synth.cohort import generate_cohort
from bids_mdd.synth.model import CohortSpec


def main() -> None:
    os.environ.setdefault("TEMPLATEFLOW_HOME",
                          str(Path(__file__).resolve().parents[2] / "shared" / "templateflow"))
    with tempfile.TemporaryDirectory() as tmp:
        for spec in (CohortSpec(n_mdd=20, n_hc=20, seed=1, resolution=2.0),
                     CohortSpec(n_mdd=1, n_hc=0, seed=1, resolution=1.0)):
            out = Path(tmp) / f"res{spec.resolution:g}"
            start = time.perf_counter()
            truth = generate_cohort(out, spec, n_jobs=2)
            seconds = time.perf_counter() - start
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
            d = ", ".join(f"{k} {v:.2f}" for k, v in truth["measured_cohens_d"].items())
            print(f"{spec.n_mdd + spec.n_hc} subjects at {spec.resolution:g} mm: {seconds:.1f} s,"
                  f" {size:.0f} MiB; measured d (planted {spec.effect_size}): {d}")


if __name__ == "__main__":
    main()
