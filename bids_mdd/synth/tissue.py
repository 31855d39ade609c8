"""Grey/white matter and CSF partial-volume maps of the template, from its T1w intensities.

TemplateFlow's tissue probability maps are not in the offline home we rely on, so a 3-class
Gaussian mixture (scikit-learn) on the T1w intensities inside the brain mask stands in for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.mixture import GaussianMixture

TISSUES = ("CSF", "GM", "WM")


@dataclass(frozen=True)
class TissueMaps:
    """Partial volumes (CSF, GM, WM; zero outside the brain) and each class's mean intensity."""

    partial_volumes: np.ndarray  # float32, shape (3, *image.shape)
    means: np.ndarray  # float64, shape (3,), ordered as TISSUES

    def of(self, tissue: str) -> np.ndarray:
        return self.partial_volumes[TISSUES.index(tissue)]


def tissue_maps(t1w: np.ndarray, brain_mask: np.ndarray, seed: int = 0,
                n_fit: int = 200_000) -> TissueMaps:
    """Fit a 3-class Gaussian mixture to the T1w inside ``brain_mask``; posteriors as partial
    volumes.

    Classes are ordered by mean intensity: CSF < GM < WM on a T1w.
    """
    values = t1w[brain_mask].astype(np.float64)
    rng = np.random.default_rng(seed)
    sample = rng.choice(values, size=min(n_fit, values.size), replace=False)
    mixture = GaussianMixture(n_components=3, random_state=seed).fit(sample[:, None])
    order = np.argsort(mixture.means_.ravel())
    posteriors = mixture.predict_proba(values[:, None])[:, order]
    maps = np.zeros((3, *t1w.shape), dtype=np.float32)
    for k in range(3):
        maps[k][brain_mask] = posteriors[:, k]
    return TissueMaps(partial_volumes=maps, means=mixture.means_.ravel()[order])
