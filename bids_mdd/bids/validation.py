"""The input dataset checked by the official BIDS validator (``bids-validator-deno``), as fMRIPrep
does before it starts; ``--skip-bids-validation`` skips it.

The validator is the BIDS project's own, installed from PyPI with bids_mdd (its JavaScript
bundle runs on the ``deno`` wheel's runtime, offline). Its JSON report is reduced to one line:
how many errors, and per issue code how many with the first place it was found.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bids_mdd.errors import BidsMddError, ExitCode

VALIDATOR = "bids-validator-deno"
TIMEOUT_S = 600
SKIP_HINT = "fix the dataset, or pass --skip-bids-validation"


def validator_executable() -> str:
    """The validator next to this Python (its virtual environment), else on PATH."""
    beside = Path(sys.executable).with_name(VALIDATOR)
    found = str(beside) if beside.exists() else shutil.which(VALIDATOR)
    if found is None:
        raise BidsMddError(f"{VALIDATOR} is not installed: pip install {VALIDATOR}, or pass "
                           "--skip-bids-validation", ExitCode.INVALID_BIDS)
    return found


def run_validator(bids_dir: Path, warnings: bool = False) -> list[dict[str, Any]]:
    """The validator's issues for ``bids_dir`` (each a dict with code, severity, location);
    errors only unless ``warnings``."""
    command = [validator_executable(), str(bids_dir), "--format", "json"]
    if not warnings:
        command.append("--ignoreWarnings")
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S,
                                check=False)
        report = json.loads(result.stdout)
    except subprocess.TimeoutExpired as exc:
        raise BidsMddError(f"{bids_dir}: {VALIDATOR} did not finish in {TIMEOUT_S} s; pass "
                           "--skip-bids-validation", ExitCode.INVALID_BIDS) from exc
    except OSError as exc:  # not the dataset's fault, nor the output folder's
        raise BidsMddError(f"{command[0]}: the BIDS validator cannot be run ({exc.strerror}); "
                           "make it executable for this user (chmod a+rx), reinstall it, or "
                           "pass --skip-bids-validation", ExitCode.INVALID_BIDS) from exc
    except ValueError as exc:
        why = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise BidsMddError(f"{bids_dir}: {VALIDATOR} failed (exit {result.returncode}: {why}); "
                           "pass --skip-bids-validation", ExitCode.INVALID_BIDS) from exc
    return list(report["issues"]["issues"])


def summarize_errors(issues: list[dict[str, Any]]) -> str:
    """One line: the error count, then per code its count and first location (with detail)."""
    errors = [issue for issue in issues if issue.get("severity") == "error"]
    counts = Counter(issue["code"] for issue in errors)
    first = {}
    for issue in errors:
        first.setdefault(issue["code"], issue)
    parts = []
    for code, count in counts.most_common():
        issue = first[code]
        where = str(issue.get("location", "?"))
        if issue.get("line"):
            where += f" line {issue['line']}"
        if issue.get("subCode"):
            where += f" [{issue['subCode']}]"
        message = " ".join(str(issue.get("issueMessage", "")).split())[:80]
        parts.append(f"{code} x{count}, first in {where}" + (f": {message}" if message else ""))
    return f"{len(errors)} error(s): " + "; ".join(parts)


def validate_dataset(bids_dir: Path) -> None:
    """Raise exit 16 with a one-line summary when the validator finds errors in ``bids_dir``."""
    issues = run_validator(bids_dir)
    if any(issue.get("severity") == "error" for issue in issues):
        summary = " ".join(summarize_errors(issues).split())
        raise BidsMddError(f"{bids_dir} is not valid BIDS ({VALIDATOR}): {summary}; "
                           f"{SKIP_HINT}", ExitCode.INVALID_BIDS)
