"""Argument parser of ``bids_mdd`` (BIDS-Apps convention; exit codes from the execution spec)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from bids_mdd import __version__
from bids_mdd.cli.help_format import DefaultsHelpFormatter
from bids_mdd.errors import ExitCode

ANALYSIS_LEVELS = ("participant", "group")


class BidsAppArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors exit 64 (EX_USAGE), as the BIDS-Apps spec asks."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (a bad value becomes a usage error, exit 64)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


#: The largest seed every consumer takes: antsRegistration's --random-seed is a 32-bit signed
#: integer and gets the seed plus one (its 0 means "random"); numpy and torch take it as is.
MAX_SEED = 2**31 - 2


def random_seed(text: str) -> int:
    """An argparse type: a random seed, 0 to :data:`MAX_SEED` (a negative one would become
    ANTs' "random" 0 and break --deterministic; a huge one fails in torch)."""
    value = int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be from 0 to {MAX_SEED}, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def build_parser() -> BidsAppArgumentParser:
    """Build the ``bids_mdd`` argument parser."""
    parser = BidsAppArgumentParser(
        prog="bids_mdd",
        description="Deep-learning analysis of major depressive disorder from T1w MRI "
                    "(BIDS App).",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("bids_dir", type=Path, help="the input BIDS dataset (read only)")
    parser.add_argument("output_dir", type=Path,
                        help="where BIDS-Derivatives are written: outside bids_dir, or under "
                             "bids_dir/derivatives/ (e.g. bids_dir/derivatives/bids_mdd)")
    # Not 'choices=': an unknown level must exit 17, not argparse's usage code.
    parser.add_argument("analysis_level", metavar="{participant,group}",
                        help="participant: process each T1w; group: statistics across them")
    parser.add_argument("--version", action="version", version=f"bids_mdd {__version__}")

    sel = parser.add_argument_group("selecting inputs")
    sel.add_argument("--participant-label", "--participant_label", nargs="+", metavar="LABEL",
                     help="participants to process, with or without 'sub-' (default: all)")
    sel.add_argument("--session-label", "--session_label", nargs="+", metavar="LABEL",
                     help="sessions to process, with or without 'ses-' (default: all)")
    sel.add_argument("--bids-filter-file", type=Path, metavar="FILE",
                     help='JSON with pybids filters under "t1w", as in fMRIPrep')
    # the underscore spellings of fMRIPrep (--skip_bids_validation) and of the BIDS-Apps
    # examples (--skip_bids_validator), so that a platform's or lab's usual command line works
    sel.add_argument("--skip-bids-validation", "--skip_bids_validation", "--skip_bids_validator",
                     action="store_true", help="accept a dataset that does not look like BIDS")
    sel.add_argument("--bids-database-dir", type=Path, metavar="DIR",
                     help="store/reuse the pybids index here (saves time on large datasets)")

    pre = parser.add_argument_group("preprocessing")
    pre.add_argument("--skull-strip", choices=("auto", "force", "skip"), default="auto",
                     help="brain extraction: auto skips it for inputs that are already "
                          "skull-stripped; force always runs it; skip never does")
    pre.add_argument("--segmentation", choices=("priors", "kmeans"), default="priors",
                     help="tissue segmentation: Atropos with template tissue priors and "
                          "partial-volume fractions (default), or the earlier 3-class k-means "
                          "(for comparison only: it collapses on some real scans)")
    pre.add_argument("--sloppy", action="store_true",
                     help="coarse, fast registration and segmentation, for tests only "
                          "(recorded in every sidecar)")
    pre.add_argument("--preproc-only", action="store_true",
                     help="stop after preprocessing; do not apply the models")
    pre.add_argument("--qc-fail-ok", action="store_true",
                     help="exit 0 although a participant failed the QC gate (template "
                          "correlation, brain-mask Dice, TIV and tissue fractions far outside "
                          "real scans'); it is still named on stderr and left out by the group "
                          "level")

    run = parser.add_argument_group("running")
    run.add_argument("-w", "--work-dir", type=Path, default=Path.cwd() / "work",
                     help="intermediate results; a rerun resumes from here")
    run.add_argument("--nprocs", "--n-cpus", type=positive_int, default=None, metavar="N",
                     help="processes to run at once, across participants (default: the CPUs "
                          "this process may use: affinity mask, SLURM allocation, container "
                          "quota)")
    run.add_argument("--omp-nthreads", type=positive_int, default=None, metavar="N",
                     help="threads per process (default: nprocs / number of T1w, 1 to 8)")
    run.add_argument("--mem-gb", type=positive_float, default=None, metavar="GB",
                     help="memory the run may use; on CPU the workflow gets it less 3 GB "
                          "kept for the model step (default: SLURM's allocation, else "
                          "nipype's 90 %% of RAM)")
    run.add_argument("--model-batch-size", type=positive_int, default=None, metavar="N",
                     help="participants per forward pass of the models (default: 1 on CPU, 4 "
                          "on CUDA)")
    run.add_argument("--models", type=Path, nargs="+", default=None, metavar="DIR",
                     help="model bundle folders, folders of bundles, or the name of a packaged "
                          "set: ds002748 (the default; trained on the 72 scans of OpenNeuro "
                          "ds002748, one site) or demo (trained on SYNTHETIC data)")
    run.add_argument("--no-attention", action="store_true",
                     help="participant level: write predictions.tsv but no attention maps or "
                          "their figures (removes earlier ones of these models; skips the "
                          "backward passes, half of the model step's FLOPs); the group level "
                          "then reports these participants as having no attention maps")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                     help="where the networks run")
    run.add_argument("--random-seed", "--seed", dest="seed", type=random_seed, default=0,
                     metavar="N",
                     help="seed of ANTs' registration sampling, torch and the group level's "
                          "resampling")
    run.add_argument("--deterministic", action="store_true",
                     help="byte-identical derivatives for the same input, whatever --nprocs: "
                          "every step single-threaded (slower per participant)")
    run.add_argument("-v", "--verbose", action="count", default=0,
                     help="more log output (-vv for debug)")

    grp = parser.add_argument_group("group level")
    grp.add_argument("--label-column", metavar="COLUMN",
                     help="participants.tsv column with the diagnosis (default: the first of "
                          "group, diagnosis, dx, condition, label)")
    grp.add_argument("--positive", nargs="+", metavar="VALUE",
                     help="values coding MDD (default: MDD, depr, depressed, patient, 1, ...)")
    grp.add_argument("--negative", nargs="+", metavar="VALUE",
                     help="values coding healthy controls (default: HC, control, healthy, "
                          "0, ...)")
    grp.add_argument("--covariates", nargs="*", metavar="NAME",
                     help="nuisance covariates: participants.tsv columns, or TIV (from the QC "
                          "metrics); none when given without a name (default: age, sex or "
                          "gender, and TIV, each when known for every participant)")
    grp.add_argument("--harmonize", metavar="COLUMN",
                     help="participants.tsv column holding each participant's site: remove "
                          "site effects (location and scale) from the GM maps with ComBat "
                          "before the GLM, keeping diagnosis and the covariates; site stays "
                          "in the GLM as a covariate (default: no harmonisation; a site column "
                          "may instead only be listed in --covariates)")
    grp.add_argument("--harmonize-empirical-bayes", action="store_true",
                     help="ComBat with empirical Bayes: each site's effects pooled across "
                          "voxels (default: each voxel's own, which removes a site effect "
                          "confined to some voxels; pooling leaves part of it)")
    grp.add_argument("--fdr-q", type=_fraction, default=0.05, metavar="Q",
                     help="Benjamini-Hochberg false discovery rate of the voxelwise test")
    grp.add_argument("--permutations", type=_non_negative_int, default=0, metavar="N",
                     help="also run N permutations for family-wise-error inference (nilearn; "
                          "loads every GM map at once); 0: none")
    grp.add_argument("--permutation-inference", choices=("tfce", "cluster"), default="tfce",
                     help="TFCE or cluster mass (cluster-forming p < 0.001)")
    grp.add_argument("--gm-threshold", type=_fraction, default=0.2, metavar="GM",
                     help="the group GM mask: voxels whose mean GM is at least this")
    grp.add_argument("--allow-partial", action="store_true",
                     help="run although the participant level is not finished (a participant "
                          "being processed, or with a GM map but no predictions); they are "
                          "listed in the report")
    grp.add_argument("--include-qc-failures", action="store_true",
                     help="keep participants that failed the participant level's QC gate "
                          "(default: left out, and listed in the report)")
    grp.add_argument("--min-cluster-size", type=positive_int, default=10, metavar="VOXELS",
                     help="smallest cluster listed in group_clusters.tsv")
    return parser


def _fraction(text: str) -> float:
    """An argparse type: a number in (0, 1]."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def _non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value
