"""Time pybids discovery of T1w images in a large synthetic BIDS tree (500 participants).

Prints figures; asserts nothing. Run: ``.venv/bin/python benchmarks/discovery.py [N]``.
Target from issue 2: indexing 500 participants in < 30 s on 2 cores.
"""

from __future__ import annotations

import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_mdd.bids.discovery import discover_t1w, open_layout


def make_tree(root: Path, n_subjects: int) -> int:
    """Two sessions per participant, a T1w (+ sidecar) and a rest BOLD each; returns file count."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "bench",
                                                               "BIDSVersion": "1.10.0"}))
    blob = gzip.compress(nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4)).to_bytes())
    count = 0
    for s in range(1, n_subjects + 1):
        for ses in ("1", "2"):
            stem = f"sub-{s:04d}_ses-{ses}"
            for kind, name in (("anat", f"{stem}_T1w"), ("func", f"{stem}_task-rest_bold")):
                folder = root / f"sub-{s:04d}" / f"ses-{ses}" / kind
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{name}.nii.gz").write_bytes(blob)
                (folder / f"{name}.json").write_text('{"RepetitionTime": 2.0}')
                count += 2
    return count


def main(n_subjects: int = 500) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root, db = Path(tmp) / "bids", Path(tmp) / "db"
        start = time.perf_counter()
        n_files = make_tree(root, n_subjects)
        print(f"tree: {n_subjects} participants, {n_files} files, "
              f"written in {time.perf_counter() - start:.1f} s")
        for label, kwargs in (("index (no database)", {}),
                              ("index into --bids-database-dir", {"database_dir": db}),
                              ("reuse --bids-database-dir", {"database_dir": db})):
            start = time.perf_counter()
            layout = open_layout(root, **kwargs)
            indexed = time.perf_counter() - start
            inputs = discover_t1w(layout)
            total = time.perf_counter() - start
            print(f"{label:32s} index {indexed:6.2f} s, +discovery {total:6.2f} s, "
                  f"{len(inputs)} T1w")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
