"""``bids_mdd-synth OUT``: generate a synthetic BIDS cohort with planted MDD effects."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bids_mdd import __version__
from bids_mdd.cli.bootstrap import configure_logging, run_command, usage_error
from bids_mdd.cli.help_format import DefaultsHelpFormatter
from bids_mdd.cli.parser import BidsAppArgumentParser, random_seed
from bids_mdd.errors import ExitCode
from bids_mdd.synth.model import DEFAULT_REGIONS, CohortSpec

LOGGER = logging.getLogger("bids_mdd.synth")


def build_parser() -> argparse.ArgumentParser:
    """Build the ``bids_mdd-synth`` argument parser."""
    parser = BidsAppArgumentParser(
        prog="bids_mdd-synth", formatter_class=DefaultsHelpFormatter,
        description="Generate a SYNTHETIC BIDS cohort from the MNI152NLin2009cAsym template, "
                    "with regional grey-matter loss planted in MDD subjects.")
    parser.add_argument("out", type=Path, help="new folder for the BIDS dataset")
    parser.add_argument("--n-mdd", type=int, required=True, help="number of MDD subjects")
    parser.add_argument("--n-hc", type=int, required=True, help="number of healthy controls")
    parser.add_argument("--seed", type=random_seed, required=True, help="random seed")
    parser.add_argument("--effect-size", type=float, default=0.8, metavar="D",
                        help="Cohen's d of regional GM volume loss in MDD (0: null cohort)")
    parser.add_argument("--resolution", type=float, default=2.0, metavar="MM",
                        help="voxel size of the generated T1w images")
    parser.add_argument("--regions", nargs="+", default=list(DEFAULT_REGIONS),
                        help="AAL abbreviations (SFGdor, MTG, ...) or AAL2 names to atrophy")
    parser.add_argument("--skull-stripped", action="store_true",
                        help="write brain-extracted images (default: whole head)")
    parser.add_argument("--mni-derivatives", action="store_true",
                        help="also write each subject's model inputs rendered directly in MNI "
                             "space (smoothed modulated GM, normalised T1w) under "
                             "derivatives/bids_mdd-synthetic, for training without preprocessing")
    parser.add_argument("--sites", type=int, default=0, metavar="K",
                        help="acquisition sites (at least 2), each with its own scanner "
                             "signature (intensity, contrast, bias, noise, voxel size, a GM "
                             "offset in a region of its own) and its own MDD:HC ratio and ages, "
                             "so that site is confounded with diagnosis; writes a site column")
    parser.add_argument("--site-offset", type=float, default=CohortSpec.site_offset,
                        metavar="FRACTION",
                        help="relative GM change a site's scanner causes in its own region")
    parser.add_argument("--factor-weight", type=float, default=CohortSpec.factor_weight,
                        help="symptom-score change per SD of the anchor region's GM volume")
    parser.add_argument("--factor-noise-sd", type=float, default=CohortSpec.factor_noise_sd,
                        help="residual SD of each symptom-factor score")
    parser.add_argument("--n-jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="subjects rendered in parallel")
    parser.add_argument("--version", action="version", version=f"bids_mdd {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the cohort; return an exit code."""
    args = build_parser().parse_args(argv)
    configure_logging()
    from bids_mdd.synth.cohort import generate_cohort  # heavy imports after argument checks

    def work() -> int:
        start = time.perf_counter()
        spec = CohortSpec(n_mdd=args.n_mdd, n_hc=args.n_hc, seed=args.seed,
                          effect_size=args.effect_size, resolution=args.resolution,
                          regions=tuple(args.regions), skull_stripped=args.skull_stripped,
                          mni_derivatives=args.mni_derivatives, factor_weight=args.factor_weight,
                          factor_noise_sd=args.factor_noise_sd, n_sites=args.sites,
                          site_offset=args.site_offset)
        truth = generate_cohort(args.out, spec, n_jobs=args.n_jobs)
        measured = ", ".join(f"{k} {v:.2f}" for k, v in truth["measured_cohens_d"].items())
        LOGGER.info("wrote %d SYNTHETIC subjects to %s in %.1f s; measured Cohen's d: %s",
                    len(truth["subjects"]), args.out, time.perf_counter() - start, measured)
        return int(ExitCode.OK)

    # a specification the generator rejects (CohortSpec's checks) is a usage error
    return run_command("bids_mdd-synth", work, handlers={ValueError: usage_error("bids_mdd-synth")})


if __name__ == "__main__":
    sys.exit(main())
