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
    crash_file: Path | None  # None: it could not be written (a full or read-only disk)
    exit_code: ExitCode = ExitCode.FAILURE  # BAD_DATA, MISSING_INPUT: the input's fault;
    # CANNOT_CREATE_OUTPUT: the output or work folder's (full, read-only, not permitted)


def write_crash(logs: Path, t1w: T1wInput, text: str) -> Path | None:
    """Write ``text`` to the T1w's crash file under ``logs``; return its path, or None when the
    disk refuses it (the failure's line then says everything there is)."""
    path = logs / crash_name(t1w.output_entities())
    try:
        logs.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError:
        return None
    return path


def from_error(logs: Path, t1w: T1wInput, error: BidsMddError) -> Failure:
    """A failure from one of our own errors (its message is already the one line)."""
    crash = write_crash(logs, t1w, f"{error}\n")
    return Failure(t1w, str(error), crash, error.exit_code)


def output_failure(cause: str) -> bool:
    """Whether ``cause`` is the output or work folder's: full, over quota, read-only, or not
    writable by this user (exit 73, CANNOT_CREATE_OUTPUT)."""
    return any(text in cause for text in _OUTPUT_CAUSES)


def crashed_node(crash_file: Path) -> str:
    """The full name of the node a nipype crash file is about (its ``Node:`` line)."""
    with open(crash_file, encoding="utf-8") as stream:
        first = stream.readline()
    return first.removeprefix("Node:").strip()


#: A Python exception line of a traceback: ``module.Name: message``.
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)): ?(.*)$")
#: Exception lines that only wrap the real one (nipype's, and our interfaces' re-raises).
_WRAPPERS = ("Exception raised while executing Node", "Traceback")
#: Causes that are the output or work folder's (exit 73): (text in the cause, what to do).
_OUTPUT_FIXES = (("No space left on device", "free disk space (or choose another -w / "
                  "OUTPUT_DIR) and rerun: finished steps are kept"),
                 ("Disk quota exceeded", "raise the quota or choose another -w / OUTPUT_DIR, "
                  "then rerun"),
                 ("Read-only file system", "choose a writable -w / OUTPUT_DIR"),
                 ("Permission denied", "give the user running bids_mdd write access to -w and "
                  "OUTPUT_DIR"))
#: Root causes whose fix is not in the data.
_FIXES = (*_OUTPUT_FIXES,
          ("Cannot allocate memory", "give the job more memory (--mem-gb, SLURM --mem)"),
          ("MemoryError", "give the job more memory (--mem-gb, SLURM --mem)"))
_OUTPUT_CAUSES = tuple(text for text, _ in _OUTPUT_FIXES)


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


def failure_line(what: str, text: str, crash_file: Path | None) -> str:
    """``what`` failed: the root cause of ``text`` (a traceback), its fix, the crash file."""
    cause = root_cause(text)
    fix = fix_for(cause)
    where = f"crash file: {crash_file}" if crash_file else "no crash file could be written"
    return f"{what}: {cause}" + (f"; {fix}" if fix else "") + f"; {where}"


def traceback_failure(t1w: T1wInput, what: str, trace: str, logs: Path) -> Failure:
    """A failure from a traceback of ours (its crash file written when the disk allows)."""
    crash = write_crash(logs, t1w, trace)
    cause = root_cause(trace)
    code = ExitCode.CANNOT_CREATE_OUTPUT if output_failure(cause) else ExitCode.FAILURE
    return Failure(t1w, failure_line(what, trace, crash), crash, code)


def node_failure(t1w: T1wInput, crash_file: Path, logs: Path) -> Failure:
    """A one-line failure from nipype's crash file (the node, the root cause, its fix); also
    written to the T1w's own crash file, which the group report links."""
    text = crash_file.read_text(encoding="utf-8", errors="replace")
    node = crashed_node(crash_file).rsplit(".", 1)[-1]
    reason = failure_line(f"{t1w.path}: preprocessing failed in step {node}", text, crash_file)
    write_crash(logs, t1w, f"{reason}\n\n{text}")
    ours = any(_EXCEPTION.match(line.strip()) and "BidsMddError" in line
               for line in text.splitlines())  # our own checks inside a step: the data's fault
    code = (ExitCode.BAD_DATA if ours else ExitCode.CANNOT_CREATE_OUTPUT
            if output_failure(root_cause(text)) else ExitCode.FAILURE)
    return Failure(t1w, reason, crash_file, code)


def exit_code_for(failures: list[Failure], n_inputs: int) -> ExitCode:
    """0 when all succeeded; when every input failed for one kind of reason that is not ours (65
    bad data, 66 missing or unreadable input, 73 output folder full or read-only), that code;
    1 otherwise."""
    if not failures:
        return ExitCode.OK
    codes = {failure.exit_code for failure in failures}
    if len(failures) == n_inputs and len(codes) == 1:
        return codes.pop()
    return ExitCode.FAILURE
