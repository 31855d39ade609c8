"""The group QC table: each participant's QC metrics, robust z-scores, and outlier flags."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from bids_mdd.group.inputs import ParticipantFiles

#: QC metrics (from desc-qc_metrics.json) compared across participants.
QC_METRICS = ("tiv_ml", "gm_fraction", "wm_fraction", "csf_fraction", "template_ncc",
              "template_mask_dice")
#: |robust z| above this flags an outlier (Iglewicz & Hoaglin's modified z-score cut-off).
ROBUST_Z = 3.5
#: Fewer participants than this: no robust z (median and MAD mean little).
MIN_PARTICIPANTS = 5


def robust_z(values: pd.Series) -> pd.Series:
    """(x - median) / (1.4826 MAD): the modified z-score (scipy's normal-consistent MAD).

    NaN where the value is NaN or the MAD is 0.
    """
    finite = values.dropna()
    if finite.empty:
        return pd.Series(np.nan, index=values.index)
    mad = stats.median_abs_deviation(finite.to_numpy(dtype=float), scale="normal")
    if mad == 0:
        return pd.Series(np.nan, index=values.index)
    return (values - finite.median()) / mad


def qc_table(files: Sequence[ParticipantFiles]) -> pd.DataFrame:
    """One row per participant with QC metrics: the metrics, ``z_<metric>`` robust z-scores
    (with at least :data:`MIN_PARTICIPANTS` participants), and ``flags``: the participant
    level's own out-of-range flags plus each metric with |z| > :data:`ROBUST_Z`.
    ``outlier`` is True when any flag is raised."""
    rows = [{"participant": item.name,
             **{m: (item.qc or {}).get(m, np.nan) for m in QC_METRICS},
             "_flags": list((item.qc or {}).get("flags", []))}
            for item in files if item.qc is not None]
    columns = ["participant", *QC_METRICS, *(f"z_{m}" for m in QC_METRICS), "outlier", "flags"]
    if not rows:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame(rows)
    for metric in QC_METRICS:
        table[metric] = pd.to_numeric(table[metric], errors="coerce")
        z = robust_z(table[metric]) if len(table) >= MIN_PARTICIPANTS else np.nan
        table[f"z_{metric}"] = z
    flags = []
    for _, row in table.iterrows():
        found = list(row["_flags"])
        found += [f"{m} {row[m]:g} is a group outlier (robust z {row[f'z_{m}']:+.1f})"
                  for m in QC_METRICS if abs(row[f"z_{m}"]) > ROBUST_Z]
        flags.append("; ".join(found))
    table["flags"] = flags
    table["outlier"] = table["flags"] != ""
    return table.loc[:, columns]
