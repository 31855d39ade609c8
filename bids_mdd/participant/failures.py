"""Failures of the participant level: one line each, a crash file each, and the exit code."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bids_mdd.bids.discovery import T1wInput
from bids_mdd.bids.names import crash_name
from bids_mdd.errors import BidsMddError, ExitCode


@dataclass(frozen=True)
class Failure:
    """One T1w that could not be processed, with a one-line reason and its crash file."""

    t1w: T1wInput
    reason: str
    crash_file: Path
    exit_code: ExitCode = ExitCode.FAILURE  # BAD_DATA, MISSING_INPUT: the input's fault


def write_crash(logs: Path, t1w: T1wInput, text: str) -> Path:
    """Write ``text`` to the T1w's crash file under ``logs``; return its path."""
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / crash_name(t1w.output_entities())
    path.write_text(text, encoding="utf-8")
    return path


def from_error(logs: Path, t1w: T1wInput, error: BidsMddError) -> Failure:
    """A failure from one of our own errors (its message is already the one line)."""
    crash = write_crash(logs, t1w, f"{error}\n")
    return Failure(t1w, str(error), crash, error.exit_code)


def crashed_node(crash_file: Path) -> str:
    """The full name of the node a nipype crash file is about (its ``Node:`` line)."""
    with open(crash_file, encoding="utf-8") as stream:
        first = stream.readline()
    return first.removeprefix("Node:").strip()


#: A Python exception line of a traceback: ``module.Name: message``.
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)): ?(.*)$")
#: Exception lines that only wrap the real one (nipype's, and our interfaces' re-raises).
_WRAPPERS = ("Exception raised while executing Node", "Traceback")
#: Root causes whose fix is not in the data: (text in the cause, what to do).
_FIXES = (("No space left on device", "free disk space (or choose another -w / OUTPUT_DIR) "
           "and rerun: finished steps are kept"),
          ("Disk quota exceeded", "raise the quota or choose another -w / OUTPUT_DIR, then "
           "rerun"),
          ("Read-only file system", "choose a writable -w / OUTPUT_DIR"),
          ("Permission denied", "give the user running bids_mdd write access to -w and "
           "OUTPUT_DIR"),
          ("Cannot allocate memory", "give the job more memory (--mem-gb, SLURM --mem)"),
          ("MemoryError", "give the job more memory (--mem-gb, SLURM --mem)"))


def root_cause(text: str) -> str:
    """The line of a crash file or traceback that says why: an ITK error first (ANTs' own
    message), else the innermost exception that is not a wrapper (with its next line when
    the message only names a source location), else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "no message"
    for line in lines:
        if "ITK ERROR:" in line:
            return "ITK: " + " ".join(line.split("ITK ERROR:", 1)[1].split())
    causes = []
    for index, line in enumerate(lines):
        match = _EXCEPTION.match(line)
        if match and not any(wrapper in line for wrapper in _WRAPPERS):
            message = match[2].strip()
            if (not message or message.endswith(":")) and index + 1 < len(lines):
                message = f"{message} {lines[index + 1]}".strip()
            causes.append(f"{match[1].rsplit('.', 1)[-1]}: {message}")
    cause = causes[-1] if causes else lines[-1]
    return " ".join(cause.removeprefix("BidsMddError: ").split())[:300]  # ours say it all


def fix_for(cause: str) -> str:
    """What to do about a cause outside the data ("" when the cause is the data's)."""
    return next((fix for text, fix in _FIXES if text in cause), "")


def failure_line(what: str, text: str, crash_file: Path) -> str:
    """``what`` failed: the root cause of ``text`` (a traceback), its fix, the crash file."""
    cause = root_cause(text)
    fix = fix_for(cause)
    return f"{what}: {cause}" + (f"; {fix}" if fix else "") + f"; crash file: {crash_file}"


def node_failure(t1w: T1wInput, crash_file: Path, logs: Path) -> Failure:
    """A one-line failure from nipype's crash file (the node, the root cause, its fix); also
    written to the T1w's own crash file, which the group report links."""
    text = crash_file.read_text(encoding="utf-8", errors="replace")
    node = crashed_node(crash_file).rsplit(".", 1)[-1]
    reason = failure_line(f"{t1w.path}: preprocessing failed in step {node}", text, crash_file)
    write_crash(logs, t1w, f"{reason}\n\n{text}")
    ours = any(_EXCEPTION.match(line.strip()) and "BidsMddError" in line
               for line in text.splitlines())  # our own checks inside a step: the data's fault
    return Failure(t1w, reason, crash_file,
                   ExitCode.BAD_DATA if ours else ExitCode.FAILURE)


def exit_code_for(failures: list[Failure], n_inputs: int) -> ExitCode:
    """0 when all succeeded; when every input failed for one reason of the input's own (65 bad
    data, 66 missing or unreadable), that code; 1 otherwise."""
    if not failures:
        return ExitCode.OK
    codes = {failure.exit_code for failure in failures}
    if len(failures) == n_inputs and len(codes) == 1:
        return codes.pop()
    return ExitCode.FAILURE
