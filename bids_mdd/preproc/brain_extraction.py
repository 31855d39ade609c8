"""Deep-learning brain extraction of whole-head T1w images with deepbet (offline, CPU).

deepbet (MIT; Fisch et al. 2024) ships its two TorchScript networks inside its wheel, so it
needs no download. It runs in a fresh Python process: nipype's MultiProc forks its workers, and
torch in a forked child of a process that already used torch's thread pool hangs (seen in our
test suite). We import only ``deepbet.bet``: the package's ``ui`` module pulls in a GUI toolkit
(customtkinter/tkinter) that containers do not have.

Run as ``python -m bids_mdd.preproc.brain_extraction T1W MASK [THREADS [PARENT_PID]]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version

import nibabel as nib
import numpy as np

#: deepbet takes 3-20 s on CPU; a hung one must not hang the participant
TIMEOUT_S = 600


def deepbet_mask(t1w: str, n_threads: int = 1) -> tuple[np.ndarray | None, str]:
    """deepbet's brain mask of ``t1w`` on its voxel grid, and ``deepbet <version>``; or None and
    why not (deepbet not installed, or it failed on this image)."""
    try:
        name = f"deepbet {version('deepbet')}"
    except PackageNotFoundError:
        return None, "deepbet is not installed"
    with tempfile.TemporaryDirectory(prefix="deepbet-") as scratch:
        mask_path = os.path.join(scratch, "mask.nii.gz")
        try:
            done = subprocess.run([sys.executable, "-m", __name__, t1w, mask_path,
                                   str(n_threads), str(os.getpid())], capture_output=True,
                                  text=True, check=False, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return None, f"deepbet did not finish within {TIMEOUT_S} s"
        if done.returncode != 0 or not os.path.isfile(mask_path):
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            return None, f"deepbet failed: {lines[-1][:120] if lines else done.returncode}"
        return np.asarray(nib.load(mask_path).dataobj) > 0, name


def _main(t1w: str, mask_path: str, n_threads: int) -> None:
    import torch
    from deepbet.bet import BrainExtraction

    torch.set_num_threads(max(1, n_threads))
    # deepbet returns the mask in the input's orientation (ours are RAS already)
    _, mask, _ = BrainExtraction(no_gpu=True).run(nib.load(t1w))
    mask.to_filename(mask_path)


if __name__ == "__main__":
    if len(sys.argv) > 4:  # the worker that started it: end with it, even if it is SIGKILLed
        from bids_mdd.lifetime import die_with_parent

        die_with_parent(int(sys.argv[4]))
    _main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1)
