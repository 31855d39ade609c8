"""``bids_mdd BIDS_DIR OUTPUT_DIR {participant,group}``: the BIDS App entry point."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from bids_mdd import __version__
from bids_mdd.bids.discovery import (
    T1wInput,
    check_is_bids,
    discover_t1w,
    load_bids_filters,
    open_layout,
)
from bids_mdd.bids.validation import validate_dataset
from bids_mdd.cli.bootstrap import configure_logging, error_line, run_command
from bids_mdd.cli.caches import ensure_writable_caches
from bids_mdd.cli.parser import ANALYSIS_LEVELS, build_parser
from bids_mdd.cli.paths import (
    check_bids_dir,
    check_not_inside,
    check_output_dir,
    check_work_dir,
    ensure_writable_dir,
)
from bids_mdd.cli.signals import Interrupted, interruptible, stop_children
from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.participant.failures import fix_for

LOGGER = logging.getLogger("bids_mdd")


def collect_inputs(args: argparse.Namespace) -> list[T1wInput]:
    """Check the command line's paths and the dataset, then discover the T1w inputs."""
    if args.analysis_level not in ANALYSIS_LEVELS:
        raise BidsMddError(f"unknown analysis level '{args.analysis_level}': use one of "
                           f"{', '.join(ANALYSIS_LEVELS)}", ExitCode.UNKNOWN_LEVEL)
    bids_dir = check_bids_dir(args.bids_dir)
    args.output_dir = check_output_dir(bids_dir, args.output_dir)
    args.work_dir = check_not_inside(bids_dir, args.work_dir, "work_dir")
    if args.analysis_level == "participant":  # (the group level writes no work folder)
        args.work_dir = check_work_dir(args.work_dir, args.output_dir)
    if args.bids_database_dir is not None:
        args.bids_database_dir = check_not_inside(bids_dir, args.bids_database_dir,
                                                  "--bids-database-dir")
    ensure_writable_dir(args.output_dir, "output_dir")
    if args.analysis_level == "participant":
        ensure_writable_dir(args.work_dir, "work_dir")
    if not args.skip_bids_validation:
        check_is_bids(bids_dir)
        validate_dataset(bids_dir)
    filters = load_bids_filters(args.bids_filter_file)
    layout = open_layout(bids_dir, validate=not args.skip_bids_validation,
                         database_dir=args.bids_database_dir)
    return discover_t1w(layout, args.participant_label, args.session_label, filters)


def run_participant(args: argparse.Namespace, inputs: list[T1wInput]) -> ExitCode:
    """Participant level: the options from the command line, then the participant package."""
    from bids_mdd.participant.runner import ParticipantOptions, run_participant_level
    from bids_mdd.preproc.workflow import PreprocOptions

    preproc = PreprocOptions(skull_strip=args.skull_strip, sloppy=args.sloppy, seed=args.seed,
                             segmentation=args.segmentation, deterministic=args.deterministic)
    options = ParticipantOptions(
        preproc=preproc, models=args.models, preproc_only=args.preproc_only, device=args.device,
        nprocs=args.nprocs, omp_nthreads=args.omp_nthreads, mem_gb=args.mem_gb,
        model_batch_size=args.model_batch_size, verbose=args.verbose > 0,
        qc_fail_ok=args.qc_fail_ok, attention=not args.no_attention)
    return run_participant_level(args.bids_dir, args.output_dir, args.work_dir, inputs, options)


def run_group(args: argparse.Namespace, inputs: list[T1wInput]) -> ExitCode:
    """Group level: the options from the command line, then the group package."""
    from bids_mdd.group.inputs import LabelOptions
    from bids_mdd.group.options import GroupOptions
    from bids_mdd.group.runner import run_group_level

    options = GroupOptions(
        labels=LabelOptions(args.label_column, args.positive, args.negative),
        covariates=args.covariates, harmonize=args.harmonize,
        harmonize_empirical_bayes=args.harmonize_empirical_bayes, fdr_q=args.fdr_q,
        permutations=args.permutations,
        tfce=args.permutation_inference == "tfce", gm_threshold=args.gm_threshold,
        min_cluster_voxels=args.min_cluster_size, seed=args.seed,
        n_jobs=args.nprocs or 1, allow_partial=args.allow_partial,
        include_qc_failures=args.include_qc_failures)
    results = run_group_level(args.bids_dir, args.output_dir, inputs, options)
    LOGGER.info("group report: %s", results.report)
    return ExitCode.OK


def _interrupted(exc: Interrupted) -> int:
    stopped = stop_children()
    print(f"bids_mdd: interrupted by {exc}: stopped {stopped} worker process(es); rerun the "
          "same command to resume (finished steps are kept in the work dir)", file=sys.stderr)
    return exc.exit_code


def _storage_failed(exc: BaseException) -> int:
    """The output or work folder failed under us (full, read-only): 73 with the fix."""
    fix = fix_for(str(exc))
    if not fix:
        raise exc
    error_line("bids_mdd", f"{exc}; {fix}")
    return int(ExitCode.CANNOT_CREATE_OUTPUT)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the BIDS App; return its exit code."""
    args = build_parser().parse_args(argv)
    configure_logging(debug=args.verbose >= 2)
    LOGGER.info("bids_mdd %s, %s level", __version__, args.analysis_level)
    for variable, copy in ensure_writable_caches().items():
        LOGGER.info("%s is read-only: using a copy in %s", variable, copy)

    def work() -> int:
        with interruptible():
            inputs = collect_inputs(args)
            if args.analysis_level == "participant":
                return int(run_participant(args, inputs))
            return int(run_group(args, inputs))

    return run_command("bids_mdd", work,
                       handlers={Interrupted: _interrupted, OSError: _storage_failed})

if __name__ == "__main__":
    sys.exit(main())
