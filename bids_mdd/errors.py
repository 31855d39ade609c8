"""Exit codes of the BIDS-Apps execution spec and the one error type that carries them."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes from the BIDS-Apps execution specification (sysexits-style)."""

    OK = 0
    FAILURE = 1
    INVALID_BIDS = 16
    UNKNOWN_LEVEL = 17
    NO_FILES = 18
    QC_FAILED = 19  # outputs written, but a participant failed the QC gate
    USAGE = 64
    BAD_DATA = 65
    MISSING_INPUT = 66
    CANNOT_CREATE_OUTPUT = 73


class BidsMddError(Exception):
    """A user-facing error: a one-line message (naming the file and the fix) and an exit code."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.FAILURE) -> None:
        super().__init__(message)
        self.exit_code = ExitCode(exit_code)


#: What each exit code means and what to do about it (the documentation's FAQ renders it).
EXIT_CODE_HELP: dict[ExitCode, tuple[str, str]] = {
    ExitCode.OK: ("every selected participant's derivatives were written completely",
                  "nothing"),
    ExitCode.FAILURE: ("a participant failed; the others went on (one line each on stderr: the "
                       "step, the root cause and its fix; a crash file in OUTPUT_DIR/logs/)",
                       "read the participant's line and crash file, fix the cause, rerun the "
                       "same command: finished participants are skipped"),
    ExitCode.INVALID_BIDS: ("BIDS_DIR is not a BIDS dataset: the official validator found "
                            "errors, or there is no dataset_description.json, or no "
                            "sub-*/[ses-*/]anat/*_T1w.nii[.gz]",
                            "fix what the message names (bids-validator-deno BIDS_DIR prints "
                            "the full report), or pass --skip-bids-validation"),
    ExitCode.UNKNOWN_LEVEL: ("the analysis level is neither participant nor group",
                             "write participant or group"),
    ExitCode.NO_FILES: ("the participant or session labels, or the filters, select nothing "
                        "(unknown labels are named)",
                        "check --participant-label, --session-label and --bids-filter-file "
                        "against the dataset"),
    ExitCode.QC_FAILED: ("a participant failed the QC gate (its outputs are written; the "
                         "group level leaves it out)",
                         "look at its report sub-<label>.html; --qc-fail-ok exits 0"),
    ExitCode.USAGE: ("a usage error: an option value, an OUTPUT_DIR that is BIDS_DIR or inside "
                     "it but not under BIDS_DIR/derivatives/, a work dir inside BIDS_DIR, two "
                     "bundles for one target",
                     "follow the message: OUTPUT_DIR goes under BIDS_DIR/derivatives/ (e.g. "
                     "BIDS_DIR/derivatives/bids_mdd) or outside the dataset, the work dir "
                     "outside it"),
    ExitCode.BAD_DATA: ("bad data: a T1w bids_mdd cannot use, a malformed participants.tsv or "
                        "model bundle (the message names the file and line)",
                        "fix or exclude the file the message names"),
    ExitCode.MISSING_INPUT: ("a missing input: BIDS_DIR, the filter file, a template under "
                             "TEMPLATEFLOW_HOME, every T1w unreadable, or (group level) an "
                             "unfinished participant level",
                             "provide the file the message names; the group level accepts an "
                             "unfinished participant level with --allow-partial"),
    ExitCode.CANNOT_CREATE_OUTPUT: ("OUTPUT_DIR or the work dir cannot be created or written "
                                    "(read-only, permissions, under 100 MB free, filled up "
                                    "during the run) or belongs to another pipeline",
                                    "free space or choose a writable, empty folder; rerun the "
                                    "same command to resume"),
}
