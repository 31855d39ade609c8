"""QC figures: tissue contours on the native T1w; the MNI-space T1w under the template's edges."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures are files

import matplotlib.pyplot as plt  # noqa: E402
from nilearn import plotting  # noqa: E402


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


def registration_figure(t1w_mni: str, template: str, out_file: str) -> str:
    """The T1w in MNI space with the template's edges on top (mosaic of axial slices)."""
    figure = plt.figure(figsize=(12, 3.5))
    display = plotting.plot_anat(t1w_mni, display_mode="z", cut_coords=7, figure=figure,
                                 title="T1w in MNI152NLin2009cAsym, template edges in red")
    display.add_edges(template, color="r")
    figure.savefig(out_file)
    plt.close(figure)
    return out_file
