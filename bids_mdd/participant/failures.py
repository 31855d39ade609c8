"""Failures of the participant level: one line each, a crash file each, and the exit code."""

from __future__ import annotations

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
    bad_data: bool


def write_crash(logs: Path, t1w: T1wInput, text: str) -> Path:
    """Write ``text`` to the T1w's crash file under ``logs``; return its path."""
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / crash_name(t1w.output_entities())
    path.write_text(text, encoding="utf-8")
    return path


def from_error(logs: Path, t1w: T1wInput, error: BidsMddError) -> Failure:
    """A failure from one of our own errors (its message is already the one line)."""
    crash = write_crash(logs, t1w, f"{error}\n")
    return Failure(t1w, str(error), crash, error.exit_code == ExitCode.BAD_DATA)


def crashed_node(crash_file: Path) -> str:
    """The full name of the node a nipype crash file is about (its ``Node:`` line)."""
    with open(crash_file, encoding="utf-8") as stream:
        first = stream.readline()
    return first.removeprefix("Node:").strip()


def node_failure(t1w: T1wInput, crash_file: Path) -> Failure:
    """A failure naming the node's error, from nipype's crash file."""
    lines = [line for line in crash_file.read_text(encoding="utf-8").splitlines()
             if line.strip()]
    error = next((line for line in reversed(lines) if "Error" in line), lines[-1])
    return Failure(t1w, f"{t1w.path}: preprocessing failed ({error.strip()}); crash file: "
                        f"{crash_file}", crash_file, False)


def exit_code_for(failures: list[Failure], n_inputs: int) -> ExitCode:
    """0 when all succeeded; 65 when every input failed on bad data; 1 otherwise."""
    if not failures:
        return ExitCode.OK
    if len(failures) == n_inputs and all(f.bad_data for f in failures):
        return ExitCode.BAD_DATA
    return ExitCode.FAILURE
