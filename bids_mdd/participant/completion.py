"""Finished T1w: a record in the work dir that lets a rerun skip a T1w whole.

A resume through nipype looks at every node's cache, one scheduler round per step; for a
participant that is already finished, that is seconds per participant for no work. When its
derivatives step ends, the record keeps what the derivatives were made from and what was
written; a rerun skips the T1w only when both are unchanged. Files are compared by size and
modification time, as nipype's own default (``hash_method = timestamp``) compares its inputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bids_mdd import __version__
from bids_mdd.bids.atomic import write_json
from bids_mdd.bids.discovery import T1wInput
from bids_mdd.bids.names import sidecar_path
from bids_mdd.bids.outputs import OUTPUTS
from bids_mdd.preproc.workflow import TOP_WORKFLOW, PreprocOptions, bids_uri, workflow_name
from bids_mdd.spaces.templates import required_templates

RECORD_NAME = "bids_mdd_finished.json"


def record_path(work_dir: Path, t1w: T1wInput) -> Path:
    """The T1w's record, beside its nodes' folders in the work dir."""
    return work_dir / TOP_WORKFLOW / workflow_name(t1w) / RECORD_NAME


def _stat(path: Path) -> list[int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return [status.st_size, status.st_mtime_ns]


def derivative_files(output_dir: Path, t1w: T1wInput) -> list[Path]:
    """Every preprocessing derivative of ``t1w`` and every image's sidecar."""
    outputs = t1w.outputs(output_dir)
    paths = [outputs.output(name) for name in OUTPUTS]
    return paths + [sidecar_path(path) for path in paths if path.name.endswith(".nii.gz")]


def made_from(t1w: T1wInput, bids_dir: Path, output_dir: Path, options: PreprocOptions
              ) -> dict[str, Any]:
    """What the derivatives of ``t1w`` depend on, threads aside (a rerun with other thread
    counts finds the same results, as nipype's cache does)."""
    return {"Version": __version__, "T1w": [str(t1w.path.absolute()), _stat(t1w.path)],
            "Sources": [bids_uri(t1w, bids_dir)], "OutputDir": str(output_dir.absolute()),
            "Templates": [[str(path), _stat(path)] for path in required_templates()],
            "Parameters": options.sidecar_parameters()}


def _written(output_dir: Path, t1w: T1wInput) -> dict[str, list[int] | None]:
    return {path.relative_to(output_dir).as_posix(): _stat(path)
            for path in derivative_files(output_dir, t1w)}


def record_finished(work_dir: Path, t1w: T1wInput, inputs: dict[str, Any], output_dir: Path
                    ) -> None:
    """Record ``t1w`` as finished, from ``inputs`` (:func:`made_from`); a disk that refuses
    the record only costs the next run its shortcut."""
    written = _written(output_dir, t1w)
    if None in written.values():
        return
    try:
        write_json(record_path(work_dir, t1w), {"MadeFrom": inputs, "Written": written})
    except OSError:
        pass


def is_finished(work_dir: Path, t1w: T1wInput, inputs: dict[str, Any], output_dir: Path
                ) -> bool:
    """Whether the record says ``t1w`` was finished from these same ``inputs`` and every
    derivative is still the file that was written then."""
    try:
        record = json.loads(record_path(work_dir, t1w).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    # through JSON, so that tuples and lists compare alike
    return (isinstance(record, dict) and record.get("MadeFrom") == json.loads(json.dumps(inputs))
            and record.get("Written") == _written(output_dir, t1w))

