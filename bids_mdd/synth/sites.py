"""Synthetic acquisition sites: each with its own scanner signature and its own sample.

Real consortia confound site with diagnosis: one site recruits more patients, another older
controls, and each scanner has its own intensities, contrast, noise and voxel size. A
segmentation turns some of that into grey matter that is not there: globally (the GM-WM
contrast moves the tissue boundary) and in places (a coil's sensitivity, a distortion). Every
number here is ours and goes into ``ground_truth.json``; the planted MDD effect is unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: Voxel sizes of the sites, as factors of the cohort's ``--resolution``.
RESOLUTION_FACTORS = (1.0, 1.0, 1.2)


@dataclass(frozen=True)
class SiteSignature:
    """One site's scanner and sample.

    The T1w at the site: its intensities times ``intensity_scale``, GM moved towards WM by
    ``gm_contrast`` of the WM-GM difference, a bias field of SD ``bias_sd``, noise of
    ``noise_fraction`` of WM, voxels ``resolution_factor`` times the cohort's, and in
    ``offset_region`` GM moved a further ``offset`` towards WM. What a segmentation makes of it,
    in the model inputs rendered straight into MNI space: GM times ``gm_scale``, and times
    ``1 - offset`` in ``offset_region``.
    """

    name: str
    mdd_fraction: float
    age_range: tuple[float, float]
    resolution_factor: float
    intensity_scale: float
    gm_contrast: float
    bias_sd: float
    noise_fraction: float
    offset_region: str
    offset: float

    @property
    def gm_scale(self) -> float:
        """The segmented GM's factor at this site: a GM brighter towards WM is less GM."""
        return round(1.0 - self.gm_contrast, 4)

    def to_json(self) -> dict:
        """The signature for ``ground_truth.json``, the derived GM scale included."""
        return {**asdict(self), "gm_scale": self.gm_scale}


def draw_sites(n_sites: int, *, seed: int, offset: float, bias_sd: float, noise_fraction: float,
               age_range: tuple[float, float], candidate_regions: list[str],
               ) -> list[SiteSignature]:
    """``n_sites`` sites from ``seed``: MDD fractions spread over 0.1-0.9 in a random order,
    age ranges 20 years wide at random centres, scanner settings around the cohort's, and each
    site's offset in a region of its own drawn from ``candidate_regions``."""
    if n_sites < 2:
        raise ValueError("--sites needs at least 2 sites (1 is a single-site cohort)")
    if len(candidate_regions) < n_sites:
        raise ValueError(f"only {len(candidate_regions)} regions for {n_sites} sites' offsets")
    rng = np.random.default_rng([seed, 101])
    fractions = rng.permutation(np.linspace(0.1, 0.9, n_sites))
    regions = rng.choice(sorted(candidate_regions), size=n_sites, replace=False)
    low, high = age_range
    sites = []
    for k in range(n_sites):
        centre = rng.uniform(low + 10.0, high - 10.0) if high - low > 20 else (low + high) / 2
        contrast = float(rng.uniform(-0.08, 0.12))
        sites.append(SiteSignature(
            name=f"site{k + 1}", mdd_fraction=round(float(fractions[k]), 3),
            age_range=(round(max(low, centre - 10.0), 1), round(min(high, centre + 10.0), 1)),
            resolution_factor=RESOLUTION_FACTORS[k % len(RESOLUTION_FACTORS)],
            intensity_scale=round(float(np.exp(rng.normal(0.0, 0.2))), 3),
            gm_contrast=round(contrast, 3),
            bias_sd=round(bias_sd * float(rng.uniform(0.5, 2.0)), 4),
            noise_fraction=round(noise_fraction * float(rng.uniform(0.5, 2.0)), 4),
            offset_region=str(regions[k]), offset=offset))
    return sites


def assign_sites(groups: np.ndarray, sites: list[SiteSignature], seed: int) -> list[int]:
    """Each participant's site index: site k takes a share of the MDD participants in
    proportion to its ``mdd_fraction`` and of the controls to one minus it, at least one of
    each where there are enough (ComBat cannot fit a site holding one diagnosis only)."""
    rng = np.random.default_rng([seed, 102])
    fractions = np.array([site.mdd_fraction for site in sites])
    assigned = np.empty(len(groups), dtype=int)
    for group, weights in (("MDD", fractions), ("HC", 1.0 - fractions)):
        members = np.flatnonzero(groups == group)
        counts = _allocate(len(members), weights / weights.sum(), minimum=1)
        labels = np.repeat(np.arange(len(sites)), counts)
        assigned[members] = rng.permutation(labels)
    return assigned.tolist()


def _allocate(n: int, shares: np.ndarray, minimum: int) -> np.ndarray:
    """``n`` items over bins by ``shares`` (largest remainder), each bin ``minimum`` first
    when ``n`` allows it."""
    floor = minimum if n >= minimum * len(shares) else 0
    rest = n - floor * len(shares)
    raw = shares * rest
    counts = np.floor(raw).astype(int)
    for index in np.argsort(raw - counts)[::-1][: rest - counts.sum()]:
        counts[index] += 1
    return counts + floor
