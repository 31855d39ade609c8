"""ComBat inside cross-validation (``bids_mdd-train --harmonize``): fitted on each fold's
training part alone, with the target kept, and applied to its validation and test parts by
site alone.

A fit on all participants before splitting leaks: it sees the test participants' site means
and, told to keep the diagnosis, their labels (``tests/test_harmonize.py`` shows the damage).
Here the validation and test participants are harmonised with the training part's estimates
when their site is in it; a site the training part never saw (leave-site-out) gets its own
location and scale from its participants' images, without labels
(:meth:`bids_mdd.harmonize.CombatFit.apply_to_new_site`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.harmonize import MIN_PER_SITE, HarmonizationError, fit_combat
from bids_mdd.models.task import Task
from bids_mdd.training.splits import Fold

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldHarmonizer:
    """Per fold, the inputs (participants x volume) with that fold's ComBat applied."""

    inputs: np.ndarray
    sites: np.ndarray
    target: np.ndarray
    task: Task

    def __call__(self, fold: Fold) -> np.ndarray:
        flat = self.inputs.reshape(len(self.inputs), -1)
        target = pd.DataFrame({"target": self.target[fold.train]})
        kept = {"categorical": ["target"]} if self.task == Task.CLASSIFICATION else {
            "continuous": ["target"]}
        try:
            fit, train = fit_combat(flat[fold.train], self.sites[fold.train], target, **kept)
        except HarmonizationError as error:
            raise BidsMddError(f"--harmonize, {fold.name}: {error}", ExitCode.USAGE) from None
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
