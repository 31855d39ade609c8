"""Shared fixtures: the ../shared material (skipped when absent) and small BIDS datasets."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
#: Runs the participant level in a child process and kills it at a chosen step.
CRASH_AT = TESTS / "crash_at.py"
SHARED = REPO.parent / "shared"
SHARED_TEMPLATEFLOW = SHARED / "templateflow"
REAL_BIDS = SHARED / "data" / "ds002748-subset"

if SHARED_TEMPLATEFLOW.is_dir():  # before any test imports templateflow
    os.environ.setdefault("TEMPLATEFLOW_HOME", str(SHARED_TEMPLATEFLOW))
os.environ.setdefault("TEMPLATEFLOW_AUTOUPDATE", "0")


def checksums(root: Path) -> dict[str, str]:
    """Every entry under ``root``: file content (as root reads it), link target, mode."""
    found = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = f"link {os.readlink(path)}"
        elif path.is_file():
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest() + oct(path.stat().st_mode)
        else:
            found[key] = "dir " + oct(path.stat().st_mode)
    return found


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: this test needs the project's ../shared folder")
    return path


@pytest.fixture(scope="session")
def real_bids() -> Path:
    """The 20-subject real depression cohort (skull-stripped T1w)."""
    return _need(REAL_BIDS)


@pytest.fixture(scope="session")
def templateflow_home() -> Path:
    return _need(SHARED_TEMPLATEFLOW)


def write_tiny_t1w(path: Path, value: float = 1.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), value, np.float32), np.eye(4)), path)


def make_tiny_bids(root: Path, layout: dict[str, list[str]]) -> Path:
    """A minimal BIDS dataset: ``layout`` maps subject -> T1w name stems under anat/.

    A stem such as ``"ses-1/run-2"`` writes ``sub-X/ses-1/anat/sub-X_ses-1_run-2_T1w.nii.gz``.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "tiny", "BIDSVersion": "1.10.0"}))
    for subject, stems in layout.items():
        for stem in stems:
            parts = [p for p in stem.split("/") if p]
            session = next((p for p in parts if p.startswith("ses-")), None)
            folder = root / f"sub-{subject}" / (session or "") / "anat"
            name = "_".join([f"sub-{subject}", *parts, "T1w.nii.gz"])
            write_tiny_t1w(folder / name)
    return root


@pytest.fixture
def tiny_bids(tmp_path: Path) -> Path:
    """Three subjects; sub-01 has two sessions, its ses-1 two runs; sub-03 has no session."""
    return make_tiny_bids(tmp_path / "bids", {
        "01": ["ses-1/run-1", "ses-1/run-2", "ses-2/run-1"],
        "02": ["ses-1", "ses-2"],
        "03": [""],
    })


class CreatesFile:
    """A pickle payload: unpickling it would create ``path`` (it must never be unpickled)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def relist_weights(bundle_dir: Path) -> None:
    """Record every weight file's current sha256 in model.json, as a hostile bundle would."""
    from bids_mdd.models.bundle import sha256_of

    meta = json.loads((bundle_dir / "model.json").read_text())
    for fold in meta["folds"]:
        fold["sha256"] = sha256_of(bundle_dir / fold["file"])
    (bundle_dir / "model.json").write_text(json.dumps(meta))
