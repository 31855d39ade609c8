"""Group figures: the MDD-vs-HC t-map (glass brain and axial slices) and mean attention maps,
over the MNI152NLin2009cAsym template, and the classifier's ROC curve."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures are files

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
from nilearn import plotting
from sklearn.metrics import roc_curve

from bids_mdd.group.metrics import classification_metrics
from bids_mdd.spaces.templates import template_t1w

#: Axial slices shown (MNI z, mm).
SLICES = (-40, -25, -10, 0, 10, 25, 40, 55)
#: Mean attention shown: voxels above this percentile of the map's non-zero voxels.
ATTENTION_PERCENTILE = 99.0


def _save(figure: plt.Figure, out_file: str) -> str:
    figure.savefig(out_file, format="svg")
    plt.close(figure)
    return out_file


def _shown(t_map: nib.Nifti1Image, threshold: float) -> tuple[nib.Nifti1Image, float, float]:
    """The t-map as float32, its colour-scale maximum, and the display threshold (voxels
    with |t| below it are transparent; when nothing is shown, one above every |t|)."""
    values = np.asarray(t_map.dataobj, dtype=np.float32)
    vmax = max(float(np.abs(values).max()), 1e-6)
    shown = threshold if np.isfinite(threshold) else 2 * vmax
    return nib.Nifti1Image(values, t_map.affine), vmax, float(shown)


def tmap_glass(t_map: nib.Nifti1Image, threshold: float, caption: str, out_file: str) -> str:
    """Glass brain of ``t_map`` at |t| >= ``threshold``, both signs (red MDD > HC, blue
    MDD < HC); ``threshold`` inf shows an empty brain."""
    image, vmax, shown = _shown(t_map, threshold)
    figure = plt.figure(figsize=(11, 4))
    plotting.plot_glass_brain(image, display_mode="lyrz", plot_abs=False, colorbar=True,
                              cmap="RdBu_r", vmin=-vmax, vmax=vmax, threshold=shown,
                              figure=figure, title=f"t, MDD vs HC: {caption}")
    return _save(figure, out_file)


def tmap_slices(t_map: nib.Nifti1Image, threshold: float, caption: str, out_file: str) -> str:
    """Axial slices of ``t_map`` at |t| >= ``threshold`` over the template T1w."""
    image, vmax, shown = _shown(t_map, threshold)
    figure = plt.figure(figsize=(12, 3.5))
    plotting.plot_stat_map(image, bg_img=str(template_t1w(resolution=1)), display_mode="z",
                           cut_coords=SLICES, cmap="RdBu_r", vmax=vmax, symmetric_cbar=True,
                           threshold=shown, colorbar=True, draw_cross=False, black_bg=True,
                           annotate=True, figure=figure, title=caption)
    return _save(figure, out_file)


def attention_figure(mean_map: nib.Nifti1Image, title: str, out_file: str) -> str:
    """Glass brain of the top 1 % of a mean attention map (its most positive part)."""
    values = np.asarray(mean_map.dataobj, dtype=np.float32)
    inside = values[values != 0]
    threshold = float(np.percentile(inside, ATTENTION_PERCENTILE)) if inside.size else 0.0
    shown = nib.Nifti1Image(np.where(values >= threshold, values, 0.0).astype(np.float32),
                            mean_map.affine)
    figure = plt.figure(figsize=(11, 3.6))
    # a display threshold just under the shown values keeps the zeros transparent
    plotting.plot_glass_brain(shown, display_mode="lyrz", plot_abs=False, colorbar=True,
                              cmap="hot", threshold=max(threshold, 0.0) * 0.999 or 1e-12,
                              figure=figure,
                              title=f"{title}: top {100 - ATTENTION_PERCENTILE:g} % of voxels")
    return _save(figure, out_file)


def roc_figure(y_true: np.ndarray, p_mdd: np.ndarray, out_file: str, title: str,
               n_bootstrap: int = 2000, seed: int = 0) -> str:
    """The ROC curve of P(MDD), its AUC and bootstrap 95 % CI in the legend, as SVG.

    Parameters
    ----------
    y_true : np.ndarray
        1 = MDD, 0 = HC (NaN: left out).
    p_mdd : np.ndarray
        Predicted P(MDD) (NaN: left out).
    out_file : str
        Where the SVG goes.
    title : str
        Figure title.
    n_bootstrap, seed : int
        Resamples of the AUC's interval, and their seed.

    Returns
    -------
    str
        ``out_file``. With one class only, the figure shows the chance diagonal and says
        that the ROC curve is undefined.
    """
    y_true, p_mdd = np.asarray(y_true, float).ravel(), np.asarray(p_mdd, float).ravel()
    keep = np.isfinite(y_true) & np.isfinite(p_mdd)
    y_true, p_mdd = y_true[keep], p_mdd[keep]
    metrics = classification_metrics(y_true, p_mdd, n_bootstrap=n_bootstrap, seed=seed)
    figure, axes = plt.subplots(figsize=(5, 5))
    try:
        axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
        auc = metrics["auc"]
        if np.isfinite(auc["value"]):
            fpr, tpr, _ = roc_curve(y_true.astype(int), p_mdd)
            axes.plot(fpr, tpr, color="C0", linewidth=2,
                      label=f"AUC {auc['value']:.3f} (95 % CI {auc['ci_low']:.3f}"
                            f"–{auc['ci_high']:.3f})")
        else:
            axes.text(0.5, 0.6, "ROC undefined: needs MDD and HC participants",
                      ha="center", va="center")
        axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 − specificity (false-positive rate)",
                 ylabel="sensitivity (true-positive rate)",
                 title=f"{title}\n(n = {metrics['n']}: {metrics['n_mdd']} MDD, "
                       f"{metrics['n_hc']} HC)")
        axes.set_aspect("equal")
        axes.legend(loc="lower right")
        figure.tight_layout()
        figure.savefig(out_file, format="svg")
    finally:
        plt.close(figure)
    return out_file
