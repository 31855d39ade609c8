"""Group-level prediction metrics: the participants' predictions against participants.tsv.

The participant level writes one ``*_predictions.tsv`` per T1w (columns ``model``, ``target``,
``value``, ``std``, ``n_models``; target ``MDD`` is the classifier's P(MDD), any other target a
regressor's predicted score). :func:`collect_predictions` stacks them into one long table,
:func:`group_metrics` compares each model/target with its participants.tsv column
(:func:`bids_mdd.group.figures.roc_figure` draws the classifier's ROC curve).

Point estimates come from :mod:`bids_mdd.metrics` (the same definitions as in
cross-validation). Confidence intervals are 95 % percentile bootstraps over participants: each
resample draws n participants with replacement, and is held as a vector of per-participant
counts, so that every statistic of all resamples is a few array operations (the per-resample
sklearn calls would take ~10 ms each). A resample where a statistic is undefined (AUC with one
class, recall without MDD participants, r with a constant side) is skipped for that statistic;
each interval records how many resamples it used. (scipy.stats.bootstrap resamples the data
itself and needs every resample's statistic to be defined; neither suits AUC on small,
unbalanced groups, hence these few lines.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bids_mdd import metrics as cv_metrics
from bids_mdd.bids.participants import binary_labels, find_column
from bids_mdd.bids.participants import label_column as find_label_column
from bids_mdd.errors import BidsMddError, ExitCode

#: The classifier's target in predictions.tsv (the regressors' targets are score columns).
CLASSIFIER_TARGET = "MDD"
#: Columns each participant's predictions table must have.
PREDICTION_COLUMNS = ("model", "target", "value", "std", "n_models")
#: Metric rows written for the classifier and for each regressor, in this order.
CLASSIFICATION_ROWS = ("accuracy", "balanced_accuracy", "recall", "specificity", "auc")
REGRESSION_ROWS = ("pearson_r", "pearson_p", "mae")
#: Columns of :func:`group_metrics`' table, with their descriptions (for a sidecar).
METRIC_COLUMNS = {
    "model": "Name of the model bundle",
    "target": "MDD (classifier, P(MDD) against the diagnosis column) or the participants.tsv "
              "score column a regressor predicts",
    "metric": "accuracy, balanced_accuracy, recall (sensitivity, MDD positive), specificity, "
              "auc; or pearson_r, pearson_p, mae; n_out_of_distribution (participants whose "
              "input lies outside the model's training distribution, of n with a known "
              "flag); n_unharmonized (participants whose input went in without the "
              "bundle's ComBat harmonisation, their site unknown to it, of n with a known "
              "flag); n_in_training (participants the model was trained on, of n with a "
              "known flag: left out of the other metrics, whose predictions are in-sample)",
    "value": "The metric over all participants with a prediction and a label",
    "ci_low": "2.5th percentile of the metric over bootstrap resamples of participants",
    "ci_high": "97.5th percentile of the metric over bootstrap resamples of participants",
    "n": "Number of participants (with a prediction and a label) the metric is computed on",
    "n_bootstrap": "Number of bootstrap resamples the interval uses (resamples where the "
                   "metric is undefined, e.g. AUC with one class, are skipped)",
}
CI_LEVEL = 0.95


def _participant_label(value: object) -> str:
    """A participant id without its 'sub-' prefix."""
    return str(value).strip().removeprefix("sub-")


def collect_predictions(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """All participants' predictions as one long table, ``participant_id`` first.

    Parameters
    ----------
    tables : Mapping[str, pd.DataFrame]
        Participant id (with or without 'sub-') to its predictions table, as the participant
        level writes it. A participant's table may hold several sessions' rows (its extra
        columns, e.g. ``session``, are kept).

    Returns
    -------
    pd.DataFrame
        ``participant_id`` (as 'sub-<label>'), then the tables' columns, sorted by participant
        (stable within a participant): the content of ``group_predictions.tsv``.

    Raises
    ------
    BidsMddError
        NO_FILES when ``tables`` is empty, BAD_DATA when a table lacks a predictions column.
    """
    if not tables:
        raise BidsMddError("no *_predictions.tsv found: run the participant level (without "
                           "--preproc-only) first", ExitCode.NO_FILES)
    parts = []
    for participant, table in tables.items():
        missing = [c for c in PREDICTION_COLUMNS if c not in table]
        if missing:
            raise BidsMddError(f"predictions of {participant}: no column(s) "
                               f"{', '.join(missing)}; rerun its participant level",
                               ExitCode.BAD_DATA)
        part = table.drop(columns="participant_id", errors="ignore")
        part.insert(0, "participant_id", f"sub-{_participant_label(participant)}")
        parts.append(part)
    stacked = pd.concat(parts, ignore_index=True)
    return stacked.sort_values("participant_id", kind="stable").reset_index(drop=True)


# --- bootstrap ---------------------------------------------------------------------------------

def bootstrap_counts(n: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """How often each of ``n`` participants is drawn in each bootstrap resample.

    Parameters
    ----------
    n : int
        Number of participants.
    n_bootstrap : int
        Number of resamples, each of ``n`` draws with replacement.
    seed : int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    np.ndarray
        Float64 array (n_bootstrap, n) whose rows sum to ``n``. Row b is
        ``np.bincount(rng.integers(0, n, (n_bootstrap, n))[b], minlength=n)``.
    """
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_bootstrap, n)) if n else np.zeros((n_bootstrap, 0), int)
    flat = (np.arange(n_bootstrap)[:, None] * n + draws).ravel()
    return np.bincount(flat, minlength=n_bootstrap * n).reshape(n_bootstrap, n).astype(float)


def percentile_interval(samples: np.ndarray, level: float = CI_LEVEL) -> dict[str, float | int]:
    """Percentile interval of the finite ``samples`` (NaN bounds when there are none).

    Returns
    -------
    dict
        ``ci_low``, ``ci_high`` and ``n_bootstrap`` (the number of finite samples used).
    """
    samples = np.asarray(samples, float)
    samples = samples[np.isfinite(samples)]
    if not samples.size:
        return {"ci_low": np.nan, "ci_high": np.nan, "n_bootstrap": 0}
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return {"ci_low": float(low), "ci_high": float(high), "n_bootstrap": int(samples.size)}


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0."""
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def weighted_auc(y_true: np.ndarray, score: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """ROC AUC of each resample given as participant counts (ties count 1/2, as sklearn's).

    AUC = sum over score levels of positives x (negatives below + negatives tied / 2), over
    (positives x negatives); computed on the sorted scores in O(n_bootstrap x n).

    Parameters
    ----------
    y_true : np.ndarray
        0/1 labels, shape (n,).
    score : np.ndarray
        Scores, higher = more likely 1, shape (n,).
    counts : np.ndarray
        Counts per resample and participant, shape (n_bootstrap, n).

    Returns
    -------
    np.ndarray
        One AUC per resample; NaN where a resample has one class only.
    """
    y_true = np.asarray(y_true).astype(bool)
    score = np.asarray(score, float)
    counts = np.atleast_2d(counts)
    if not score.size:
        return np.full(counts.shape[0], np.nan)
    order = np.argsort(score, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(score[order]) != 0])
    sorted_counts = counts[:, order]
    positive = np.add.reduceat(sorted_counts * y_true[order], starts, axis=1)
    negative = np.add.reduceat(sorted_counts * ~y_true[order], starts, axis=1)
    below = np.cumsum(negative, axis=1) - negative
    pairs = positive.sum(axis=1) * negative.sum(axis=1)
    return _ratio((positive * (below + 0.5 * negative)).sum(axis=1), pairs)


def bootstrap_classification(y_true: np.ndarray, score: np.ndarray, counts: np.ndarray,
                             threshold: float = 0.5) -> dict[str, np.ndarray]:
    """The classification metrics of each resample (NaN where undefined).

    Same definitions as :func:`bids_mdd.metrics.classification_metrics` (predicted MDD
    when ``score > threshold``), except that recall is NaN without MDD participants and
    specificity NaN without HC participants (instead of 0).
    """
    y_true = np.asarray(y_true).astype(bool)
    predicted = np.asarray(score, float) > threshold
    counts = np.atleast_2d(counts)
    positives, negatives = counts @ y_true, counts @ ~y_true
    true_pos, true_neg = counts @ (y_true & predicted), counts @ (~y_true & ~predicted)
    recall, specificity = _ratio(true_pos, positives), _ratio(true_neg, negatives)
    return {"accuracy": _ratio(true_pos + true_neg, positives + negatives),
            "balanced_accuracy": (recall + specificity) / 2,
            "recall": recall, "specificity": specificity,
            "auc": weighted_auc(y_true, score, counts)}


def bootstrap_regression(y_true: np.ndarray, y_pred: np.ndarray,
                         counts: np.ndarray) -> dict[str, np.ndarray]:
    """Pearson r and MAE of each resample (r NaN where either side is constant)."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    x, y = y_true - y_true.mean(), y_pred - y_pred.mean()  # r is shift-invariant
    counts = np.atleast_2d(counts)
    total = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_x, mean_y = counts @ x / total, counts @ y / total
        var_x = counts @ (x * x) / total - mean_x ** 2
        var_y = counts @ (y * y) / total - mean_y ** 2
        cov = counts @ (x * y) / total - mean_x * mean_y
        # constant resample: its variance is rounding noise relative to the data's spread
        tiny_x, tiny_y = 1e-12 * max(np.mean(x * x), 1e-300), 1e-12 * max(np.mean(y * y), 1e-300)
        defined = (var_x > tiny_x) & (var_y > tiny_y)
        r = np.where(defined, cov / np.sqrt(np.where(defined, var_x * var_y, 1.0)), np.nan)
        mae = counts @ np.abs(y_true - y_pred) / total
    return {"pearson_r": np.clip(r, -1.0, 1.0), "mae": mae}


# --- metrics with intervals --------------------------------------------------------------------

def _with_interval(value: float, samples: np.ndarray | None) -> dict[str, float | int]:
    interval = (percentile_interval(samples) if samples is not None
                else {"ci_low": np.nan, "ci_high": np.nan, "n_bootstrap": 0})
    return {"value": float(value), **interval}


def _finite_pairs(a: np.ndarray, b: np.ndarray, a_name: str, b_name: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b`` as flat float arrays without the pairs holding a NaN (ValueError when
    their lengths differ)."""
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"{a.size} {a_name} but {b.size} {b_name}")
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def classification_metrics(y_true: np.ndarray, p_mdd: np.ndarray, threshold: float = 0.5,
                           n_bootstrap: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Accuracy, balanced accuracy, recall, specificity and AUC with bootstrap 95 % CIs.

    Parameters
    ----------
    y_true : np.ndarray
        1 = MDD, 0 = HC, one per participant; NaN (unlabelled) participants are left out.
    p_mdd : np.ndarray
        Predicted P(MDD) per participant; NaN predictions are left out.
    threshold : float
        Predicted MDD when ``p_mdd > threshold``.
    n_bootstrap : int
        Number of percentile-bootstrap resamples of participants (0: no intervals).
    seed : int
        Seed of the resampling.

    Returns
    -------
    dict
        ``accuracy``, ``balanced_accuracy``, ``recall`` (sensitivity, MDD positive),
        ``specificity``, ``auc``: each ``{"value", "ci_low", "ci_high", "n_bootstrap"}``
        (``n_bootstrap``: resamples where the metric was defined, e.g. with both classes for
        the AUC); ``n``, ``n_mdd``, ``n_hc``, ``threshold`` and ``notes`` (list of str, e.g. why
        a metric is NaN).

    Raises
    ------
    ValueError
        When the arrays differ in length or a label is neither 0 nor 1.
    """
    y_true, p_mdd = _finite_pairs(y_true, p_mdd, "labels", "predictions")
    if not np.isin(y_true, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 (HC) or 1 (MDD); code them with binary_labels")
    labels = y_true.astype(int)
    n_mdd, n_hc = int(labels.sum()), int((labels == 0).sum())
    notes = []
    if labels.size:
        values = cv_metrics.classification_metrics(labels, p_mdd, threshold)
    else:
        values = dict.fromkeys(cv_metrics.CLASSIFICATION_METRICS, np.nan)
        notes.append("no participant with both a label and a prediction")
    if not n_mdd:
        values["recall"] = np.nan
        notes.append("no MDD participant: recall (sensitivity) is undefined")
    if not n_hc:
        values["specificity"] = np.nan
        notes.append("no HC participant: specificity is undefined")
    if labels.size and not (n_mdd and n_hc):
        notes.append("one class only: AUC and balanced accuracy need MDD and HC participants")
    samples = (bootstrap_classification(labels, p_mdd,
                                        bootstrap_counts(labels.size, n_bootstrap, seed),
                                        threshold)
               if labels.size and n_bootstrap > 0 else {})
    result: dict[str, Any] = {name: _with_interval(values[name], samples.get(name))
                              for name in CLASSIFICATION_ROWS}
    result.update(n=int(labels.size), n_mdd=n_mdd, n_hc=n_hc, threshold=float(threshold),
                  notes=notes)
    return result


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_bootstrap: int = 2000,
                       seed: int = 0) -> dict[str, Any]:
    """Pearson r (with its p-value and bootstrap 95 % CI) and MAE of predicted scores.

    Parameters
    ----------
    y_true, y_pred : np.ndarray
        Observed and predicted scores, one per participant; pairs with a NaN are left out.
    n_bootstrap : int
        Number of percentile-bootstrap resamples of participants (0: no intervals).
    seed : int
        Seed of the resampling.

    Returns
    -------
    dict
        ``pearson_r``, ``pearson_p`` (scipy.stats.pearsonr, two-sided; no interval) and
        ``mae``: each ``{"value", "ci_low", "ci_high", "n_bootstrap"}``; ``n`` and ``notes``.
        With fewer than 3 pairs, or a constant side, r and p are NaN (and noted).
    """
    y_true, y_pred = _finite_pairs(y_true, y_pred, "observed", "predicted scores")
    n, notes = int(y_true.size), []
    if n < 3:
        notes.append(f"{n} participant(s) with an observed and a predicted score: "
                     "at least 3 are needed")
        result: dict[str, Any] = {name: _with_interval(np.nan, None) for name in REGRESSION_ROWS}
        result.update(n=n, notes=notes)
        return result
    values = cv_metrics.regression_metrics(y_true, y_pred)
    if not np.isfinite(values["pearson_r"]):
        notes.append("observed or predicted scores are constant: Pearson r is undefined")
    samples = (bootstrap_regression(y_true, y_pred, bootstrap_counts(n, n_bootstrap, seed))
               if n_bootstrap > 0 else {})
    result = {name: _with_interval(values[name], samples.get(name)) for name in REGRESSION_ROWS}
    result.update(n=n, notes=notes)
    return result


# --- the group table ---------------------------------------------------------------------------

def _indexed_participants(participants: pd.DataFrame) -> pd.DataFrame:
    """participants.tsv indexed by label without 'sub-' (from its participant_id column if it
    has one, else from its index, as :func:`bids_mdd.bids.participants.read_participants` gives)."""
    table = participants.copy()
    if "participant_id" in table:
        table.index = table.pop("participant_id")
    table.index = [_participant_label(p) for p in table.index]
    return table


def _rows(model: str, target: str, metrics: dict[str, Any],
          names: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"model": model, "target": target, "metric": name, **metrics[name],
             "n": metrics["n"]} for name in names]


#: Counts of participants flagged false (in any of their sessions) in a predictions column.
FLAG_COUNTS = {"n_out_of_distribution": "in_distribution", "n_unharmonized": "harmonized"}


def _flag_rows(model: str, target: str, group: pd.DataFrame) -> list[dict[str, Any]]:
    """:data:`FLAG_COUNTS`: e.g. ``n_out_of_distribution``, participants with an input outside
    the model's training distribution (any of their sessions), over those with a known flag;
    no row for a column without known flags."""
    rows = []
    for metric, column in FLAG_COUNTS.items():
        if column not in group:
            continue
        flags = group[column].astype(str).str.lower()  # TSV words or read as bools
        known = flags.isin(["true", "false"])
        if not known.any():
            continue
        flagged = (flags[known] == "false").groupby(group.loc[known, "label"]).any()
        rows.append({"model": model, "target": target, "metric": metric,
                     "value": float(flagged.sum()), "ci_low": np.nan, "ci_high": np.nan,
                     "n": int(len(flagged)), "n_bootstrap": 0})
    return rows


def _training_participants(group: pd.DataFrame) -> set[str]:
    """Labels of the participants a model was trained on (``in_training`` true in any of their
    sessions): their predictions are in-sample, so they would flatter every metric."""
    if "in_training" not in group:
        return set()
    flags = group["in_training"].astype(str).str.lower()
    return set(group.loc[flags == "true", "label"])


def _training_rows(model: str, target: str, group: pd.DataFrame) -> list[dict[str, Any]]:
    """``n_in_training``: participants the model was trained on, over those with a known flag;
    none without flags."""
    if "in_training" not in group:
        return []
    flags = group["in_training"].astype(str).str.lower()
    known = group.loc[flags.isin(["true", "false"]), "label"]
    if known.empty:
        return []
    return [{"model": model, "target": target, "metric": "n_in_training",
             "value": float(len(_training_participants(group))), "ci_low": np.nan,
             "ci_high": np.nan, "n": int(known.nunique()), "n_bootstrap": 0}]


@dataclass(frozen=True)
class GroupMetrics:
    """:func:`group_metrics`' result: the table as written (``group_metrics.tsv``), the notes
    for the report and sidecar, and each classifier's scores for its ROC figure."""

    table: pd.DataFrame
    notes: list[str]
    #: classifier model -> (diagnosis, P(MDD)), one entry per participant scored
    classifier_scores: dict[str, tuple[np.ndarray, np.ndarray]]


def group_metrics(predictions: pd.DataFrame, participants: pd.DataFrame,
                  label_column: str | None = None, positive: list[str] | None = None,
                  negative: list[str] | None = None, threshold: float = 0.5,
                  n_bootstrap: int = 2000, seed: int = 0,
                  source: str | Path = "participants.tsv") -> GroupMetrics:
    """Each model/target's metrics against participants.tsv, one row per metric.

    The classifier (target ``MDD``) is scored against the diagnosis column (``label_column``,
    else the first of :data:`bids_mdd.bids.participants.LABEL_COLUMNS` present, coded by
    :func:`bids_mdd.bids.participants.binary_labels`); each regressor against the participants.tsv
    column named as its target (non-numeric entries are NaN). A participant with several
    predictions for one model and target (sessions) counts once, with their mean.

    Parameters
    ----------
    predictions : pd.DataFrame
        :func:`collect_predictions`' table (``participant_id``, ``model``, ``target``,
        ``value``).
    participants : pd.DataFrame
        participants.tsv, with a ``participant_id`` column or indexed by participant label.
    label_column : str or None
        The diagnosis column; None: found automatically, and the classifier is skipped (with
        a note) when there is none.
    positive, negative : list of str or None
        Diagnosis codes of MDD and HC (default: those of ``binary_labels``).
    threshold : float
        Predicted MDD when P(MDD) > threshold.
    n_bootstrap, seed : int
        Bootstrap resamples of the intervals, and their seed (the same for every model).
    source : str or Path
        Where participants.tsv came from, for messages.

    Returns
    -------
    GroupMetrics
        ``table``: columns of :data:`METRIC_COLUMNS` (``model``, ``target``, ``metric``, ``value``,
        ``ci_low``, ``ci_high``, ``n``, ``n_bootstrap``), in the predictions' model/target order;
        with an ``in_distribution`` column, each model also has an ``n_out_of_distribution``
        row (participants outside its training distribution, of ``n`` with a known flag); with
        an ``in_training`` column, an ``n_in_training`` row: the participants it was trained
        on, which every other metric leaves out (a note says so).
        ``notes`` lists the skipped targets and undefined metrics (str each);
        ``classifier_scores`` maps each classifier model to the (diagnosis, P(MDD)) arrays it
        was scored on, one entry per participant (for
        :func:`bids_mdd.group.figures.roc_figure`).

    Raises
    ------
    BidsMddError
        USAGE when ``label_column`` is given but absent, or the diagnosis column holds no known
        code; BAD_DATA when ``predictions`` lacks a column.
    """
    missing = [c for c in ("participant_id", "model", "target", "value") if c not in predictions]
    if missing:
        raise BidsMddError(f"group predictions: no column(s) {', '.join(missing)}",
                           ExitCode.BAD_DATA)
    table = _indexed_participants(participants)
    frame = predictions.assign(label=predictions["participant_id"].map(_participant_label),
                               value=pd.to_numeric(predictions["value"], errors="coerce"))
    notes: list[str] = []
    unknown = sorted(set(frame["label"]) - set(table.index))
    if unknown:
        notes.append(f"{len(unknown)} participant(s) with predictions are not in {source} "
                     f"and are left out: {', '.join('sub-' + u for u in unknown[:10])}")
    diagnosis = None
    if (frame["target"] == CLASSIFIER_TARGET).any():
        try:
            column = find_label_column(table, label_column, source)
        except BidsMddError:
            if label_column is not None:
                raise
            notes.append(f"{CLASSIFIER_TARGET}: {source} has no diagnosis column; "
                         "classification metrics skipped")
        else:
            diagnosis = binary_labels(table[column], positive, negative, source)
    rows: list[dict[str, Any]] = []
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for (model, target), group in frame.groupby(["model", "target"], sort=False):
        rows.extend(_flag_rows(str(model), str(target), group))
        rows.extend(_training_rows(str(model), str(target), group))
        seen = _training_participants(group)
        if seen:
            notes.append(f"{target} ({model}): {len(seen)} participant(s) were in the model's "
                         "training data and are left out of its metrics (in-sample "
                         "predictions)")
            group = group[~group["label"].isin(seen)]
            if group.empty:
                continue
        predicted = group.groupby("label", sort=True)["value"].mean()
        if target == CLASSIFIER_TARGET:
            if diagnosis is None:
                continue
            observed = diagnosis.reindex(predicted.index)
            scores[str(model)] = (observed.to_numpy(), predicted.to_numpy())
            metrics = classification_metrics(observed.to_numpy(), predicted.to_numpy(),
                                             threshold, n_bootstrap, seed)
            names = CLASSIFICATION_ROWS
        else:
            column = find_column(table, str(target))
            if column is None:
                notes.append(f"{target} ({model}): no {target} column in {source}; skipped")
                continue
            observed = pd.to_numeric(table[column], errors="coerce").reindex(predicted.index)
            metrics = regression_metrics(observed.to_numpy(), predicted.to_numpy(),
                                         n_bootstrap, seed)
            names = REGRESSION_ROWS
        notes.extend(f"{target} ({model}): {note}" for note in metrics["notes"])
        rows.extend(_rows(str(model), str(target), metrics, names))
    result = pd.DataFrame(rows, columns=list(METRIC_COLUMNS))
    return GroupMetrics(result.astype({"n": int, "n_bootstrap": int}), notes, scores)
