"""ComBat harmonisation of image features across sites: fitted on some participants, applied to
those and to others.

A site's scanner and protocol shift and scale each voxel's grey matter: ComBat (Johnson et al.
2007; Fortin et al. 2017, 2018) models feature v of participant j at site i as

    y_ijv = alpha_v + X_ij beta_v + gamma_iv + delta_iv * e_ijv,

fits the covariates to preserve (``X``: diagnosis, age, sex, TIV) jointly with the site means,
pools the site location ``gamma`` and scale ``delta`` across features by empirical Bayes (so a
small site is estimated stably), and returns ``(y - alpha - X beta - gamma) / delta * sigma +
alpha + X beta``: the covariates' effects are kept, the sites' removed.

The fit is neuroCombat's (Fortin's reference Python port; neuroHarmonize builds on it but pins
numpy < 2, which this stack cannot take). A fit applied to participants it was not fitted on
follows ``neuroCombatFromTraining``, which needs their site only: it takes the training
participants' mean covariate effect in place of theirs, so no held-out participant's label
(the diagnosis a classifier predicts) is used. Fitting on all participants before splitting them
into folds leaks the test participants' site means and diagnoses into training; callers fit
inside each fold. For prediction even that keeps a leak when the target is among the kept
covariates and sites differ in their diagnosis mix, so training fits over the site alone
(:mod:`bids_mdd.training.harmonization` says why).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

LOGGER = logging.getLogger(__name__)

#: The fewest participants per site: a site's scale ``delta`` is a variance.
MIN_PER_SITE = 2


class HarmonizationError(ValueError):
    """Data ComBat cannot be fitted on or applied to; the message says why and what to do."""


@dataclass(frozen=True)
class CombatFit:
    """A ComBat fit: per site and feature, the location and scale to remove.

    ``varying`` marks the features that were fitted (constant ones pass through unchanged);
    the arrays hold those features only.
    """

    sites: tuple[str, ...]
    covariates: tuple[str, ...]
    n_features: int
    varying: np.ndarray        # (n_features,) bool
    var_pooled: np.ndarray     # (n_fitted,)
    stand_mean: np.ndarray     # (n_fitted,) grand mean over sites
    mod_mean: np.ndarray       # (n_fitted,) the training participants' mean covariate effect
    gamma_star: np.ndarray     # (n_sites, n_fitted)
    delta_star: np.ndarray     # (n_sites, n_fitted)

    def apply(self, data: np.ndarray, sites: Sequence[str]) -> np.ndarray:
        """Harmonise ``data`` (participants x features) of participants at known sites."""
        data = _as_matrix(data, self.n_features)
        sites = _site_labels(sites, len(data))
        unknown = sorted(set(sites) - set(self.sites))
        if unknown:
            raise HarmonizationError(
                f"site(s) {', '.join(unknown)} not in the ComBat fit (fitted on "
                f"{', '.join(self.sites)}): harmonise only participants of those sites")
        # neuroCombatFromTraining's formula, written out: that function turns one-element
        # arrays into integers in a way NumPy deprecates (to become an error) and prints to
        # stdout; tests/test_harmonize.py checks that both give the same numbers.
        index = np.array([self.sites.index(site) for site in sites])
        standardised = self._standardise(data)
        adjusted = (standardised - self.gamma_star[index]) / np.sqrt(self.delta_star[index])
        return self._restore(data, adjusted)

    def apply_to_new_site(self, data: np.ndarray) -> np.ndarray:
        """Harmonise the participants of one site the fit has not seen, by that site's own
        location and scale (each feature's mean and variance of their standardised data).

        It uses no label, but it uses the site's participants together, and takes their mean
        as the site's: a site whose sample differs (more patients, older) loses that
        difference along with its scanner's. ComBat can do no better without the labels.
        """
        data = _as_matrix(data, self.n_features)
        if len(data) < MIN_PER_SITE:
            raise HarmonizationError(f"a new site needs {MIN_PER_SITE} participants or more "
                                     "for its own location and scale")
        standardised = self._standardise(data)
        spread = standardised.var(axis=0)
        spread[spread <= 0] = 1.0
        return self._restore(data, (standardised - standardised.mean(axis=0)) / np.sqrt(spread))

    def _standardise(self, data: np.ndarray) -> np.ndarray:
        """The fitted features less the grand and mean covariate effects, in pooled SDs."""
        return (data[:, self.varying] - self.stand_mean - self.mod_mean) / np.sqrt(
            self.var_pooled)

    def _restore(self, data: np.ndarray, adjusted: np.ndarray) -> np.ndarray:
        """``data`` with its fitted features replaced by ``adjusted``, back on their scale."""
        out = data.copy()
        out[:, self.varying] = (adjusted * np.sqrt(self.var_pooled) + self.stand_mean
                                + self.mod_mean)
        return out

    def estimates(self) -> dict[str, np.ndarray]:
        """The fit in neuroCombat's own format (``neuroCombat(...)["estimates"]``)."""
        return {"batches": np.array(self.sites), "var.pooled": self.var_pooled[:, None],
                "stand.mean": self.stand_mean[:, None], "mod.mean": self.mod_mean[:, None],
                "gamma.star": self.gamma_star, "delta.star": self.delta_star}

    def knows(self, site: str) -> bool:
        return str(site) in self.sites

    def site_affine(self, site: str) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`apply` for one known site as ``data * scale + shift``, per feature.

        ComBat at a known site is affine in each feature: with ``m`` the grand and mean
        covariate effect and ``s`` the pooled SD, ``((y - m) / s - gamma) / sqrt(delta) * s + m``
        is ``y / sqrt(delta) + m (1 - 1 / sqrt(delta)) - gamma s / sqrt(delta)``. Written so,
        a network can apply it inside its forward pass, and input gradients go through it.
        """
        if not self.knows(site):
            raise HarmonizationError(f"site {site} not in the ComBat fit (fitted on "
                                     f"{', '.join(self.sites)})")
        index = self.sites.index(str(site))
        fitted_scale = 1.0 / np.sqrt(self.delta_star[index])
        mean = self.stand_mean + self.mod_mean
        scale, shift = np.ones(self.n_features), np.zeros(self.n_features)
        scale[self.varying] = fitted_scale
        shift[self.varying] = (mean * (1.0 - fitted_scale)
                               - self.gamma_star[index] * np.sqrt(self.var_pooled) * fitted_scale)
        return scale, shift

    def save(self, path: str | Path) -> None:
        """Write the fit as safetensors (no pickle), its site and covariate names in the
        file's metadata."""
        tensors = {"varying": self.varying.astype(np.uint8), "var_pooled": self.var_pooled,
                   "stand_mean": self.stand_mean, "mod_mean": self.mod_mean,
                   "gamma_star": self.gamma_star, "delta_star": self.delta_star}
        save_file({name: np.ascontiguousarray(array) for name, array in tensors.items()},
                  str(path), metadata={"sites": json.dumps(self.sites),
                                       "covariates": json.dumps(self.covariates),
                                       "n_features": str(self.n_features)})

    @classmethod
    def load(cls, path: str | Path) -> CombatFit:
        try:
            with safe_open(str(path), framework="numpy") as saved:
                meta = saved.metadata() or {}
                tensors = {name: saved.get_tensor(name) for name in saved.keys()}
        except (SafetensorError, OSError) as error:
            raise HarmonizationError(f"{path}: not a saved ComBat fit ({error})") from error
        try:
            return cls(sites=tuple(str(s) for s in json.loads(meta["sites"])),
                       covariates=tuple(str(c) for c in json.loads(meta["covariates"])),
                       n_features=int(meta["n_features"]),
                       varying=tensors["varying"].astype(bool),
                       **{name: tensors[name].astype(np.float64) for name in
                          ("var_pooled", "stand_mean", "mod_mean", "gamma_star", "delta_star")})
        except (KeyError, TypeError, ValueError) as error:
            raise HarmonizationError(f"{path}: not a saved ComBat fit ({error})") from error


def fit_combat(data: np.ndarray, sites: Sequence[str], covariates: pd.DataFrame | None = None,
               *, categorical: Sequence[str] = (), continuous: Sequence[str] = (),
               empirical_bayes: bool = True) -> tuple[CombatFit, np.ndarray]:
    """Fit ComBat on ``data`` (participants x features) and return the fit and ``data``
    harmonised, preserving the ``categorical`` and ``continuous`` columns of ``covariates``.

    ``empirical_bayes`` pools each site's location and scale across features (ComBat's
    default, for few features or small sites). It assumes a site shifts every feature alike:
    a site effect confined to some voxels is shrunk towards the site's whole-brain one and
    partly left in place. Without it each feature's site effects are its own estimates.
    """
    data = _as_matrix(data, None)
    table = check_combat_design(covariates, _site_labels(sites, len(data)), categorical,
                                continuous)
    names = [*categorical, *continuous]
    varying = np.ptp(data, axis=0) > 0
    from neuroCombat import neuroCombat

    with _quiet():
        result = neuroCombat(dat=data[:, varying].T, covars=table, batch_col="_site",
                             categorical_cols=list(categorical) or None,
                             continuous_cols=list(continuous) or None, eb=empirical_bayes)
    estimates = result["estimates"]
    fit = CombatFit(sites=tuple(str(s) for s in estimates["batches"]), covariates=tuple(names),
                    n_features=data.shape[1], varying=varying,
                    var_pooled=np.asarray(estimates["var.pooled"], float)[:, 0],
                    stand_mean=np.asarray(estimates["stand.mean"], float)[:, 0],
                    mod_mean=np.asarray(estimates["mod.mean"], float).mean(axis=1),
                    gamma_star=np.asarray(estimates["gamma.star"], float),
                    delta_star=np.asarray(estimates["delta.star"], float))
    harmonised = data.copy()
    harmonised[:, varying] = np.asarray(result["data"]).T
    return fit, harmonised


def site_variance_explained(data: np.ndarray, sites: Sequence[str]) -> np.ndarray:
    """Per feature, the share of variance between site means (one-way ANOVA's eta squared):
    what a site effect looks like before and after harmonisation."""
    data = np.asarray(data, dtype=float)
    sites = np.array(_site_labels(sites, len(data)))
    centred = data - data.mean(axis=0)
    total = (centred**2).sum(axis=0)
    between = np.zeros(data.shape[1])
    for site in np.unique(sites):
        rows = centred[sites == site]
        between += len(rows) * rows.mean(axis=0) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, between / total, 0.0)


def check_combat_design(covariates: pd.DataFrame | None, sites: Sequence[str],
                        categorical: Sequence[str] = (), continuous: Sequence[str] = (),
                        ) -> pd.DataFrame:
    """The table ComBat is fitted with (site, then the covariates to keep), after checking
    that it can be: 2 sites or more, each with :data:`MIN_PER_SITE` participants, covariates
    without n/a, and site not confounded with them."""
    names = [*categorical, *continuous]
    table = pd.DataFrame({"_site": [str(site) for site in sites]})
    if names:
        if covariates is None or len(covariates) != len(table):
            raise HarmonizationError("covariates must hold one row per participant")
        missing = [name for name in names if name not in covariates]
        if missing:
            raise HarmonizationError(f"covariate(s) {', '.join(missing)} not in the table")
        values = covariates[names].reset_index(drop=True)
        if values.isna().any().any():
            raise HarmonizationError(
                "ComBat needs every covariate of every participant: "
                f"{', '.join(values.columns[values.isna().any()])} has n/a")
        table = pd.concat([table, values], axis=1)
    counts = table["_site"].value_counts()
    small = counts[counts < MIN_PER_SITE]
    if len(counts) < 2:
        raise HarmonizationError(f"ComBat needs at least 2 sites; all participants are at site "
                                 f"{counts.index[0]}")
    if len(small):
        raise HarmonizationError(
            f"ComBat needs at least {MIN_PER_SITE} participants per site: "
            + ", ".join(f"{site} has {n}" for site, n in small.items())
            + " (merge or leave out those sites)")
    columns = [pd.get_dummies(table["_site"], dtype=float)]
    for name in categorical:
        columns.append(pd.get_dummies(table[name].astype(str), drop_first=True, dtype=float))
    for name in continuous:
        columns.append(pd.to_numeric(table[name], errors="raise").astype(float).to_frame())
    design = pd.concat(columns, axis=1).to_numpy()
    if np.linalg.matrix_rank(design) < design.shape[1]:
        raise HarmonizationError(
            "site cannot be told apart from the covariates to preserve (e.g. a site holding "
            "one diagnosis only): ComBat would remove the covariate's effect with the site's; "
            "use site as a covariate instead, or leave such sites out")
    return table


def _as_matrix(data: np.ndarray, n_features: int | None) -> np.ndarray:
    data = np.asarray(data, dtype=float)
    if data.ndim != 2:
        raise HarmonizationError(f"expected participants x features, got shape {data.shape}")
    if n_features is not None and data.shape[1] != n_features:
        raise HarmonizationError(f"the ComBat fit has {n_features} features, the data "
                                 f"{data.shape[1]}: the same mask and grid are needed")
    if not np.isfinite(data).all():
        raise HarmonizationError("features must be finite (no NaN or inf)")
    return data


def _site_labels(sites: Sequence[str], n: int) -> list[str]:
    labels = [str(site) for site in sites]
    if len(labels) != n:
        raise HarmonizationError(f"{len(labels)} site labels for {n} participants")
    return labels


@contextlib.contextmanager
def _quiet():
    """neuroCombat prints its progress to stdout; keep it at debug level in our log."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    for line in buffer.getvalue().splitlines():
        LOGGER.debug(line)
