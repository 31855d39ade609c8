"""What the multi-site benchmarks share: their cohort options, the SYNTHETIC cohort they
generate, and how they print and keep their table."""

from __future__ import annotations

import argparse
import contextlib
import io
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from bids_mdd.synth.cohort import generate_cohort
from bids_mdd.synth.model import CohortSpec


def cohort_parser(description: str, n_per_group: int, effect_size: float,
                  ) -> argparse.ArgumentParser:
    """--n-mdd, --n-hc, --sites, --seed, --effect-size and --out."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--n-mdd", type=int, default=n_per_group)
    parser.add_argument("--n-hc", type=int, default=n_per_group)
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--effect-size", type=float, default=effect_size)
    parser.add_argument("--out", type=Path, help="also write the table here (TSV)")
    return parser


def base_spec(args: argparse.Namespace, n_sites: int) -> CohortSpec:
    """The benchmarks' cohort: GM rendered in MNI space, 4 mm native grid, skull-stripped."""
    return CohortSpec(n_mdd=args.n_mdd, n_hc=args.n_hc, seed=args.seed,
                      effect_size=args.effect_size, resolution=4.0, skull_stripped=True,
                      mni_derivatives=True, mni_t1w=False, n_sites=n_sites)


def generate_quietly(root: Path, spec: CohortSpec) -> None:
    with contextlib.redirect_stderr(io.StringIO()):  # its progress bar
        generate_cohort(root, spec, n_jobs=2)


def report(rows: list[dict], header: str, out: Path | None) -> None:
    """Print the table under a dated header; with ``out``, also write it as TSV."""
    table = pd.DataFrame(rows)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n{stamp}; {header}")
    print(table.to_markdown(index=False))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        table.assign(date=stamp).to_csv(out, sep="\t", index=False)
