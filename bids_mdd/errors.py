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
