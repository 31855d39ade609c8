"""Group-level prediction metrics: exact values on a hand-made cohort, the vectorised bootstrap
against the cross-validation metrics on the same resamples, interval behaviour (contains the
estimate, reproducible, narrows with n, [1, 1] for a perfect separator, NaN for one class),
Pearson r against scipy, the group table's rows and the ROC figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from bids_mdd import metrics as cv_metrics
from bids_mdd.bids.participants import read_participants
from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.group.figures import roc_figure
from bids_mdd.group.metrics import (
    CLASSIFICATION_ROWS,
    METRIC_COLUMNS,
    REGRESSION_ROWS,
    bootstrap_classification,
    bootstrap_counts,
    bootstrap_regression,
    classification_metrics,
    collect_predictions,
    group_metrics,
    regression_metrics,
)

pytestmark = pytest.mark.unit  # make test-fast

#: 4 MDD then 4 HC. Threshold 0.5: MDD 3 of 4 above (recall 0.75), HC 2 of 4 below
#: (specificity 0.5), accuracy 5/8. AUC: 0.9 and 0.8 beat all 4 HC, 0.6 beats 0.2 and 0.1 and
#: ties 0.6 (1/2), 0.4 beats 0.2 and 0.1: (4 + 4 + 2.5 + 2) / 16 = 0.78125.
Y_HAND = np.array([1, 1, 1, 1, 0, 0, 0, 0])
P_HAND = np.array([0.9, 0.8, 0.6, 0.4, 0.7, 0.6, 0.2, 0.1])


def simulated(n: int, seed: int, shift: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Balanced labels and P(MDD) from logistic scores shifted by ``shift`` for MDD."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    return y, 1 / (1 + np.exp(-(rng.normal(size=n) + shift * (y - 0.5))))


def resample(counts_row: np.ndarray) -> np.ndarray:
    """Participant indices of one resample given as counts."""
    return np.repeat(np.arange(counts_row.size), counts_row.astype(int))


# --- classification ----------------------------------------------------------------------------

def test_hand_made_cohort_exact_values():
    result = classification_metrics(Y_HAND, P_HAND, n_bootstrap=500, seed=1)
    assert result["accuracy"]["value"] == 0.625
    assert result["balanced_accuracy"]["value"] == 0.625
    assert result["recall"]["value"] == 0.75
    assert result["specificity"]["value"] == 0.5
    assert result["auc"]["value"] == 0.78125 == roc_auc_score(Y_HAND, P_HAND)
    assert (result["n"], result["n_mdd"], result["n_hc"]) == (8, 4, 4)
    assert result["notes"] == []
    # a higher threshold: MDD 0.9, 0.8 and HC 0.7 above 0.65
    strict = classification_metrics(Y_HAND, P_HAND, threshold=0.65, n_bootstrap=0)
    assert strict["recall"]["value"] == 0.5 and strict["specificity"]["value"] == 0.75
    assert strict["auc"]["value"] == 0.78125  # threshold-free
    assert np.isnan(strict["auc"]["ci_low"]) and strict["auc"]["n_bootstrap"] == 0


def test_bootstrap_counts_are_the_documented_draws():
    counts = bootstrap_counts(7, 5, seed=3)
    draws = np.random.default_rng(3).integers(0, 7, size=(5, 7))
    assert counts.shape == (5, 7) and (counts.sum(axis=1) == 7).all()
    for row, drawn in zip(counts, draws):
        np.testing.assert_array_equal(row, np.bincount(drawn, minlength=7))


def test_vectorised_bootstrap_matches_cv_metrics_on_each_resample():
    y, p = simulated(30, seed=2)
    p[:6] = np.round(p[:6], 1)  # some ties
    p[6] = p[7]
    counts = bootstrap_counts(y.size, 60, seed=5)
    samples = bootstrap_classification(y, p, counts)
    for b in range(counts.shape[0]):
        index = resample(counts[b])
        expected = cv_metrics.classification_metrics(y[index], p[index])
        for name in CLASSIFICATION_ROWS:
            assert samples[name][b] == pytest.approx(expected[name], abs=1e-12, nan_ok=True)


def test_intervals_contain_estimate_reproducible_and_narrow_with_n():
    y, p = simulated(40, seed=0)
    first = classification_metrics(y, p, seed=11)
    assert first == classification_metrics(y, p, seed=11)
    assert first["auc"] != classification_metrics(y, p, seed=12)["auc"]
    for name in CLASSIFICATION_ROWS:
        entry = first[name]
        assert entry["ci_low"] <= entry["value"] <= entry["ci_high"], name
        assert entry["n_bootstrap"] == 2000  # 20 + 20: a one-class resample is ~1e-12 likely
    widths = {}
    for n in (40, 160, 640):
        y, p = simulated(n, seed=n)
        auc = classification_metrics(y, p, seed=0)["auc"]
        widths[n] = auc["ci_high"] - auc["ci_low"]
    # the width shrinks as 1 / sqrt(n), halving per 4 x participants (0.249, 0.143, 0.071)
    assert widths[160] < 0.7 * widths[40] and widths[640] < 0.7 * widths[160]


def test_perfect_separator_auc_one_with_ci_one():
    y = np.array([0] * 10 + [1] * 10)
    p = np.linspace(0.05, 0.95, 20)
    result = classification_metrics(y, p)
    assert result["auc"] == {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n_bootstrap": 2000}
    assert result["accuracy"]["value"] == 1.0 and result["accuracy"]["ci_low"] == 1.0


def test_single_class_cohort_gives_nan_auc_and_a_note():
    result = classification_metrics(np.zeros(6), [0.1, 0.2, 0.7, 0.3, 0.4, 0.2])
    assert np.isnan(result["auc"]["value"]) and np.isnan(result["auc"]["ci_low"])
    assert result["auc"]["n_bootstrap"] == 0
    assert np.isnan(result["recall"]["value"]) and np.isnan(result["balanced_accuracy"]["value"])
    assert result["specificity"]["value"] == pytest.approx(5 / 6)
    assert result["accuracy"]["value"] == pytest.approx(5 / 6)
    assert (result["n_mdd"], result["n_hc"]) == (0, 6)
    assert any("AUC" in note for note in result["notes"])


def test_auc_skips_one_class_resamples_and_counts_the_rest():
    y, p = np.array([0, 1, 0]), np.array([0.2, 0.8, 0.4])
    result = classification_metrics(y, p, n_bootstrap=1000, seed=4)
    counts = bootstrap_counts(3, 1000, seed=4)
    both = int(((counts[:, 1] > 0) & (counts[:, [0, 2]].sum(axis=1) > 0)).sum())
    assert 500 < both < 1000  # P(both classes) = 1 - (1/3)^3 - (2/3)^3 = 2/3
    assert result["auc"]["n_bootstrap"] == both
    assert result["recall"]["n_bootstrap"] == int((counts[:, 1] > 0).sum())
    assert result["accuracy"]["n_bootstrap"] == 1000
    assert result["auc"]["value"] == 1.0


def test_nan_labels_are_left_out_and_bad_labels_rejected():
    result = classification_metrics([1, 0, np.nan, 1], [0.9, 0.1, 0.5, np.nan], n_bootstrap=0)
    assert result["n"] == 2 and result["accuracy"]["value"] == 1.0
    with pytest.raises(ValueError, match="0 \\(HC\\) or 1"):
        classification_metrics([2, 0], [0.5, 0.5])


# --- regression --------------------------------------------------------------------------------

def test_identity_gives_r_one():
    x = np.arange(10, dtype=float)
    result = regression_metrics(x, x.copy(), n_bootstrap=500)
    assert result["pearson_r"]["value"] == pytest.approx(1.0)
    assert result["pearson_r"]["ci_low"] == pytest.approx(1.0)
    assert result["pearson_r"]["ci_high"] == pytest.approx(1.0)
    assert result["pearson_p"]["value"] < 1e-10 and result["mae"]["value"] == 0.0
    assert result["n"] == 10


def test_noisy_regression_matches_scipy_and_bootstrap_matches_pearsonr():
    rng = np.random.default_rng(7)
    x = rng.normal(size=50)
    y = 0.6 * x + rng.normal(scale=0.8, size=50)
    reference = stats.pearsonr(x, y)
    result = regression_metrics(x, y, seed=3)
    assert result["pearson_r"]["value"] == pytest.approx(reference.statistic, abs=1e-12)
    assert result["pearson_p"]["value"] == pytest.approx(reference.pvalue, rel=1e-9)
    assert result["mae"]["value"] == pytest.approx(np.mean(np.abs(x - y)))
    r = result["pearson_r"]
    assert r["ci_low"] < r["value"] < r["ci_high"] and r["n_bootstrap"] == 2000
    counts = bootstrap_counts(50, 20, seed=9)
    samples = bootstrap_regression(x, y, counts)
    for b in range(20):
        index = resample(counts[b])
        assert samples["pearson_r"][b] == pytest.approx(stats.pearsonr(x[index], y[index])[0],
                                                        abs=1e-10)
        assert samples["mae"][b] == pytest.approx(np.mean(np.abs(x[index] - y[index])))


def test_regression_drops_nan_pairs_and_needs_three():
    result = regression_metrics([1.0, 2.0, np.nan, 4.0], [1.5, np.nan, 3.0, 4.5], n_bootstrap=10)
    assert result["n"] == 2
    assert all(np.isnan(result[name]["value"]) for name in REGRESSION_ROWS)
    assert "at least 3" in result["notes"][0]
    constant = regression_metrics([1.0, 2.0, 3.0, 4.0], [2.0] * 4, n_bootstrap=10)
    assert np.isnan(constant["pearson_r"]["value"]) and constant["mae"]["value"] == 1.0
    assert constant["pearson_r"]["n_bootstrap"] == 0


# --- collecting and the group table ------------------------------------------------------------

def predictions_table(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"model": m, "target": t, "value": v, "std": 0.01, "n_models": 5}
                         for m, t, v in rows])


def cohort_predictions() -> pd.DataFrame:
    """8 participants (sub-01..08): the hand-made P(MDD), an Anhedonia score and a Sleep score
    (the last has no participants.tsv column); sub-09 is not in participants.tsv."""
    tables = {}
    for i, p in enumerate([*P_HAND, 0.5]):
        tables[f"sub-{i + 1:02d}"] = predictions_table(
            [("clf", "MDD", p), ("reg", "Anhedonia", 2.0 * i + 1.0), ("sleep", "Sleep", 3.0)])
    return collect_predictions(tables)


def write_participants(path) -> None:
    rows = [f"sub-{i + 1:02d}\t{'MDD' if y else 'HC'}\t{anhedonia}\t{30 + i}"
            for i, (y, anhedonia) in enumerate(zip(Y_HAND, [1, 4, 5, 6, 9, 12, "n/a", 15]))]
    path.write_text("participant_id\tgroup\tAnhedonia\tage\n" + "\n".join(rows) + "\n")


def test_collect_predictions_long_table():
    tables = {"02": predictions_table([("clf", "MDD", 0.3)]),
              "sub-01": predictions_table([("clf", "MDD", 0.8), ("reg", "Sleep", 4.0)])}
    table = collect_predictions(tables)
    assert list(table.columns) == ["participant_id", "model", "target", "value", "std",
                                   "n_models"]
    assert table["participant_id"].tolist() == ["sub-01", "sub-01", "sub-02"]
    assert table["value"].tolist() == [0.8, 4.0, 0.3]
    with pytest.raises(BidsMddError) as error:
        collect_predictions({})
    assert error.value.exit_code == ExitCode.NO_FILES
    with pytest.raises(BidsMddError) as error:
        collect_predictions({"01": pd.DataFrame({"model": ["clf"], "value": [0.2]})})
    assert error.value.exit_code == ExitCode.BAD_DATA


def test_group_metrics_rows(tmp_path):
    tsv = tmp_path / "participants.tsv"
    write_participants(tsv)
    participants = read_participants(tsv)
    result = group_metrics(cohort_predictions(), participants, None, n_bootstrap=300, seed=2,
                           source=tsv)
    table = result.table
    assert list(table.columns) == list(METRIC_COLUMNS)
    assert list(zip(table["model"], table["target"], table["metric"])) == (
        [("clf", "MDD", m) for m in CLASSIFICATION_ROWS]
        + [("reg", "Anhedonia", m) for m in REGRESSION_ROWS])
    clf = table[table["model"] == "clf"].set_index("metric")
    assert clf.loc["auc", "value"] == 0.78125 and clf.loc["recall", "value"] == 0.75
    assert clf.loc["specificity", "value"] == 0.5 and clf.loc["accuracy", "value"] == 0.625
    assert (clf["n"] == 8).all()
    direct = classification_metrics(Y_HAND, P_HAND, n_bootstrap=300, seed=2)
    assert clf.loc["auc", "ci_low"] == direct["auc"]["ci_low"]
    reg = table[table["model"] == "reg"].set_index("metric")
    observed = np.array([1, 4, 5, 6, 9, 12, 15.0])  # sub-07's n/a left out
    predicted = np.array([1, 3, 5, 7, 9, 11, 15.0])
    assert (reg["n"] == 7).all()
    assert reg.loc["pearson_r", "value"] == pytest.approx(stats.pearsonr(observed, predicted)[0])
    assert reg.loc["mae", "value"] == pytest.approx(np.mean(np.abs(observed - predicted)))
    notes = " | ".join(result.notes)
    assert "Sleep" in notes and "no Sleep column" in notes
    assert "sub-09" in notes  # predictions without a participants.tsv row


def test_group_metrics_codings_and_missing_diagnosis():
    predictions = cohort_predictions()
    participants = pd.DataFrame({"participant_id": [f"sub-{i:02d}" for i in range(1, 9)],
                                 "diagnosis": ["depr"] * 4 + ["control"] * 4})
    table = group_metrics(predictions, participants, "diagnosis", n_bootstrap=50).table
    assert table.set_index("metric").loc["auc", "value"] == 0.78125
    assert set(table["target"]) == {"MDD"}  # no Anhedonia or Sleep column
    unlabelled = group_metrics(predictions, participants.rename(columns={"diagnosis": "x"}),
                               None, n_bootstrap=50)
    assert unlabelled.table.empty and list(unlabelled.table.columns) == list(METRIC_COLUMNS)
    assert any("no diagnosis column" in note for note in unlabelled.notes)
    with pytest.raises(BidsMddError) as error:
        group_metrics(predictions, participants, "dx", n_bootstrap=50)
    assert error.value.exit_code == ExitCode.USAGE


def test_sessions_count_once_with_their_mean():
    two_sessions = predictions_table([("clf", "MDD", 0.2), ("clf", "MDD", 1.0)])
    tables = {"01": two_sessions, "02": predictions_table([("clf", "MDD", 0.55)]),
              "03": predictions_table([("clf", "MDD", 0.3)])}
    participants = pd.DataFrame({"group": ["MDD", "HC", "HC"]}, index=["01", "02", "03"])
    table = group_metrics(collect_predictions(tables), participants, None, n_bootstrap=0).table
    metrics = table.set_index("metric")
    assert (metrics["n"] == 3).all()
    # sub-01's mean 0.6 > 0.55 > 0.3: AUC 1; predicted MDD: sub-01 and sub-02
    assert metrics.loc["auc", "value"] == 1.0 and metrics.loc["specificity", "value"] == 0.5


def test_participants_outside_a_models_training_distribution_are_counted():
    """One row per model and flag: participants with any session flagged, of those with a
    flag (outside the training distribution; not harmonised)."""
    tables = {"01": predictions_table([("clf", "MDD", 0.9), ("clf", "MDD", 0.8)]),
              "02": predictions_table([("clf", "MDD", 0.2)]),
              "03": predictions_table([("clf", "MDD", 0.7)]),
              "04": predictions_table([("clf", "MDD", 0.4)])}
    flags = {"01": ["true", "false"], "02": ["true"], "03": ["n/a"], "04": ["false"]}
    harmonized = {"01": ["true", "true"], "02": ["false"], "03": ["true"], "04": ["n/a"]}
    for label, table in tables.items():
        table["in_distribution"] = flags[label]
        table["harmonized"] = harmonized[label]
    participants = pd.DataFrame({"group": ["MDD", "HC", "MDD", "HC"]},
                                index=["01", "02", "03", "04"])
    table = group_metrics(collect_predictions(tables), participants, None, n_bootstrap=0).table
    row = table.set_index("metric").loc["n_out_of_distribution"]
    assert (row["value"], row["n"]) == (2.0, 3)  # sub-01 and sub-04 of 01, 02, 04
    row = table.set_index("metric").loc["n_unharmonized"]
    assert (row["value"], row["n"]) == (1.0, 3)  # sub-02 of 01, 02, 03
    assert not {"n_out_of_distribution", "n_unharmonized"} & set(
        group_metrics(cohort_predictions(), participants, None, n_bootstrap=0).table["metric"])


# --- figure ------------------------------------------------------------------------------------

def test_roc_figure_written_and_closed(tmp_path):
    before = plt.get_fignums()
    out = roc_figure(Y_HAND, P_HAND, str(tmp_path / "roc.svg"), "clf", n_bootstrap=200)
    text = (tmp_path / "roc.svg").read_text()
    assert out == str(tmp_path / "roc.svg") and "<svg" in text
    assert plt.get_fignums() == before
    one_class = roc_figure(np.ones(4), [0.2, 0.4, 0.6, 0.8], str(tmp_path / "one.svg"), "x")
    assert "<svg" in (tmp_path / "one.svg").read_text() and one_class.endswith("one.svg")
    assert plt.get_fignums() == before


def test_participants_a_model_was_trained_on_are_left_out_of_its_metrics():
    """In-sample predictions would flatter the metrics: they are counted, noted and left out."""
    values = {"01": 0.9, "02": 0.1, "03": 0.8, "04": 0.3, "05": 0.2}  # 01, 02 perfectly called
    seen = {"01": "true", "02": "true", "03": "false", "04": "false", "05": "false"}
    tables = {}
    for label, value in values.items():
        tables[label] = predictions_table([("clf", "MDD", value)])
        tables[label]["in_training"] = seen[label]
    participants = pd.DataFrame({"group": ["MDD", "HC", "HC", "MDD", "HC"]},
                                index=list(values))
    result = group_metrics(collect_predictions(tables), participants, None, n_bootstrap=0)
    metrics = result.table.set_index("metric")
    assert (metrics.loc["n_in_training", "value"], metrics.loc["n_in_training", "n"]) == (2.0, 5)
    # on 03 (HC, 0.8), 04 (MDD, 0.3), 05 (HC, 0.2) only: AUC 1/2, accuracy 1/3
    assert metrics.loc["auc", "value"] == 0.5 and metrics.loc["auc", "n"] == 3
    assert metrics.loc["accuracy", "value"] == pytest.approx(1 / 3)
    assert any("2 participant(s) were in the model's training data" in note
               for note in result.notes)
    for table_of in tables.values():
        table_of["in_training"] = "true"
    all_seen = group_metrics(collect_predictions(tables), participants, None, n_bootstrap=0)
    assert list(all_seen.table["metric"]) == ["n_in_training"]
    assert "n_in_training" not in set(
        group_metrics(cohort_predictions(), participants, None, n_bootstrap=0).table["metric"])
