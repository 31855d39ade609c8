"""QC figures: tissue contours on the native T1w; the MNI-space T1w under the template's edges."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures are files

import matplotlib.pyplot as plt
import numpy as np
from nilearn import plotting
from nilearn.image import math_img


def segmentation_figure(t1w: str, mask: str, gm: str, wm: str, out_file: str) -> str:
    """Brain mask (red), GM (green) and WM (blue) outlines on the bias-corrected native T1w."""
    figure = plt.figure(figsize=(12, 4))
    display = plotting.plot_anat(t1w, display_mode="ortho", figure=figure, dim=-0.5,
                                 title="brain mask (red), GM > 0.5 (green), WM > 0.5 (blue)")
    display.add_contours(mask, levels=[0.5], colors="r", linewidths=1.0)
    display.add_contours(gm, levels=[0.5], colors="lime", linewidths=0.6)
    display.add_contours(wm, levels=[0.5], colors="b", linewidths=0.6)
    figure.savefig(out_file)
    plt.close(figure)
    return out_file


def lifted_t1w(t1w_mni: str):
    """The z-scored MNI-space T1w lifted above its zero background, which then shows black."""
    return math_img("np.where(t != 0, t + 3.0, 0.0)", t=t1w_mni)


def registration_figure(t1w_mni: str, template: str, template_mask: str, out_file: str) -> str:
    """The T1w in MNI space under the brain-extracted template's edges (axial mosaic)."""
    shown = lifted_t1w(t1w_mni)
    template_brain = math_img("t * (m > 0)", t=template, m=template_mask)
    values = np.asarray(template_brain.dataobj)
    boundary = float(np.percentile(values[values > 0], 60))  # about the GM/WM boundary
    figure = plt.figure(figsize=(12, 3.5))
    display = plotting.plot_anat(shown, display_mode="z", figure=figure,
                                 cut_coords=(-40, -20, 0, 15, 30, 45, 60),
                                 vmin=0.0, vmax=6.0, black_bg=True,
                                 title="T1w in MNI152NLin2009cAsym; template GM/WM boundary "
                                       "in red")
    # contours rather than nilearn's add_edges, which streaks over flat background
    display.add_contours(template_brain, levels=[boundary], colors="r", linewidths=0.6)
    figure.savefig(out_file)
    plt.close(figure)
    return out_file
