"""Deep-learning brain extraction of whole-head T1w images with deepbet (offline, CPU).

deepbet (MIT; Fisch et al. 2024) ships its two TorchScript networks inside its wheel, so it
needs no download. We import only ``deepbet.bet``: the package's ``ui`` module pulls in a GUI
toolkit (customtkinter/tkinter) that containers do not have.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version

import nibabel as nib
import numpy as np


@lru_cache(maxsize=1)
def _extractor():
    from deepbet.bet import BrainExtraction

    return BrainExtraction(no_gpu=True)


def deepbet_mask(t1w: str, n_threads: int = 1) -> tuple[np.ndarray | None, str]:
    """deepbet's brain mask of ``t1w`` on its voxel grid, and ``deepbet <version>``; or None and
    why not (deepbet not installed, or it failed on this image)."""
    try:
        name = f"deepbet {version('deepbet')}"
        extractor = _extractor()
    except (PackageNotFoundError, ImportError) as exc:
        return None, f"deepbet unavailable: {type(exc).__name__}"
    import torch

    torch.set_num_threads(max(1, n_threads))
    image = nib.load(t1w)
    try:
        _, mask, _ = extractor.run(image)
    except Exception as exc:  # deepbet asserts on images without enough foreground
        return None, f"deepbet failed: {type(exc).__name__}: {str(exc)[:80]}"
    # deepbet returns the mask in the input's orientation; our inputs are RAS already
    return np.asarray(mask.dataobj) > 0, name
