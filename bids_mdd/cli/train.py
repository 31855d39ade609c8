"""``bids_mdd-train DERIVATIVES_DIR MODELS_DIR``: cross-validate and bundle a model;
``bids_mdd-train prepare DERIVATIVES_DIR OUT_DIR``: extract the network inputs once."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from bids_mdd import __version__
from bids_mdd.cli.bootstrap import configure_logging, run_command
from bids_mdd.cli.help_format import DefaultsHelpFormatter
from bids_mdd.cli.parser import BidsAppArgumentParser, positive_int, random_seed
from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.models.task import Task
from bids_mdd.training.options import FACTORS, TrainOptions
from bids_mdd.training.splits import CvScheme

LOGGER = logging.getLogger("bids_mdd.train")


def build_parser() -> BidsAppArgumentParser:
    """Build the ``bids_mdd-train`` argument parser (protocol defaults: see --task)."""
    p = BidsAppArgumentParser(
        prog="bids_mdd-train", formatter_class=DefaultsHelpFormatter,
        description="Train and cross-validate a bids_mdd model on participant-level "
                    "derivatives; write a model bundle. Protocol defaults: classification = "
                    "paper A (5 folds, Adam LR 0.01, weight decay 1e-3, batch 8), regression = "
                    "paper B (10 folds x 5 repeats, Adam LR 1e-3, batch 4). "
                    "`bids_mdd-train prepare DERIVATIVES_DIR OUT_DIR` writes the network "
                    "inputs once, as a folder DERIVATIVES_DIR accepts.")
    p.add_argument("derivatives_dir", type=Path,
                   help="OUTPUT_DIR of `bids_mdd ... participant --preproc-only`, or a folder "
                        "of prepared inputs (`bids_mdd-train prepare`; --zoom must match it)")
    p.add_argument("models_dir", type=Path, help="folder the bundle(s) are written into")
    p.add_argument("--participants", type=Path, required=True,
                   help="participants.tsv with the labels (e.g. BIDS_DIR/participants.tsv)")
    p.add_argument("--task", choices=[str(task) for task in Task], default=Task.CLASSIFICATION,
                   type=Task)
    p.add_argument("--name", help="bundle name (default: ARCHITECTURE-classifier, or "
                                  "ARCHITECTURE-TARGET for each regression target)")
    p.add_argument("--model-version", default="1.0.0",
                   help="version recorded in model.json and in every prediction's sidecar")
    g = p.add_argument_group("network and input")
    g.add_argument("--architecture", help="densenet121|169|201|264, resnet10...200, dfrn "
                                          "(default: densenet121 / dfrn by task)")
    g.add_argument("--input", choices=("gm", "t1w"),
                   help="smoothed modulated GM (1.5 mm) or normalised T1w (1 mm); default by "
                        "task: gm / t1w")
    g.add_argument("--zoom", type=float, default=1.0,
                   help="resample inputs by this factor (< 1: reduced grid for CPU work)")
    g.add_argument("--normalization", choices=("zscore", "none"), default="zscore",
                   help="per-image intensity normalisation over non-zero voxels")
    g.add_argument("--width", type=positive_int,
                   help="channels of the first stage (default 64, the papers' width)")
    g.add_argument("--growth-rate", type=positive_int, help="DenseNet growth rate (default 32)")
    g = p.add_argument_group("labels")
    g.add_argument("--label-column", help="diagnosis column (default: first of group, "
                                          "diagnosis, dx, condition, label)")
    g.add_argument("--positive", nargs="+", help="values coding MDD (default: MDD, depr, "
                                                 "patient, case, 1, ...)")
    g.add_argument("--negative", nargs="+", help="values coding controls (default: HC, control, "
                                                 "healthy, 0, ...)")
    g.add_argument("--targets", nargs="+", default=list(FACTORS),
                   help="regression target columns, one model each")
    g.add_argument("--site-column", default="site",
                   help="participants.tsv column of the site ('none' to ignore)")
    g.add_argument("--cv", choices=[scheme.value for scheme in CvScheme], default="grouped",
                   help="grouped: stratified folds, each site whole when the site column "
                        "exists; stratified: stratified folds of participants, sites mixed; "
                        "leave-site-out: one fold per site, tested on a site its training "
                        "never saw")
    g.add_argument("--harmonize", action="store_true",
                   help="ComBat on the network inputs over the site column alone (the "
                        "target is not kept: kept, it leaks each site's diagnosis mix into "
                        "the test participants), fitted on each fold's training part and "
                        "applied to its "
                        "validation and test parts by site alone (a site the training part "
                        "never saw: by its own location and scale, without labels); "
                        "--compare's baselines get the same on their GM maps, and the bundle "
                        "keeps a fit on all participants for the participant level")
    g.add_argument("--harmonize-empirical-bayes", action="store_true",
                   help="with --harmonize: ComBat with empirical Bayes, each site's effects "
                        "pooled across voxels (default: each voxel's own, which removes a site "
                        "effect confined to some voxels; pooling leaves part of it, and a "
                        "classifier can decode the site from it)")
    g = p.add_argument_group("model card (written into model.json)")
    g.add_argument("--site-name", metavar="NAME",
                   help="the one site every participant comes from, when participants.tsv has "
                        "no site column")
    g.add_argument("--known-limit", dest="known_limits", action="append", default=[],
                   metavar="TEXT", help="a known limit of the model (repeatable), e.g. "
                                        "'skull-stripped inputs only'")
    g = p.add_argument_group("protocol (defaults by task)")
    g.add_argument("--folds", type=positive_int)
    g.add_argument("--repeats", type=positive_int)
    g.add_argument("--val-fraction", type=float, default=0.1,
                   help="validation share of all participants, carved from each training part")
    g.add_argument("--epochs", type=positive_int, default=100)
    g.add_argument("--batch-size", type=positive_int)
    g.add_argument("--lr", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--plateau-patience", type=positive_int, default=10)
    g = p.add_argument_group("transfer learning")
    g.add_argument("--pretrain-from", type=Path, metavar="BUNDLE",
                   help="start from this bundle's backbone (fold 1) with a new head")
    g.add_argument("--backbone-lr-factor", type=float, default=0.001,
                   help="LR of the transferred layers relative to the head's (paper A)")
    g.add_argument("--allow-shared-ids", action="store_true",
                   help="accept participant labels shared with the source data (images "
                        "shared are always refused)")
    g = p.add_argument_group("evaluation")
    g.add_argument("--permutations", type=int, default=0, metavar="N",
                   help="label permutations for the p-values of accuracy, balanced accuracy "
                        "and AUC (regression: r)")
    g.add_argument("--permutation-mode", choices=("outputs", "retrain"), default="outputs",
                   help="outputs: permute labels against the fixed out-of-fold outputs; "
                        "retrain: rerun the whole cross-validation per permutation (slow)")
    g.add_argument("--compare", action="store_true",
                   help="also run the papers' baselines on the same folds; write "
                        "comparison.tsv/.md")
    g = p.add_argument_group("execution")
    g.add_argument("--seed", type=random_seed, default=0)
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    g.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    g.add_argument("-w", "--work-dir", type=Path,
                   help="checkpoints and finished folds, so a rerun resumes")
    g.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("-v", "--verbose", action="store_true")
    g.add_argument("--version", action="version", version=f"bids_mdd {__version__}")
    return p


def build_prepare_parser() -> BidsAppArgumentParser:
    """The ``bids_mdd-train prepare`` argument parser."""
    from bids_mdd.training.prepare import DEFAULT_VARIANTS, VARIANTS

    p = BidsAppArgumentParser(
        prog="bids_mdd-train prepare", formatter_class=DefaultsHelpFormatter,
        description="Read, normalise and zoom every participant's network inputs once; write "
                    "them (int16, with the full-grid hashes a bundle's fingerprint records) "
                    "into a folder that bids_mdd-train trains on directly.")
    p.add_argument("derivatives_dir", type=Path,
                   help="OUTPUT_DIR of `bids_mdd ... participant --preproc-only`")
    p.add_argument("out_dir", type=Path, help="folder of prepared inputs to write")
    p.add_argument("--zoom", type=float, default=1.0,
                   help="resample inputs by this factor, as bids_mdd-train --zoom")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(DEFAULT_VARIANTS),
                   help="input and normalisation pairs to write")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a folder that is not empty")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def prepare_main(argv: Sequence[str]) -> int:
    """``bids_mdd-train prepare``: parse, write the prepared inputs, return an exit code."""
    args = build_prepare_parser().parse_args(argv)
    if not 0 < args.zoom <= 1:
        build_prepare_parser().error(f"--zoom {args.zoom}: give 0 < zoom <= 1")
    configure_logging(debug=args.verbose)
    from bids_mdd.training.prepare import prepare_inputs

    def work() -> int:
        folder = prepare_inputs(args.derivatives_dir, args.out_dir, zoom=args.zoom,
                                variants=tuple(args.variants), overwrite=args.overwrite,
                                progress=not args.no_progress)
        LOGGER.info("wrote %s", folder.path)
        return int(ExitCode.OK)

    return run_command("bids_mdd-train prepare", work)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, train (or prepare), and return an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["prepare"]:
        return prepare_main(argv[1:])
    args = build_parser().parse_args(argv)
    configure_logging(debug=args.verbose)
    from bids_mdd.training.run import train  # heavy imports after argument checks

    def work() -> int:
        if args.harmonize_empirical_bayes and not args.harmonize:
            raise BidsMddError("--harmonize-empirical-bayes changes how --harmonize fits "
                               "ComBat: give --harmonize too", ExitCode.USAGE)
        for bundle in train(TrainOptions.from_values(args)):
            LOGGER.info("wrote %s", bundle.path)
        return int(ExitCode.OK)

    return run_command("bids_mdd-train", work)


if __name__ == "__main__":
    sys.exit(main())
