"""What every bids_mdd command does around its own work: logging to stderr in one format, and
a :class:`BidsMddError` turned into one line, ``<command>: error: <message>``, and its exit
code (the BIDS-Apps convention), instead of a traceback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping

from bids_mdd.errors import BidsMddError, ExitCode

#: Handles one exception type: prints its line and returns the exit code.
Handler = Callable[[BaseException], int]


def configure_logging(debug: bool = False) -> None:
    """Log to stderr: progress and warnings, and debug messages with ``debug``."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("bidsschematools").setLevel(logging.WARNING)  # pybids' schema chatter


def error_line(command: str, message: object) -> None:
    print(f"{command}: error: {message}", file=sys.stderr)


def run_command(command: str, work: Callable[[], int], *,
                handlers: Mapping[type[BaseException], Handler] | None = None) -> int:
    """``work()``'s exit code; a BidsMddError is its one line and exit code, and an exception
    of a type in ``handlers`` goes to its handler (checked in order, after BidsMddError)."""
    try:
        return int(work())
    except BidsMddError as exc:
        error_line(command, exc)
        return int(exc.exit_code)
    except BaseException as exc:
        for kind, handle in (handlers or {}).items():
            if isinstance(exc, kind):
                return handle(exc)
        raise


def usage_error(command: str) -> Handler:
    """A handler printing the error line and returning 64 (a bad option value)."""
    def handle(exc: BaseException) -> int:
        error_line(command, exc)
        return int(ExitCode.USAGE)
    return handle
