"""ComBat inside cross-validation (``bids_mdd-train --harmonize``): fitted on each fold's
training part alone, over the site only, and applied to its validation and test parts by site
alone.

A fit on all participants before splitting leaks: it sees the test participants' site means
and, told to keep the diagnosis, their labels (``tests/test_harmonize.py`` shows the damage).
Here the validation and test participants are harmonised with the training part's estimates
when their site is in it; a site the training part never saw (leave-site-out) gets its own
location and scale from its participants' images, without labels
(:meth:`bids_mdd.harmonize.CombatFit.apply_to_new_site`).

The target is not kept, unlike the group level's ComBat, although the fit sees only training
labels. Kept, it makes each site's harmonised mean the training part's target effect times the
site's share of patients: a test participant of a site with many patients is moved towards
the patients, by its site alone, and the site's diagnosis mix leaks into its features (Nygaard
et al. 2016, Biostatistics 17:29; Nieto et al. 2026, Neurocomputing 680:133146 for machine
learning). On null synthetic sites this kept stratified folds above chance
(``benchmarks/multisite_classifier.py``). Without it, the part of a real effect that lies
between sites is removed with the sites: the cost of not knowing a new participant's label.

Each voxel's own site estimates are used unless ``empirical_bayes``: pooling a site's effects
across voxels (ComBat's default, meant for few features) shrinks a site effect confined to some
voxels towards the site's whole-brain one and leaves part of it in place, and a classifier
then decodes the site, and through it a diagnosis confounded with site, from what is left
(the group level's default is the same).

The bundle keeps a fit on all its participants (:meth:`FoldHarmonizer.bundle_fit`): the
participant level applies it to a new scan of a known site.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.harmonize import MIN_PER_SITE, CombatFit, HarmonizationError, fit_combat
from bids_mdd.training.splits import Fold

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldHarmonizer:
    """Per fold, the inputs (participants x volume) with that fold's ComBat applied."""

    inputs: np.ndarray
    sites: np.ndarray
    empirical_bayes: bool = False  # pool each site's effects across voxels (see above)

    def fit(self, rows: np.ndarray, where: str) -> tuple[CombatFit, np.ndarray]:
        """ComBat fitted on the inputs ``rows`` over their sites, and those inputs harmonised,
        flat; ``where`` names the fit in an error."""
        flat = self.inputs.reshape(len(self.inputs), -1)
        try:
            return fit_combat(flat[rows], self.sites[rows],
                              empirical_bayes=self.empirical_bayes)
        except HarmonizationError as error:
            raise BidsMddError(f"--harmonize, {where}: {error}", ExitCode.USAGE) from None

    def bundle_fit(self) -> tuple[CombatFit, np.ndarray]:
        """The fit on every input, as the bundle's networks (each trained on a fold's part)
        are applied to new scans, and every input harmonised by it (shaped as the inputs)."""
        fit, harmonised = self.fit(np.arange(len(self.inputs)), "all participants")
        return fit, harmonised.reshape(self.inputs.shape).astype(self.inputs.dtype)

    def __call__(self, fold: Fold) -> np.ndarray:
        flat = self.inputs.reshape(len(self.inputs), -1)
        fit, train = self.fit(fold.train, fold.name)
        out = flat.copy()
        out[fold.train] = train
        for part in (fold.val, fold.test):
            for site in np.unique(self.sites[part]):
                rows = part[self.sites[part] == site]
                if fit.knows(site):
                    out[rows] = fit.apply(flat[rows], self.sites[rows])
                elif len(rows) < MIN_PER_SITE:
                    LOGGER.warning("%s: site %s, new to the training part, has %d participant "
                                   "here: left unharmonised", fold.name, site, len(rows))
                else:
                    LOGGER.info("%s: site %s not in the training part: harmonised by its own "
                                "location and scale", fold.name, site)
                    out[rows] = fit.apply_to_new_site(flat[rows])
        return out.reshape(self.inputs.shape).astype(self.inputs.dtype)
