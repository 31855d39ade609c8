"""Attention-map figures: the map's top voxels over the participant's MNI-space T1w."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures are files

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
from nilearn import plotting

from bids_mdd.preproc.figures import lifted_t1w

#: Attention shown: voxels above this percentile of the map inside the brain.
SHOWN_PERCENTILE = 99.0


def attention_figure(attention: nib.Nifti1Image, t1w_mni: str, out_file: str,
                     title: str) -> str:
    """Axial mosaic of the top 1 % attention voxels (hot colours) over the T1w.

    The top 1 % of the non-zero voxels by value (for a signed map, its most positive part).
    """
    values = np.asarray(attention.dataobj, dtype=np.float32)
    inside = values[values != 0]
    threshold = float(np.percentile(inside, SHOWN_PERCENTILE)) if inside.size else 0.0
    attention = nib.Nifti1Image(np.maximum(values, 0), attention.affine)
    background = lifted_t1w(t1w_mni)
    figure = plt.figure(figsize=(12, 3.5))
    plotting.plot_stat_map(attention, bg_img=background, display_mode="z",
                           cut_coords=(-40, -20, -10, 0, 15, 30, 45, 60), threshold=threshold,
                           cmap="hot", black_bg=True, figure=figure,
                           symmetric_cbar=False, colorbar=True, draw_cross=False,
                           title=f"{title}: top {100 - SHOWN_PERCENTILE:g} % of voxels")
    figure.savefig(out_file)
    plt.close(figure)
    return out_file
